#!/usr/bin/env python
"""
Train or evaluate IAI with Detectron2's launcher.

    python tools/train_net.py --config-file configs/synthetic/iai_tiny.yaml
    python tools/train_net.py --config-file configs/youtubevis_2019/iai_R50_FPN.yaml --num-gpus 8
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/model_final.pth
    python tools/train_net.py --config-file ... --resume
"""

import os
import sys

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils import comm

from iai_d2 import add_iai_config
from iai_d2.engine import IAITrainer
from iai_d2.utils import check_weights


def setup(args):
    cfg = get_cfg()
    add_iai_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    resuming = args.resume and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))
    if not resuming:  # --resume with a checkpoint in OUTPUT_DIR ignores MODEL.WEIGHTS
        check_weights(cfg.MODEL.WEIGHTS)
    if args.eval_only:
        model = IAITrainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        results = IAITrainer.test(cfg, model)
        if comm.is_main_process() and results:
            from detectron2.evaluation import verify_results

            verify_results(cfg, results)
        return results
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
        # Bad data, config or weights: the message names the file / video / key; no traceback.
        sys.exit(f"error: {e}")
