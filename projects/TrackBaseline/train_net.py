#!/usr/bin/env python
"""
Train or evaluate the tracking-by-detection baseline (TrackRCNN) with iai_d2's trainer: the same
clip loader, YTVIS evaluator (results.json, submission.zip, mAP table), optimizer and checkpoints.

    # from the repository root (datasets/ and output/ are relative to it)
    python projects/TrackBaseline/train_net.py \
        --config-file projects/TrackBaseline/configs/synthetic_tiny.yaml
    python projects/TrackBaseline/train_net.py --config-file ... --eval-only MODEL.WEIGHTS .../model_final.pth
"""

import os
import sys

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.engine import default_argument_parser, default_setup, launch

from iai_d2.engine import IAITrainer
from iai_d2.utils import check_weights
from track_baseline import add_trackbaseline_config


def setup(args):
    cfg = get_cfg()
    add_trackbaseline_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    resuming = args.resume and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))
    if not resuming:
        check_weights(cfg.MODEL.WEIGHTS)
    if args.eval_only:
        model = IAITrainer.build_model(cfg)
        checkpointer = DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return IAITrainer.test(cfg, model)
    trainer = IAITrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    try:
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
