#!/usr/bin/env python
"""
Train or evaluate CondInst on image datasets (e.g. the ``*_frames`` of a video split, or COCO)
with iai_d2's trainer: Detectron2's image loaders, COCOEvaluator (bbox + segm), AdamW/SGD with a
backbone multiplier, atomic checkpoints and a loss plot.

    # from the repository root (datasets/ and output/ are relative to it)
    python projects/CondInst/train_net.py --config-file projects/CondInst/configs/condinst_tiny_frames.yaml
    python projects/CondInst/train_net.py --config-file ... --eval-only MODEL.WEIGHTS .../model_final.pth
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the condinst package

from iai_d2.utils import check_weights, filter_library_warnings  # noqa: E402

filter_library_warnings()

from detectron2.config import get_cfg  # noqa: E402
from detectron2.engine import default_argument_parser, default_setup, launch  # noqa: E402
from detectron2.evaluation import verify_results  # noqa: E402
from detectron2.utils import comm  # noqa: E402

from condinst import add_condinst_config  # noqa: E402
from iai_d2.engine import AtomicCheckpointer, IAITrainer, is_video_split  # noqa: E402


class CondInstTrainer(IAITrainer):
    """IAITrainer restricted to image datasets: CondInst is an image model."""

    @classmethod
    def build_train_loader(cls, cfg):
        if is_video_split(cfg.DATASETS.TRAIN):
            raise ValueError(f"CondInst trains on image datasets (e.g. '<split>_frames'), got {cfg.DATASETS.TRAIN}")
        return super().build_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        if is_video_split(dataset_name):
            raise ValueError(f"CondInst evaluates on image datasets (e.g. '<split>_frames'), got {dataset_name!r}")
        return super().build_test_loader(cfg, dataset_name)


def setup(args):
    cfg = get_cfg()
    add_condinst_config(cfg)
    cfg.merge_from_file(args.config_file)
    try:
        cfg.merge_from_list(args.opts)
    except (KeyError, AssertionError) as e:
        raise ValueError(f"bad config override in {args.opts}: {' '.join(str(e).split())}") from None
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    resuming = args.resume and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))
    if not resuming:
        check_weights(cfg.MODEL.WEIGHTS)
    if args.eval_only:
        model = CondInstTrainer.build_model(cfg)
        AtomicCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = CondInstTrainer.test(cfg, model)
        if comm.is_main_process() and results:
            verify_results(cfg, results)
        return results
    trainer = CondInstTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    try:
        launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(args,))
    except (FileNotFoundError, ValueError, FloatingPointError) as e:
        sys.exit(f"error: {' '.join(str(e).split())}")
