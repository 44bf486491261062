"""YouTube-VIS / OVIS json loading, validation, registration and splitting.

One dataset record per video (see ``load_ytvis_json``). Works for YouTube-VIS 2019 / 2021 and OVIS
(whose valid/test jsons carry ``"annotations": null``); segmentations may be polygons, compressed
RLE or uncompressed RLE (converted to compressed RLE with ``str`` counts at load time).
"""
import json
import logging
import os

import numpy as np
import pycocotools.mask as mask_util
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from detectron2.utils.colormap import colormap
from detectron2.utils.file_io import PathManager

from ...utils import atomic_write, json_rle
from ...ytvis_format import check_ytvis_json

__all__ = [
    "YTVIS_2019_CATEGORIES",
    "YTVIS_2021_CATEGORIES",
    "OVIS_CATEGORIES",
    "SYNTHETIC_CATEGORIES",
    "ytvis_category_metadata",
    "load_ytvis_json",
    "register_ytvis_instances",
    "resolve_ytvis_paths",
    "save_ytvis_json",
    "split_ytvis_json",
]

logger = logging.getLogger(__name__)


def _categories(names):
    return [{"id": i + 1, "name": n} for i, n in enumerate(names)]


# Official category lists; dataset ids are 1..K in this order.
YTVIS_2019_CATEGORIES = _categories(
    "person giant_panda lizard parrot skateboard sedan ape dog snake monkey hand rabbit duck cat "
    "cow fish train horse turtle bear motorbike giraffe leopard fox deer owl surfboard airplane "
    "truck zebra tiger elephant snowboard boat shark mouse frog eagle earless_seal "
    "tennis_racket".split()
)
YTVIS_2021_CATEGORIES = _categories(
    "airplane bear bird boat car cat cow deer dog duck earless_seal elephant fish flying_disc fox "
    "frog giant_panda giraffe horse leopard lizard monkey motorbike mouse parrot person rabbit "
    "shark skateboard snake snowboard squirrel surfboard tennis_racket tiger train truck turtle "
    "whale zebra".split()
)
# "Vehical" is the spelling used by the official OVIS annotation files.
OVIS_CATEGORIES = _categories(
    "Person Bird Cat Dog Horse Sheep Cow Elephant Bear Zebra Giraffe Poultry Giant_panda Lizard "
    "Parrot Monkey Rabbit Tiger Fish Turtle Bicycle Motorcycle Airplane Boat Vehical".split()
)

# Categories of the synthetic moving-shapes videos (iai_d2/data/synthetic.py); "color" is the base
# colour every instance of the category is drawn with (before per-instance jitter and texture).
SYNTHETIC_CATEGORIES = [
    {"id": 1, "name": "circle", "supercategory": "shape", "color": [220, 50, 40]},
    {"id": 2, "name": "square", "supercategory": "shape", "color": [40, 190, 70]},
    {"id": 3, "name": "triangle", "supercategory": "shape", "color": [50, 80, 230]},
    {"id": 4, "name": "cross", "supercategory": "shape", "color": [240, 200, 30]},
]


def ytvis_category_metadata(categories):
    """
    Args:
        categories (list[dict]): {"id": dataset id, "name": str, optional "color": [r, g, b]}.

    Returns:
        dict: thing_classes, thing_colors, thing_dataset_id_to_contiguous_id (ids sorted ascending).
    """
    categories = sorted(categories, key=lambda c: c["id"])
    palette = colormap(rgb=True, maximum=255).tolist()
    return {
        "thing_classes": [c["name"] for c in categories],
        "thing_colors": [
            list(c.get("color", palette[i % len(palette)])) for i, c in enumerate(categories)
        ],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(categories)},
    }


def _segmentation_record(segm, height, width, where):
    """One per-frame segmentation (its RLE size was checked with the json); uncompressed RLE ->
    compressed RLE with str counts."""
    if isinstance(segm, dict):
        if isinstance(segm["counts"], list):
            segm = mask_util.frPyObjects(segm, height, width)
        return json_rle(segm)
    if isinstance(segm, list):
        return segm
    raise ValueError(f"{where}: segmentation must be an RLE dict or polygons, got {type(segm)}")


def _bbox_from_segmentation(segm, height, width):
    """XYWH box of an RLE dict or a polygon list."""
    if isinstance(segm, list):
        segm = mask_util.merge(mask_util.frPyObjects(segm, height, width))
    return mask_util.toBbox(segm).tolist()


def _category_map(data, json_file, dataset_name):
    """Dataset id -> contiguous id, from the registered metadata or else from the json."""
    meta = MetadataCatalog.get(dataset_name) if dataset_name else None
    if meta is not None and meta.get("thing_dataset_id_to_contiguous_id") is not None:
        return meta.thing_dataset_id_to_contiguous_id
    categories = data.get("categories") or []
    if not categories:
        raise ValueError(f"{json_file}: no 'categories' and no category metadata registered")
    derived = ytvis_category_metadata(categories)
    if meta is not None:
        meta.set(**derived)
    return derived["thing_dataset_id_to_contiguous_id"]


def _video_records(data, json_file, image_root):
    """video id -> record without annotations (the json's invariants are checked already)."""
    records = {}
    for video in data["videos"]:
        vid = video["id"]
        if not video.get("file_names"):
            raise ValueError(f"{json_file}: video id {vid} has no 'file_names' (the frames to load)")
        records[vid] = {
            "video_id": vid,
            "file_names": [os.path.join(image_root, f) for f in video["file_names"]],
            "length": len(video["file_names"]),
            "height": video["height"],
            "width": video["width"],
        }
    return records


def _add_track(record, ann, contiguous_id, json_file):
    """Append one annotation (a track) to the per-frame annotation lists of its video record."""
    vid, length, h, w = record["video_id"], record["length"], record["height"], record["width"]
    where = f"{json_file}: video id {vid}, annotation id {ann['id']}"
    if ann["category_id"] not in contiguous_id:
        raise ValueError(f"{where}: category id {ann['category_id']} is not in the categories of the dataset")
    segms = ann["segmentations"]
    bboxes = ann.get("bboxes") or [None] * length
    for frame_idx, (segm, bbox) in enumerate(zip(segms, bboxes)):
        if segm is None:
            continue
        segm = _segmentation_record(segm, h, w, f"{where}, frame {frame_idx}")
        record["annotations"][frame_idx].append(
            {
                "id": ann["id"],
                "category_id": contiguous_id[ann["category_id"]],
                "bbox": bbox if bbox is not None else _bbox_from_segmentation(segm, h, w),
                "bbox_mode": BoxMode.XYWH_ABS,
                "segmentation": segm,
                "iscrowd": ann.get("iscrowd", 0),
            }
        )


def _add_annotations(records, annotations, contiguous_id, json_file):
    """Add every annotation (a track; its id, unique in the json, is the track identity the clip
    mapper turns into memory slots) to its video record."""
    for record in records.values():
        record["annotations"] = [[] for _ in range(record["length"])]
    for ann in annotations:
        _add_track(records[ann["video_id"]], ann, contiguous_id, json_file)


def load_ytvis_json(json_file, image_root, dataset_name=None):
    """
    Load a YouTube-VIS 2019/2021 or OVIS json as Detectron2 dataset records, one per video.

    Args:
        json_file (str): annotation json.
        image_root (str): directory the json's ``file_names`` are relative to.
        dataset_name (str or None): if given, its registered category mapping is used; when none
            is registered, the mapping derived from the json is stored in its metadata.

    Returns:
        list[dict]: {"video_id", "file_names" (absolute paths), "length", "height", "width",
        "annotations": per frame, a list of {"id" (track id), "category_id" (contiguous),
        "bbox" (XYWH_ABS), "bbox_mode", "segmentation" (RLE or polygons), "iscrowd"} of the
        instances present in that frame}. "annotations" is absent when the json has none.
    """
    if not PathManager.isfile(json_file):
        raise FileNotFoundError(f"YouTube-VIS json not found: {json_file}")
    with PathManager.open(json_file) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{json_file} is not valid JSON (truncated or corrupt?): {e}") from None
    check_ytvis_json(data, json_file)
    try:
        records = _video_records(data, json_file, image_root)
        annotations = data.get("annotations")
        if annotations is not None:
            _add_annotations(records, annotations, _category_map(data, json_file, dataset_name), json_file)
    except (KeyError, TypeError) as e:
        raise ValueError(f"{json_file}: malformed video or annotation ({type(e).__name__}: {e})") from None
    logger.info(f"Loaded {len(records)} videos from {json_file}")
    return list(records.values())


def _as_candidates(path):
    return [path] if isinstance(path, str) else list(path)


def register_ytvis_instances(name, metadata, json_file, image_root):
    """
    Register a YouTube-VIS-format dataset; no file is touched until ``DatasetCatalog.get(name)``.

    Args:
        name (str): dataset name, e.g. "ytvis_2019_train".
        metadata (dict): extra metadata (e.g. from ``ytvis_category_metadata``); may be empty.
        json_file (str or list[str]): the json, or candidate paths (first existing one wins).
        image_root (str or list[str]): the image root, or candidate directories.

    ``json_file``/``image_root`` in the metadata are set at registration for single paths and
    by ``resolve_ytvis_paths`` (called on load) for candidate lists.
    """
    DatasetCatalog.register(name, lambda: load_ytvis_json(*resolve_ytvis_paths(name), name))
    meta = MetadataCatalog.get(name)
    if isinstance(json_file, str) and isinstance(image_root, str):
        meta.set(json_file=json_file, image_root=image_root)
    meta.set(
        json_file_candidates=_as_candidates(json_file),
        image_root_candidates=_as_candidates(image_root),
        evaluator_type="ytvis",
        **metadata,
    )


def _first_existing(candidates, exists, what, name):
    for path in candidates:
        if exists(path):
            return path
    tried = "\n  ".join(candidates)
    raise FileNotFoundError(
        f"{what} of dataset '{name}' not found (is $DETECTRON2_DATASETS set? See "
        f"datasets/README.md). Tried:\n  {tried}"
    )


def resolve_ytvis_paths(name):
    """
    Resolve the json and image root of a dataset registered with ``register_ytvis_instances``
    (first existing candidate wins) and record them as ``json_file``/``image_root`` metadata.

    Returns:
        (str, str): json_file, image_root.
    """
    meta = MetadataCatalog.get(name)
    json_file = _first_existing(meta.json_file_candidates, PathManager.isfile, "Json", name)
    image_root = _first_existing(meta.image_root_candidates, PathManager.isdir, "Image root", name)
    meta.set(json_file=json_file, image_root=image_root)
    return json_file, image_root


def save_ytvis_json(data, path):
    """Write a json atomically (temporary file in the same directory, then ``os.replace``)."""
    atomic_write(path, lambda f: json.dump(data, f), mode="w")


def split_ytvis_json(json_file, out_train, out_val, *, val_fraction=None, num_val=None, seed=0):
    """
    Split an annotated YouTube-VIS json by video into train_sub / val_sub jsons (for local mAP).

    Args:
        json_file (str): annotated json (e.g. the official train.json).
        out_train, out_val (str): output paths (written atomically).
        val_fraction (float) or num_val (int): size of the val part; give exactly one.
        seed (int): the split is a deterministic function of the seed.

    Returns:
        (list[int], list[int]): sorted video ids of the train and val parts.
    """
    if (val_fraction is None) == (num_val is None):
        raise ValueError("Give exactly one of val_fraction and num_val")
    with PathManager.open(json_file) as f:
        data = json.load(f)
    if not data.get("annotations"):
        raise ValueError(f"{json_file} has no annotations; only annotated jsons can be split")
    video_ids = sorted(v["id"] for v in data["videos"])
    if num_val is None:
        num_val = int(round(val_fraction * len(video_ids)))
    if not 0 < num_val < len(video_ids):
        raise ValueError(f"{json_file}: cannot put {num_val} of {len(video_ids)} videos in val")
    val_ids = set(np.random.default_rng(seed).permutation(video_ids)[:num_val].tolist())
    for path, keep in ((out_train, lambda v: v not in val_ids), (out_val, lambda v: v in val_ids)):
        part = dict(data)
        part["videos"] = [v for v in data["videos"] if keep(v["id"])]
        part["annotations"] = [a for a in data["annotations"] if keep(a["video_id"])]
        save_ytvis_json(part, path)
    return [v for v in video_ids if v not in val_ids], sorted(val_ids)
