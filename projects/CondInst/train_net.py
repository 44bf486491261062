#!/usr/bin/env python
"""
Train or evaluate CondInst with iai_d2's trainer (AdamW/SGD with a backbone multiplier, atomic
checkpoints, a loss plot):

- ``CondInst`` (image model) on image datasets (e.g. the ``*_frames`` of a video split, or COCO):
  Detectron2's image loaders, COCOEvaluator (bbox + segm);
- ``IAICondInst`` (IAI video model) on video splits (YouTube-VIS format: synthetic_vis_*,
  ytvis_*, ovis_*): clip train loader, per-video online inference, YTVIS evaluator
  (AP when the split is annotated, ``inference/submission.zip`` always), as tools/train_net.py.

    # from the repository root (datasets/ and output/ are relative to it)
    python projects/CondInst/train_net.py --config-file projects/CondInst/configs/condinst_tiny_frames.yaml
    python projects/CondInst/train_net.py --config-file projects/CondInst/configs/iai_condinst_tiny.yaml
    python projects/CondInst/train_net.py --config-file ... --eval-only MODEL.WEIGHTS .../model_final.pth
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the condinst package

from iai_d2.utils import filter_library_warnings  # noqa: E402

filter_library_warnings()

from condinst import add_condinst_config  # noqa: E402
from iai_d2.engine import (  # noqa: E402
    IAITrainer,
    is_video_split,
    launch_or_exit,
    parse_launch_args,
    setup_cfg,
    train_or_evaluate,
)


def is_video_model(cfg) -> bool:
    """IAICondInst (clips in, tracks out) rather than the image model CondInst."""
    return cfg.MODEL.META_ARCHITECTURE == "IAICondInst"


def _check_split(cfg, names, what: str) -> None:
    """CondInst takes image datasets, IAICondInst video splits."""
    video = is_video_split(names)
    if is_video_model(cfg) and not video:
        raise ValueError(f"IAICondInst {what} on video splits (e.g. 'synthetic_vis_train'), got {names}")
    if not is_video_model(cfg) and video:
        raise ValueError(f"CondInst {what} on image datasets (e.g. '<split>_frames'), got {names}")


class CondInstTrainer(IAITrainer):
    """IAITrainer with each model on its kind of data: CondInst on images, IAICondInst on videos."""

    @classmethod
    def build_train_loader(cls, cfg):
        _check_split(cfg, cfg.DATASETS.TRAIN, "trains")
        return super().build_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        _check_split(cfg, dataset_name, "evaluates")
        return super().build_test_loader(cfg, dataset_name)


def main(args):
    return train_or_evaluate(setup_cfg(args, add_condinst_config), args, CondInstTrainer)


if __name__ == "__main__":
    launch_or_exit(main, parse_launch_args())
