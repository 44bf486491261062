"""YouTube-VIS evaluation: official-semantics video mAP, a Detectron2 evaluator, and a CLI
(``python -m iai_d2.evaluation --gt GT.json --results results.json|submission.zip``).

Only ``YTVISEvaluator`` and ``write_submission`` need Detectron2; they are imported on first use,
so the metric and the CLI load with NumPy and pycocotools alone.
"""
from .ytvis_eval import (
    METRIC_NAMES,
    GroundTruth,
    Track,
    YTVISMetrics,
    evaluate,
    evaluate_ytvis,
    load_ground_truth,
    load_results,
    per_video_ap,
    validate_results,
    video_iou,
)

__all__ = [
    "METRIC_NAMES",
    "GroundTruth",
    "Track",
    "YTVISEvaluator",
    "YTVISMetrics",
    "evaluate",
    "evaluate_ytvis",
    "load_ground_truth",
    "load_results",
    "per_video_ap",
    "validate_results",
    "video_iou",
    "write_submission",
]


def __getattr__(name):
    if name in ("YTVISEvaluator", "write_submission"):
        from . import evaluator

        return getattr(evaluator, name)
    raise AttributeError(f"module 'iai_d2.evaluation' has no attribute {name!r}")
