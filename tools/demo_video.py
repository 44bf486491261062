#!/usr/bin/env python
"""
Run a trained IAI model on a video file, a folder of frames or a webcam, and draw the tracked
instances (one stable colour per identity) at the input's size and frame count. Drawing is
vectorised NumPy / OpenCV (iai_d2.visualization), cheaper than the model's inference
(benchmarks/demo_speed.py prints both per frame).

    python tools/demo_video.py --config-file configs/synthetic/iai_tiny.yaml \
        --input clip.mp4 --output out.mp4 --opts MODEL.WEIGHTS output/synthetic/iai_tiny/model_final.pth
    python tools/demo_video.py ... --input frames_dir/ --output out_dir/
    python tools/demo_video.py ... --input webcam --output out.mp4 --max-frames 300
"""

import argparse
import sys

from iai_d2.utils import filter_library_warnings

filter_library_warnings()  # before Detectron2 is imported

import tqdm  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

from iai_d2 import add_iai_config  # noqa: E402
from iai_d2.config import merge_overrides  # noqa: E402
from iai_d2.predictor import VideoPredictor  # noqa: E402
from iai_d2.visualization import FrameSink, draw_predictions, open_frames  # noqa: E402


def get_parser():
    parser = argparse.ArgumentParser(description="IAI online video instance segmentation demo")
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--input", required=True, help="a video file, a folder of frames, or 'webcam'")
    parser.add_argument("--output", required=True, help="an .mp4/.avi file, or a folder for JPEG frames")
    parser.add_argument(
        "--confidence-threshold", type=float, default=0.5, help="hide instances below this score"
    )
    parser.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0 = all)")
    parser.add_argument("--fps", type=float, default=0, help="output fps (default: the input's, else 10)")
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return parser


def run(args) -> int:
    """Track and draw every frame of ``args.input`` into ``args.output``; returns the frame count."""
    cfg = get_cfg()
    add_iai_config(cfg)
    cfg.merge_from_file(args.config_file)
    merge_overrides(cfg, args.opts)
    cfg.freeze()
    frames, total, input_fps = open_frames(args.input)
    if args.max_frames:
        total = min(total or args.max_frames, args.max_frames)
    predictor = VideoPredictor(cfg)
    predictor.reset()
    class_names = predictor.metadata.get("thing_classes", None)
    sink = FrameSink(args.output, args.fps or input_fps or 10.0)
    try:
        for index, frame in enumerate(tqdm.tqdm(frames, total=total, unit="frame")):
            if args.max_frames and index >= args.max_frames:
                break
            instances = predictor(frame)
            sink.write(draw_predictions(frame, instances[instances.scores >= args.confidence_threshold],
                                        class_names))
    except BaseException:
        sink.abort()
        raise
    sink.close()
    return sink.count


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logger(name="iai_d2")
    try:
        count = run(args)
    except (FileNotFoundError, ValueError) as e:
        # Bad input, output, config override or weights: the message names it; no traceback.
        raise SystemExit(f"error: {e}")
    if count == 0:
        raise SystemExit(f"error: no frame could be read from {args.input}")
    print(f"wrote {count} frames to {args.output}")


if __name__ == "__main__":
    sys.exit(main())
