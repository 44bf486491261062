#!/usr/bin/env python
"""
Train or evaluate the tracking-by-detection baseline (TrackRCNN) with iai_d2's trainer: the same
clip loader, YTVIS evaluator (results.json, submission.zip, mAP table), optimizer and checkpoints.

    # from the repository root (datasets/ and output/ are relative to it)
    python projects/TrackBaseline/train_net.py \
        --config-file projects/TrackBaseline/configs/synthetic_tiny.yaml
    python projects/TrackBaseline/train_net.py --config-file ... --eval-only MODEL.WEIGHTS .../model_final.pth
"""

from iai_d2.utils import filter_library_warnings

filter_library_warnings()  # before Detectron2 is imported (also runs in spawned DDP workers)

from iai_d2.engine import launch_or_exit, parse_launch_args, setup_cfg, train_or_evaluate  # noqa: E402
from track_baseline import add_trackbaseline_config  # noqa: E402


def main(args):
    return train_or_evaluate(setup_cfg(args, add_trackbaseline_config), args)


if __name__ == "__main__":
    launch_or_exit(main, parse_launch_args())
