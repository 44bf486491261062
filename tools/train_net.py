#!/usr/bin/env python
"""
Train or evaluate IAI with Detectron2's launcher.

    python tools/train_net.py --config-file configs/synthetic/iai_tiny.yaml
    python tools/train_net.py --config-file configs/youtubevis_2019/iai_R50_FPN.yaml --num-gpus 8
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/model_final.pth
    python tools/train_net.py --config-file ... --resume

Bad data, config, weights or a diverging loss end with one line ``error: ...`` and exit code 1.
"""

import os
import sys

from iai_d2.utils import check_weights, filter_library_warnings

filter_library_warnings()  # before Detectron2 is imported (also runs in spawned DDP workers)

from detectron2.config import get_cfg  # noqa: E402
from detectron2.engine import default_argument_parser, default_setup, launch  # noqa: E402
from detectron2.utils import comm  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

from iai_d2 import add_iai_config  # noqa: E402
from iai_d2.engine import AtomicCheckpointer, IAITrainer  # noqa: E402


def setup(args):
    cfg = get_cfg()
    add_iai_config(cfg)
    cfg.merge_from_file(args.config_file)
    try:
        cfg.merge_from_list(args.opts)
    except (KeyError, AssertionError) as e:  # yacs: unknown key / odd number of KEY VALUE items
        raise ValueError(f"bad config override in {args.opts}: {' '.join(str(e).split())}") from None
    if not sys.stderr.isatty():
        cfg.TEST.PROGRESS_BAR = False  # progress bars belong on a terminal, not in a log file
    cfg.freeze()
    default_setup(cfg, args)
    # The project's own messages (AP table, written files) go to the console and log.txt too.
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="iai_d2", abbrev_name="iai")
    return cfg


def main(args):
    cfg = setup(args)
    resuming = args.resume and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))
    if not resuming:  # --resume with a checkpoint in OUTPUT_DIR ignores MODEL.WEIGHTS
        check_weights(cfg.MODEL.WEIGHTS)
    if args.eval_only:
        model = IAITrainer.build_model(cfg)
        AtomicCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = IAITrainer.test(cfg, model)
        if comm.is_main_process() and results:
            from detectron2.evaluation import verify_results

            verify_results(cfg, results)
        return results
    trainer = IAITrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def check_args(parser, args):
    """Usage errors for the launcher arguments (before any process is started)."""
    if not args.config_file:
        parser.error("--config-file is required")
    if not os.path.isfile(args.config_file):
        parser.error(f"--config-file {args.config_file} does not exist")
    if args.num_gpus < 1 or args.num_machines < 1:
        parser.error("--num-gpus and --num-machines must be >= 1")


if __name__ == "__main__":
    parser = default_argument_parser()
    args = parser.parse_args()
    check_args(parser, args)
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
    except (FileNotFoundError, ValueError, FloatingPointError) as e:
        # Bad data, config or weights, or a diverging loss (Detectron2 names the iteration and the
        # loss terms): the message names the culprit; one line, no traceback.
        sys.exit(f"error: {' '.join(str(e).split())}")
