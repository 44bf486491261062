"""YouTube-VIS evaluation: official-semantics video mAP, a Detectron2 evaluator, and a CLI
(``python -m iai_d2.evaluation --gt GT.json --results results.json|submission.zip``)."""
from .evaluator import YTVISEvaluator, write_submission
from .ytvis_eval import (
    METRIC_NAMES,
    GroundTruth,
    Track,
    YTVISMetrics,
    evaluate,
    evaluate_ytvis,
    load_ground_truth,
    load_results,
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
    "validate_results",
    "video_iou",
    "write_submission",
]
