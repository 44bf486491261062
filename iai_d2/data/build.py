"""Data loaders for clip training (one clip per video item) and whole-video inference."""
import logging
import os

from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.data.build import get_detection_dataset_dicts
from detectron2.data.detection_utils import check_metadata_consistency

from .clip_mapper import YTVISClipDatasetMapper

__all__ = ["build_clip_train_loader", "build_video_test_loader", "check_frame_files", "get_video_dataset_dicts"]

logger = logging.getLogger(__name__)


def _has_instances(record):
    return any(not a.get("iscrowd", 0) for annos in record["annotations"] for a in annos)


def get_video_dataset_dicts(names, filter_empty=True):
    """
    Load and concatenate video records of registered datasets.

    Args:
        names (str or list[str]): dataset names.
        filter_empty (bool): drop videos without any non-crowd annotation (needs annotations).

    Returns:
        list[dict]: video records.
    """
    names = [names] if isinstance(names, str) else list(names)
    records = get_detection_dataset_dicts(names, filter_empty=False, check_consistency=False)
    if len(names) > 1:
        check_metadata_consistency("thing_classes", names)
    if filter_empty:
        missing = [r["video_id"] for r in records if "annotations" not in r]
        if missing:
            raise ValueError(
                f"Datasets {names} have videos without annotations (video ids {missing[:5]})"
            )
        num_before = len(records)
        records = [r for r in records if _has_instances(r)]
        logger.info(f"Removed {num_before - len(records)} videos without instances from {names}")
        if not records:
            raise ValueError(f"No video of {names} has an instance annotation")
    return records


def check_frame_files(records, names, shown=3):
    """Raise FileNotFoundError when frame files of ``records`` (local paths; URLs are not checked)
    are missing: how many, and the first ``shown`` with their video id and frame index. One stat
    per frame when the loader is built, instead of an error from a DataLoader worker at iteration N."""
    missing = [(f, r["video_id"], t) for r in records for t, f in enumerate(r["file_names"])
               if "://" not in f and not os.path.isfile(f)]
    if missing:
        total = sum(len(r["file_names"]) for r in records)
        first = "; ".join(f"{f} (video id {v}, frame {t})" for f, v, t in missing[:shown])
        raise FileNotFoundError(f"Missing image files: {len(missing)} of the {total} frames of {names} "
                                f"do not exist, first: {first}")


def build_clip_train_loader(cfg, mapper=None):
    """
    Infinite training loader over ``cfg.DATASETS.TRAIN``: every item is one video, mapped to one
    clip; each step yields a list of ``cfg.SOLVER.IMS_PER_BATCH`` clips in total over all ranks.
    """
    dataset = get_video_dataset_dicts(
        cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
    )
    check_frame_files(dataset, list(cfg.DATASETS.TRAIN))
    return build_detection_train_loader(
        dataset,
        mapper=YTVISClipDatasetMapper(cfg, is_train=True) if mapper is None else mapper,
        total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
        aspect_ratio_grouping=False,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )


def build_video_test_loader(cfg, dataset_name, mapper=None):
    """
    Inference loader over one dataset: yields ``[video_dict]`` (batch of one video, frames decoded
    lazily); ``InferenceSampler`` gives every rank a contiguous shard of whole videos.
    """
    dataset = get_video_dataset_dicts(dataset_name, filter_empty=False)
    check_frame_files(dataset, dataset_name)
    return build_detection_test_loader(
        dataset,
        mapper=YTVISClipDatasetMapper(cfg, is_train=False) if mapper is None else mapper,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )
