#!/usr/bin/env python
"""
Tracking diagnosis: run a video model once over an annotated split and score the same detections
with the model's own IDs, greedy mask-IoU linking, and oracle (GT) identities: video AP, HOTA /
DetA / AssA / IDF1 (TrackEval), identity statistics, and the re-identification accounting (which
id a GT track gets back after a gap of k frames, with or without a same-class look-alike in view).

    python tools/analyze_tracking.py --config-file configs/synthetic/iai_tiny.yaml \
        MODEL.WEIGHTS output/demo/model_final.pth
    python tools/analyze_tracking.py --config-file ... --dataset synthetic_vis_val --output DIR
    python tools/analyze_tracking.py --config-file projects/CondInst/configs/iai_condinst_tiny.yaml \
        MODEL.WEIGHTS output/condinst/iai_tiny/model_final.pth   # IAICondInst
    python tools/analyze_tracking.py --config-file projects/TrackBaseline/configs/synthetic_tiny.yaml \
        MODEL.WEIGHTS ...   # the tracking-by-detection baselines (TrackRCNN, TrackCondInst)
    python tools/analyze_tracking.py --config-file projects/Mask2Former/configs/query_matching_tiny.yaml \
        MODEL.WEIGHTS output/mask2former/tiny_frames/model_final.pth   # query matching (MinVIS)

Prints the table and writes DIR/diagnosis.{json,md}, DIR/report.html (a self-contained page: per
video, filmstrips coloured by GT / model / IoU-linked identity with the ID switches marked, the videos
that lose most AP to identity first) and DIR/<labelling>/{results.json,submission.zip}
(default DIR: OUTPUT_DIR/tracking_diagnosis).
"""
import argparse
import importlib
import os
import sys

from iai_d2.utils import check_weights, filter_library_warnings

filter_library_warnings()  # before Detectron2 is imported

from detectron2.config import get_cfg  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

from iai_d2 import add_iai_config  # noqa: E402
from iai_d2.config import merge_overrides  # noqa: E402
from iai_d2.engine import AtomicCheckpointer, IAITrainer  # noqa: E402
from iai_d2.evaluation.association import SCORE_THRESH  # noqa: E402
from iai_d2.evaluation.diagnosis import diagnose, diagnosis_table  # noqa: E402
from iai_d2.inference.relabel import GT_IOU_THRESH, LINK_IOU_THRESH  # noqa: E402

PROJECTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "projects")


def add_config(cfg, config_file: str) -> None:
    """The config keys (and registered models) a config file needs: projects/CondInst configs
    (IAICondInst) add CondInst's keys, projects/TrackBaseline configs (TrackRCNN, TrackCondInst)
    the tracking baseline's, projects/Mask2Former configs (QueryMatchMask2Former) Mask2Former's,
    others iai_d2's; each project's package registers its models."""
    path = os.path.realpath(config_file)
    for project, package, add_name in (("CondInst", "condinst", "add_condinst_config"),
                                       ("TrackBaseline", "track_baseline", "add_trackbaseline_config"),
                                       ("Mask2Former", "mask2former", "add_mask2former_config")):
        project_dir = os.path.realpath(os.path.join(PROJECTS_DIR, project))
        if path.startswith(project_dir + os.sep):
            sys.path.insert(0, project_dir)
            getattr(importlib.import_module(package), add_name)(cfg)
            return
    add_iai_config(cfg)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--dataset", help="annotated split to run on (default: DATASETS.TEST[0])")
    parser.add_argument("--output", help="output directory (default: OUTPUT_DIR/tracking_diagnosis)")
    parser.add_argument("--link-iou", type=float, default=LINK_IOU_THRESH,
                        help="IoU linking: link a pair when its mask IoU is above this")
    parser.add_argument("--gt-iou", type=float, default=GT_IOU_THRESH,
                        help="a detection matches a GT track at mask IoU >= this (oracle, statistics)")
    parser.add_argument("--score-thresh", type=float, default=SCORE_THRESH,
                        help="HOTA / DetA / AssA / IDF1 score the detections with class probability >= this")
    parser.add_argument("--report-videos", type=int, default=20,
                        help="report.html shows this many videos, most AP lost to identity first (0: no report)")
    parser.add_argument("--report-frames", type=int, default=40,
                        help="report.html shows at most this many frames per video (all ID switches first)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE pairs")
    args = parser.parse_args(argv)
    if not 0.0 <= args.score_thresh <= 1.0:
        parser.error(f"--score-thresh must be in [0, 1], got {args.score_thresh}")
    return args


def main(args):
    cfg = get_cfg()
    add_config(cfg, args.config_file)
    cfg.merge_from_file(args.config_file)
    merge_overrides(cfg, args.opts)
    cfg.freeze()
    setup_logger(name="detectron2")
    setup_logger(name="iai_d2")
    check_weights(cfg.MODEL.WEIGHTS)
    model = IAITrainer.build_model(cfg)
    AtomicCheckpointer(model).load(cfg.MODEL.WEIGHTS)  # bad files: ValueError naming them
    output_dir = args.output or os.path.join(cfg.OUTPUT_DIR, "tracking_diagnosis")
    result = diagnose(cfg, model, args.dataset, output_dir, args.link_iou, args.gt_iou, args.score_thresh,
                      args.report_videos, args.report_frames)
    print(diagnosis_table(result))
    print(f"Wrote {os.path.join(output_dir, 'diagnosis.md')}, diagnosis.json"
          + (" and report.html (filmstrips of the videos that lose most AP to identity)" if args.report_videos else ""))


if __name__ == "__main__":
    try:
        main(parse_args())
    except (FileNotFoundError, ValueError) as e:
        # Bad data, config or weights: the message names the file / video / key; no traceback.
        sys.exit(f"error: {e}")
