"""YouTube-VIS-format datasets; importing this package registers the built-in names
(ytvis_*, ovis_*, synthetic_vis_*, see builtin.py; synthetic_vis_*_frames, see frames.py)."""
from .builtin import builtin_ytvis_splits, register_all_ytvis
from .frames import register_ytvis_frames, ytvis_frame_records
from .ytvis import (
    OVIS_CATEGORIES,
    SYNTHETIC_CATEGORIES,
    YTVIS_2019_CATEGORIES,
    YTVIS_2021_CATEGORIES,
    load_ytvis_json,
    register_ytvis_instances,
    resolve_ytvis_paths,
    save_ytvis_json,
    split_ytvis_json,
    ytvis_category_metadata,
)

__all__ = [
    "OVIS_CATEGORIES",
    "SYNTHETIC_CATEGORIES",
    "YTVIS_2019_CATEGORIES",
    "YTVIS_2021_CATEGORIES",
    "builtin_ytvis_splits",
    "load_ytvis_json",
    "register_all_ytvis",
    "register_ytvis_frames",
    "register_ytvis_instances",
    "resolve_ytvis_paths",
    "save_ytvis_json",
    "split_ytvis_json",
    "ytvis_category_metadata",
    "ytvis_frame_records",
]
