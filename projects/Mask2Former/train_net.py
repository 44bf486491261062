#!/usr/bin/env python
"""
Train or evaluate Mask2Former with iai_d2's trainer (AdamW with a backbone multiplier, atomic
checkpoints, a loss plot):

- ``Mask2Former`` (image model) on image datasets (the ``*_frames`` of a video split, or COCO):
  Detectron2's image loaders, COCOEvaluator (bbox from the masks + segm);
- ``QueryMatchMask2Former`` (the query-matching video baseline): trains on image datasets as
  Mask2Former; evaluates on video splits (YouTube-VIS format: synthetic_vis_*, ytvis_*, ovis_*)
  with the per-video online inference and the YTVIS evaluator (AP when the split is annotated,
  ``inference/results.json`` and ``inference/submission.zip`` always), or on image datasets.

    # from the repository root (datasets/ and output/ are relative to it)
    python projects/Mask2Former/train_net.py --config-file projects/Mask2Former/configs/mask2former_tiny_frames.yaml
    python projects/Mask2Former/train_net.py --config-file projects/Mask2Former/configs/query_matching_tiny.yaml \
        --eval-only MODEL.WEIGHTS output/mask2former/tiny_frames/model_final.pth
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the mask2former package

from iai_d2.utils import filter_library_warnings  # noqa: E402

filter_library_warnings()

from iai_d2.engine import (  # noqa: E402
    IAITrainer,
    is_video_split,
    launch_or_exit,
    parse_launch_args,
    setup_cfg,
    train_or_evaluate,
)
from mask2former import add_mask2former_config  # noqa: E402


class Mask2FormerTrainer(IAITrainer):
    """IAITrainer for models trained on images: both train on image datasets; only the
    query-matching model runs on videos."""

    @classmethod
    def build_train_loader(cls, cfg):
        if is_video_split(cfg.DATASETS.TRAIN):
            raise ValueError(
                f"{cfg.MODEL.META_ARCHITECTURE} trains on image datasets (e.g. 'synthetic_vis_train_frames'), "
                f"got {cfg.DATASETS.TRAIN}"
            )
        return super().build_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        if is_video_split(dataset_name) and cfg.MODEL.META_ARCHITECTURE != "QueryMatchMask2Former":
            raise ValueError(
                f"{cfg.MODEL.META_ARCHITECTURE} evaluates on image datasets (e.g. '<split>_frames'); "
                f"for the video split {dataset_name} use MODEL.META_ARCHITECTURE QueryMatchMask2Former"
            )
        return super().build_test_loader(cfg, dataset_name)


def main(args):
    return train_or_evaluate(setup_cfg(args, add_mask2former_config), args, Mask2FormerTrainer)


if __name__ == "__main__":
    launch_or_exit(main, parse_launch_args())
