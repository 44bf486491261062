"""Video data for iai_d2: YouTube-VIS/OVIS datasets (registered on import), the synthetic
moving-shapes generator, the clip mapper and the loaders."""
from . import datasets
from .build import build_clip_train_loader, build_video_test_loader, check_frame_files, get_video_dataset_dicts
from .clip_mapper import (
    VideoFrames,
    YTVISClipDatasetMapper,
    read_video_frame,
    return_clip_indices,
    sample_clip_indices,
    track_returns,
)
from .datasets import *  # noqa: F401,F403  (importing .datasets registers the built-in names)
from .synthetic import SyntheticVideo, generate_synthetic_vis

__all__ = datasets.__all__ + [
    "SyntheticVideo",
    "VideoFrames",
    "YTVISClipDatasetMapper",
    "build_clip_train_loader",
    "build_video_test_loader",
    "check_frame_files",
    "generate_synthetic_vis",
    "get_video_dataset_dicts",
    "read_video_frame",
    "return_clip_indices",
    "sample_clip_indices",
    "track_returns",
]
