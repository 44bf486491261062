#!/usr/bin/env python
"""
Training speed of IAI vs the same Mask R-CNN trained on the same frames as independent images.

Both models see identical clips (B clips x T frames from the synthetic set, mapped by the IAI clip
mapper); Mask R-CNN gets the B*T frames as one image batch. Prints seconds per clip and the ratio.

    python benchmarks/train_speed.py [--config-file configs/synthetic/iai_tiny.yaml] [--iters 5]
"""

import argparse
import os
import sys

import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from tabulate import tabulate

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import TINY_CONFIG, as_mask_rcnn, load_cfg, synthetic_videos, timed  # noqa: E402

from iai_d2.data.clip_mapper import YTVISClipDatasetMapper  # noqa: E402


def train_step(model, optimizer, batch):
    def step():
        losses = model(batch)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()

    return step


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", default=TINY_CONFIG)
    parser.add_argument("--iters", type=int, default=5, help="timed iterations per model (median reported)")
    parser.add_argument("--clips", type=int, default=2, help="clips per iteration (B)")
    parser.add_argument("opts", nargs=argparse.REMAINDER)
    args = parser.parse_args()

    cfg = load_cfg(args.config_file, args.opts)
    torch.manual_seed(0)
    records, _ = synthetic_videos(args.clips, 12, 128, 160)
    clips = [YTVISClipDatasetMapper(cfg, is_train=True)(r) for r in records[: args.clips]]
    frames = [
        {"image": img, "instances": inst} for c in clips for img, inst in zip(c["image"], c["instances"])
    ]
    num_frames = len(frames)

    rows = []
    with EventStorage(0):
        for name, model_cfg, batch in (
            ("Mask R-CNN (frames as images)", as_mask_rcnn(cfg), frames),
            ("IAI (clips)", cfg, clips),
        ):
            model = build_model(model_cfg)
            model.train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
            seconds = timed(train_step(model, optimizer, batch), args.iters)
            rows.append([name, len(clips), num_frames, seconds, seconds / len(clips)])
    base = rows[0][4]
    for row in rows:
        row.append(row[4] / base)
    print(f"device: {cfg.MODEL.DEVICE}, threads: {torch.get_num_threads()}, config: {args.config_file}")
    print(
        tabulate(
            rows,
            headers=["model", "clips", "frames", "s / iteration", "s / clip", "ratio vs Mask R-CNN"],
            floatfmt=".3f",
        )
    )


if __name__ == "__main__":
    main()
