#!/usr/bin/env python
"""
Save training clips, as the clip mapper produces them (augmented, with clip slots), as PNG strips:
one row per clip, one panel per frame, each instance coloured and labelled by its clip slot.

    python tools/visualize_clips.py --config-file configs/synthetic/iai_tiny.yaml --num-clips 3 --output out/
"""

import argparse
import os

from iai_d2.utils import filter_library_warnings

filter_library_warnings()  # before Detectron2 is imported

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.utils.visualizer import Visualizer  # noqa: E402

from iai_d2 import add_iai_config  # noqa: E402
from iai_d2.config import merge_overrides  # noqa: E402
from iai_d2.data.clip_mapper import YTVISClipDatasetMapper  # noqa: E402

SLOT_COLORS = np.array(
    [
        [0.9, 0.1, 0.1],
        [0.1, 0.7, 0.1],
        [0.1, 0.3, 0.9],
        [0.9, 0.7, 0.1],
        [0.7, 0.1, 0.8],
        [0.1, 0.8, 0.8],
        [1.0, 0.5, 0.0],
        [0.5, 0.5, 0.5],
        [0.4, 0.2, 0.0],
        [0.0, 0.0, 0.4],
    ]
)


def draw_clip(clip, metadata, input_format):
    panels = []
    for image, instances in zip(clip["image"], clip["instances"]):
        rgb = image.permute(1, 2, 0).numpy()
        if input_format == "BGR":
            rgb = rgb[:, :, ::-1]
        vis = Visualizer(rgb, metadata)
        slots = instances.gt_ids.tolist()
        labels = [f"{metadata.thing_classes[c]} #{s}" for c, s in zip(instances.gt_classes.tolist(), slots)]
        vis.overlay_instances(
            masks=instances.gt_masks.tensor.numpy(),
            labels=labels,
            assigned_colors=[SLOT_COLORS[s % len(SLOT_COLORS)] for s in slots],
        )
        panels.append(vis.output.get_image())
    height = max(p.shape[0] for p in panels)
    panels = [np.pad(p, ((0, height - p.shape[0]), (0, 4), (0, 0)), constant_values=255) for p in panels]
    return np.concatenate(panels, axis=1)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--num-clips", type=int, default=3)
    parser.add_argument("--output", required=True, help="folder for clip_<i>.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args()

    cfg = get_cfg()
    add_iai_config(cfg)
    cfg.merge_from_file(args.config_file)
    try:
        merge_overrides(cfg, args.opts)
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    dataset = cfg.DATASETS.TRAIN[0]
    videos = DatasetCatalog.get(dataset)
    metadata = MetadataCatalog.get(dataset)
    mapper = YTVISClipDatasetMapper(cfg, is_train=True)
    rng = np.random.default_rng(args.seed)
    os.makedirs(args.output, exist_ok=True)
    for i, video_index in enumerate(
        rng.choice(len(videos), size=min(args.num_clips, len(videos)), replace=False)
    ):
        strip = draw_clip(mapper(videos[int(video_index)]), metadata, cfg.INPUT.FORMAT)
        path = os.path.join(args.output, f"clip_{i}.png")
        cv2.imwrite(path, strip[:, :, ::-1])
        print(f"wrote {path} (video {videos[int(video_index)]['video_id']})")


if __name__ == "__main__":
    main()
