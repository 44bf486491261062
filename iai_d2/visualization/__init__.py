"""Drawing tracked instances and reading / writing videos (NumPy + OpenCV, no matplotlib)."""
from .draw import PALETTE, draw_instances, draw_predictions, identity_colors
from .video_io import FrameSink, open_frames, sample_clip

__all__ = ["PALETTE", "FrameSink", "draw_instances", "draw_predictions", "identity_colors", "open_frames",
           "sample_clip"]
