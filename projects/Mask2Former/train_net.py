#!/usr/bin/env python
"""
Train or evaluate Mask2Former with iai_d2's trainer (AdamW with a backbone multiplier, atomic
checkpoints, a loss plot):

- ``Mask2Former`` (image model) on image datasets (the ``*_frames`` of a video split, or COCO):
  Detectron2's image loaders, COCOEvaluator (bbox from the masks + segm);
- ``QueryMatchMask2Former`` (the query-matching video baseline): trains on image datasets as
  Mask2Former; evaluates on video splits (YouTube-VIS format: synthetic_vis_*, ytvis_*, ovis_*)
  with the per-video online inference and the YTVIS evaluator (AP when the split is annotated,
  ``inference/results.json`` and ``inference/submission.zip`` always), or on image datasets;
- ``IAIMask2Former`` (IAI + Mask2Former): trains on video splits (clip train loader, from the
  image model's weights) and evaluates on them as the query-matching model.

    # from the repository root (datasets/ and output/ are relative to it)
    python projects/Mask2Former/train_net.py --config-file projects/Mask2Former/configs/mask2former_tiny_frames.yaml
    python projects/Mask2Former/train_net.py --config-file projects/Mask2Former/configs/query_matching_tiny.yaml \
        --eval-only MODEL.WEIGHTS output/mask2former/tiny_frames/model_final.pth
    python projects/Mask2Former/train_net.py --config-file projects/Mask2Former/configs/iai_mask2former_tiny.yaml \
        MODEL.WEIGHTS output/mask2former/tiny_frames/model_final.pth
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


# Meta-architectures trained on video clips (the others train on images) and those evaluated on
# videos (the others on images).
CLIP_TRAINED = ("IAIMask2Former",)
VIDEO_EVALUATED = ("IAIMask2Former", "QueryMatchMask2Former")


class Mask2FormerTrainer(IAITrainer):
    """IAITrainer with each model on its kind of data: Mask2Former and the query-matching model train
    on image datasets, IAIMask2Former on video splits; the video models evaluate on videos."""

    @classmethod
    def build_train_loader(cls, cfg):
        arch = cfg.MODEL.META_ARCHITECTURE
        if is_video_split(cfg.DATASETS.TRAIN) != (arch in CLIP_TRAINED):
            kind = "video splits (e.g. 'synthetic_vis_train')" if arch in CLIP_TRAINED else \
                "image datasets (e.g. 'synthetic_vis_train_frames')"
            raise ValueError(f"{arch} trains on {kind}, got {cfg.DATASETS.TRAIN}")
        return super().build_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        arch = cfg.MODEL.META_ARCHITECTURE
        video = is_video_split(dataset_name)
        if video and arch not in VIDEO_EVALUATED:
            raise ValueError(
                f"{arch} evaluates on image datasets (e.g. '<split>_frames'); for the video split "
                f"{dataset_name} use MODEL.META_ARCHITECTURE QueryMatchMask2Former or IAIMask2Former"
            )
        if not video and arch in CLIP_TRAINED:
            raise ValueError(f"{arch} evaluates on video splits (e.g. 'synthetic_vis_val'), got {dataset_name}")
        return super().build_test_loader(cfg, dataset_name)


def main(args):
    return train_or_evaluate(setup_cfg(args, add_mask2former_config), args, Mask2FormerTrainer)


if __name__ == "__main__":
    launch_or_exit(main, parse_launch_args())
