"""Video data for iai_d2: YouTube-VIS/OVIS datasets (registered on import), the synthetic
moving-shapes generator, the clip mapper and the loaders."""
from .build import build_clip_train_loader, build_video_test_loader, get_video_dataset_dicts
from .clip_mapper import VideoFrames, YTVISClipDatasetMapper, read_video_frame, sample_clip_indices
from .datasets import (  # importing .datasets registers the built-in dataset names
    OVIS_CATEGORIES,
    SYNTHETIC_CATEGORIES,
    YTVIS_2019_CATEGORIES,
    YTVIS_2021_CATEGORIES,
    load_ytvis_json,
    register_all_ytvis,
    register_ytvis_instances,
    resolve_ytvis_paths,
    save_ytvis_json,
    split_ytvis_json,
    ytvis_category_metadata,
)
from .synthetic import SyntheticVideo, generate_synthetic_vis

__all__ = [
    "OVIS_CATEGORIES",
    "SYNTHETIC_CATEGORIES",
    "YTVIS_2019_CATEGORIES",
    "YTVIS_2021_CATEGORIES",
    "SyntheticVideo",
    "VideoFrames",
    "YTVISClipDatasetMapper",
    "build_clip_train_loader",
    "build_video_test_loader",
    "generate_synthetic_vis",
    "get_video_dataset_dicts",
    "load_ytvis_json",
    "read_video_frame",
    "register_all_ytvis",
    "register_ytvis_instances",
    "resolve_ytvis_paths",
    "sample_clip_indices",
    "save_ytvis_json",
    "split_ytvis_json",
    "ytvis_category_metadata",
]
