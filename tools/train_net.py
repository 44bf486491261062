#!/usr/bin/env python
"""
Train or evaluate IAI with Detectron2's launcher.

    python tools/train_net.py --config-file configs/synthetic/iai_tiny.yaml
    python tools/train_net.py --config-file configs/youtubevis_2019/iai_R50_FPN.yaml --num-gpus 8
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/model_final.pth
    python tools/train_net.py --config-file ... --resume

Bad data, config, weights or a diverging loss end with one line ``error: ...`` and exit code 1, also
when it happens in one of several ``--num-gpus`` processes.
"""


from iai_d2.utils import filter_library_warnings

filter_library_warnings()  # before Detectron2 is imported (also runs in spawned DDP workers)

from iai_d2 import add_iai_config  # noqa: E402
from iai_d2.engine import launch_or_exit, parse_launch_args, setup_cfg, train_or_evaluate  # noqa: E402


def main(args):
    return train_or_evaluate(setup_cfg(args, add_iai_config), args)


if __name__ == "__main__":
    args = parse_launch_args()
    # Bad data, config or weights, or a diverging loss (Detectron2 names the iteration and the loss
    # terms), in this process or in a --num-gpus worker: one line naming the culprit, no traceback.
    launch_or_exit(main, args)
