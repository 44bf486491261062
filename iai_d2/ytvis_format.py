"""The invariants of the YouTube-VIS / OVIS json format, checked once where a file enters.

Shared by the dataset loader (``iai_d2.data.datasets.ytvis``), the evaluator's ground truth
(``iai_d2.evaluation``) and so by the CLI and the submission validator. NumPy-free and torch-free.
"""
import numbers

__all__ = ["check_ytvis_json"]

# Per-annotation lists with one entry per frame of the annotation's video
PER_FRAME_KEYS = ("segmentations", "bboxes", "areas")


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_ytvis_json(data, json_file):
    """Raise ValueError naming ``json_file`` and the offending id unless ``data`` (a parsed
    YouTube-VIS json) keeps every invariant of the format:

    * an object whose ``videos`` is a non-empty list of objects, ``categories`` and ``annotations``
      lists of objects (or absent / null);
    * video ids, category ids and annotation ids are integers, each unique in its list;
    * each video has positive integer ``height`` and ``width`` and at least one frame (``length``
      and/or ``file_names``, equal when both are given);
    * each annotation refers to a listed video and a listed category, and its ``segmentations``
      (required), ``bboxes`` and ``areas`` (optional, may be null) have one entry per frame;
    * every RLE segmentation's ``size`` is the video's [height, width].

    Returns:
        dict: video id -> (length, height, width).
    """
    _check_lists(data, json_file)
    videos = _video_index(data["videos"], json_file)
    categories = _unique_ids(data.get("categories") or [], "category", json_file)
    _check_annotations(data.get("annotations") or [], videos, categories, json_file)
    return videos


def _check_lists(data, json_file):
    if not isinstance(data, dict):
        raise ValueError(f"{json_file}: expected a json object with 'videos', got {type(data).__name__}")
    for key in ("videos", "categories", "annotations"):
        value = data.get(key)
        if value is None and key != "videos":
            continue
        if not isinstance(value, list) or not all(isinstance(x, dict) for x in value):
            got = type(value).__name__ if not isinstance(value, list) else "a list with non-object items"
            raise ValueError(f"{json_file}: '{key}' must be a list of objects, got {got}")
    if not data["videos"]:
        raise ValueError(f"{json_file}: 'videos' is empty")


def _unique_ids(items, what, json_file):
    """The set of ``id`` of ``items``; raises on a missing, non-integer or repeated id."""
    ids = set()
    for i, item in enumerate(items):
        item_id = item.get("id")
        if not _is_int(item_id):
            raise ValueError(f"{json_file}: the {what} at position {i} has id {item_id!r}, not an integer")
        if item_id in ids:
            raise ValueError(f"{json_file}: duplicate {what} id {item_id}")
        ids.add(item_id)
    return ids


def _video_index(videos, json_file):
    """video id -> (length, height, width) of a json's ``videos`` list, every video checked."""
    _unique_ids(videos, "video", json_file)
    index = {}
    for video in videos:
        vid = video["id"]
        height, width = video.get("height"), video.get("width")
        if not (_is_int(height) and _is_int(width) and height > 0 and width > 0):
            raise ValueError(f"{json_file}: video id {vid} has height {height!r}, width {width!r} "
                             "(positive integers needed)")
        file_names, length = video.get("file_names"), video.get("length")
        if file_names is not None and not isinstance(file_names, list):
            raise ValueError(f"{json_file}: video id {vid}: 'file_names' must be a list")
        if length is None:
            length = len(file_names) if file_names is not None else 0
        elif not _is_int(length):
            raise ValueError(f"{json_file}: video id {vid} has length {length!r}, not an integer")
        if file_names is not None and not file_names:
            raise ValueError(f"{json_file}: video id {vid} has no frames (empty 'file_names')")
        if file_names is not None and len(file_names) != length:
            raise ValueError(f"{json_file}: video id {vid} has {len(file_names)} file_names but length {length}")
        if length < 1:
            raise ValueError(f"{json_file}: video id {vid} has no frames")
        index[vid] = (length, height, width)
    return index


def _same_size(rle_size, size):
    return isinstance(rle_size, (list, tuple)) and list(rle_size) == size


def _check_annotations(annotations, videos, categories, json_file):
    _unique_ids(annotations, "annotation", json_file)
    for ann in annotations:
        where = f"{json_file}: annotation id {ann['id']}"
        missing = [key for key in ("video_id", "category_id", "segmentations") if key not in ann]
        if missing:
            raise ValueError(f"{where}: no '{missing[0]}' field")
        vid, cat = ann["video_id"], ann["category_id"]
        if vid not in videos or not _is_int(vid):
            raise ValueError(f"{where} refers to unknown video id {vid!r}")
        where += f" (video id {vid})"
        if cat not in categories or not _is_int(cat):
            raise ValueError(f"{where}: unknown category id {cat!r}")
        length, height, width = videos[vid]
        if not isinstance(ann.get("segmentations"), list):
            raise ValueError(f"{where}: 'segmentations' must be a list with one entry per frame")
        for key in PER_FRAME_KEYS:
            value = ann.get(key)
            if value is None:
                continue
            if not isinstance(value, list) or len(value) != length:
                n = len(value) if isinstance(value, list) else type(value).__name__
                raise ValueError(f"{where}: '{key}' has {n} entries, the video has {length} frames")
        size = [height, width]
        for t, seg in enumerate(ann["segmentations"]):
            if isinstance(seg, dict) and not _same_size(seg.get("size"), size):
                raise ValueError(f"{where}, frame {t}: RLE size {seg.get('size')} is not the video's "
                                 f"[height, width] = {size}")
