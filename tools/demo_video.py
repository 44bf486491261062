#!/usr/bin/env python
"""
Run a trained IAI model on a video file, a folder of frames or a webcam, and draw the tracked
instances with Detectron2's VideoVisualizer (one stable colour per identity).

    python tools/demo_video.py --config-file configs/synthetic/iai_tiny.yaml \
        --input clip.mp4 --output out.mp4 --opts MODEL.WEIGHTS output/synthetic/iai_tiny/model_final.pth
    python tools/demo_video.py ... --input frames_dir/ --output out_dir/
    python tools/demo_video.py ... --input webcam --output out.mp4 --max-frames 300
"""

import argparse
import glob
import os
import sys

from iai_d2.utils import filter_library_warnings

filter_library_warnings()  # before Detectron2 is imported

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import tqdm  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402
from detectron2.utils.video_visualizer import VideoVisualizer  # noqa: E402

from iai_d2 import add_iai_config  # noqa: E402
from iai_d2.config import merge_overrides  # noqa: E402
from iai_d2.predictor import VideoPredictor  # noqa: E402

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


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


def open_frames(source: str):
    """Returns (iterator of BGR frames, number of frames or None, fps or None); clear errors on bad input."""
    if os.path.isdir(source):
        files = sorted(
            f for f in glob.glob(os.path.join(source, "*")) if f.lower().endswith(IMAGE_EXTENSIONS)
        )
        if not files:
            raise SystemExit(f"error: no image files ({', '.join(IMAGE_EXTENSIONS)}) in folder {source}")

        def read_all():
            first = None
            for f in files:
                frame = cv2.imread(f, cv2.IMREAD_COLOR)
                if frame is None:
                    raise SystemExit(f"error: cannot decode image {f}")
                first = first or (f, frame.shape[:2])
                if frame.shape[:2] != first[1]:  # a video has one frame size (OpenCV drops the others)
                    raise SystemExit(f"error: frame {f} is {frame.shape[1]}x{frame.shape[0]} but the first "
                                     f"frame {first[0]} is {first[1][1]}x{first[1][0]}; all frames of a "
                                     "video must have one size")
                yield frame

        return read_all(), len(files), None
    if source == "webcam":
        capture = cv2.VideoCapture(0)
    else:
        if not os.path.isfile(source):
            raise SystemExit(f"error: input {source} is neither a file, a folder, nor 'webcam'")
        capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        raise SystemExit(f"error: OpenCV cannot open {source} (unreadable file, missing codec, or no webcam)")
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    fps = capture.get(cv2.CAP_PROP_FPS) or None

    def read_all():
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    return
                yield frame
        finally:
            capture.release()

    return read_all(), (count if source != "webcam" else None), fps


class FrameSink:
    """Writes frames to an mp4/avi file (atomically: temp name, renamed when closed) or a folder."""

    def __init__(self, output: str, fps: float):
        self.output, self.fps, self.writer, self.count = output, fps, None, 0
        self.to_file = output.lower().endswith((".mp4", ".avi", ".mkv"))
        if self.to_file:
            root, ext = os.path.splitext(os.path.abspath(output))
            self.tmp = f"{root}.partial{ext}"
        folder = os.path.dirname(self.tmp) if self.to_file else output
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise SystemExit(f"error: cannot create the output folder {folder}: {e.strerror}")

    def write(self, frame_bgr: np.ndarray) -> None:
        if not self.to_file:
            path = os.path.join(self.output, f"{self.count:06d}.jpg")
            if not cv2.imwrite(path, frame_bgr):
                raise SystemExit(f"error: cannot write {path}")
        else:
            if self.writer is None:
                fourcc = cv2.VideoWriter_fourcc(*("mp4v" if self.tmp.endswith(".mp4") else "MJPG"))
                height, width = frame_bgr.shape[:2]
                self.writer = cv2.VideoWriter(self.tmp, fourcc, self.fps, (width, height))
                if not self.writer.isOpened():
                    raise SystemExit(f"error: OpenCV has no encoder for {self.output} (try .avi or a folder)")
            self.writer.write(frame_bgr)
        self.count += 1

    def abort(self) -> None:
        """Drop a partly written video file."""
        if self.to_file:
            if self.writer is not None:
                self.writer.release()
            if os.path.exists(self.tmp):
                os.remove(self.tmp)

    def close(self) -> None:
        if self.to_file and self.writer is not None:
            self.writer.release()
            os.replace(self.tmp, self.output)


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logger(name="iai_d2")
    cfg = get_cfg()
    add_iai_config(cfg)
    cfg.merge_from_file(args.config_file)
    try:
        merge_overrides(cfg, args.opts)
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    cfg.freeze()

    frames, total, input_fps = open_frames(args.input)
    if args.max_frames:
        total = min(total or args.max_frames, args.max_frames)
    try:
        predictor = VideoPredictor(cfg)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}")
    predictor.reset()
    visualizer = VideoVisualizer(predictor.metadata)
    sink = FrameSink(args.output, args.fps or input_fps or 10.0)
    try:
        for index, frame in enumerate(tqdm.tqdm(frames, total=total, unit="frame")):
            if args.max_frames and index >= args.max_frames:
                break
            instances = predictor(frame)
            instances = instances[instances.scores >= args.confidence_threshold]
            instances.ID = instances.ID.numpy()  # VideoVisualizer hashes IDs: use values, not tensors
            drawn = visualizer.draw_instance_predictions(frame[:, :, ::-1], instances)
            sink.write(drawn.get_image()[:, :, ::-1])
    except BaseException:
        sink.abort()
        raise
    sink.close()
    if sink.count == 0:
        raise SystemExit(f"error: no frame could be read from {args.input}")
    print(f"wrote {sink.count} frames to {args.output}")


if __name__ == "__main__":
    sys.exit(main())
