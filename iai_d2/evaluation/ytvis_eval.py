"""YouTube-VIS video mAP with the semantics of the official ``YTVOSeval`` (youtubevos/cocoapi).

Re-implemented on NumPy + ``pycocotools.mask`` (no vendored cocoapi fork):

* video IoU(d, g) = sum_t |d_t & g_t| / sum_t |d_t | g_t|; a frame present on one side only adds its
  area to the union; 0 when the union is empty.
* area ranges on a track's mean area over its non-empty frames (GT: the json ``areas`` field, as the
  official code does, falling back to the mask areas): all [0, 1e10], small [0, 128^2],
  medium [128^2, 256^2], large [256^2, 1e10].
* COCO greedy matching per (video, category) at IoU .50:.05:.95, detections sorted by score and cut
  to 100, GT ``ignore`` = ``iscrowd``, 101-point interpolated precision, maxDets 1/10/100;
  categories without GT are excluded from the means.

Speed: each per-frame intersection comes from one ``mask_util.iou`` call per (video, category, frame)
in crowd mode (iou = |d & g| / |d|, so |d & g| = iou * |d|, exact after rounding) -- pycocotools
skips pairs whose boxes do not overlap -- and unions follow from the per-frame areas.
"""
import json
import math
import numbers
import os
import zipfile
from collections import OrderedDict, defaultdict, namedtuple
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_util
from tabulate import tabulate

from ..utils import check_ytvis_json

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
MAX_DETS = (1, 10, 100)
AREA_RANGES = OrderedDict(
    [("all", (0.0, 1e10)), ("small", (0.0, 128.0**2)), ("medium", (128.0**2, 256.0**2)),
     ("large", (256.0**2, 1e10))]
)
METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")
_AREA_BOUNDS = np.array(list(AREA_RANGES.values()))  # (A, 2)

VideoInfo = namedtuple("VideoInfo", ["length", "height", "width"])


@dataclass
class Track:
    """One video-level instance: a GT annotation or a predicted track.

    rles: per frame, a compressed RLE dict (str or bytes counts) or None (absent or empty mask).
    areas: (L,) int64 pixel count per frame, 0 where absent.
    avg_area: mean of the non-zero frame areas (0 if none); decides the area range.
    """

    video_id: int
    category_id: int
    score: float
    iscrowd: bool
    rles: list
    areas: np.ndarray
    avg_area: float


@dataclass
class GroundTruth:
    """An indexed YTVIS split: videos, categories (id -> name) and GT tracks (json order)."""

    videos: dict
    categories: "OrderedDict[int, str]"
    tracks: list
    has_annotations: bool


@dataclass
class YTVISMetrics:
    """Scores in percent (NaN where undefined) and the raw COCO-style arrays.

    precision: (T=10, R=101, K, A=4, M=3), -1 where undefined; recall: (T, K, A, M).
    """

    summary: "OrderedDict[str, float]"
    per_category: "OrderedDict[str, float]"
    precision: np.ndarray
    recall: np.ndarray


# ----------------------------------------------------------------------------------------- loading
def read_json(source, what):
    """Parse ``source`` (a .json path, a .zip holding ``results.json``, or an already loaded object)."""
    if not isinstance(source, (str, os.PathLike)):
        return source
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                if "results.json" not in zf.namelist():
                    raise ValueError(f"{what} zip {path} has no results.json at its root")
                return json.loads(zf.read("results.json"))
        with open(path, "rb") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} file {path} is not valid JSON: {e}") from None


def index_videos(gt_json):
    """video id -> VideoInfo(length, height, width) from the ``videos`` list of a YTVIS json."""
    videos = {}
    for v in gt_json.get("videos") or []:
        length = v["length"] if "length" in v else len(v["file_names"])
        videos[int(v["id"])] = VideoInfo(int(length), int(v["height"]), int(v["width"]))
    if not videos:
        raise ValueError("the ground-truth json has no videos")
    return videos


def _check_rle(seg, info, where, t):
    """Raise ValueError unless ``seg`` is an RLE dict of the video's size with usable counts.

    ``where`` is a message prefix with a ``{t}`` field for the frame index (formatted on error only).
    """
    if not isinstance(seg, dict) or "size" not in seg or "counts" not in seg:
        raise ValueError(f"{where.format(t=t)}: expected an RLE dict with 'size' and 'counts' or null")
    size = seg["size"]
    if (not isinstance(size, (list, tuple)) or len(size) != 2 or size[0] != info.height
            or size[1] != info.width):
        raise ValueError(f"{where.format(t=t)}: RLE size {size} does not match the video size "
                         f"[{info.height}, {info.width}]")
    if not isinstance(seg["counts"], (str, bytes, list)):
        raise ValueError(f"{where.format(t=t)}: RLE counts must be a string or a list of ints")


def _frame_rle(seg, info, where, t, allow_polygons):
    """Compressed RLE (str or bytes counts, as given) of frame ``t``'s segmentation, or None when absent."""
    if not seg:  # None, [] and {} mean "absent", as in the official `if seg`
        return None
    if allow_polygons and isinstance(seg, list):
        return mask_util.merge(mask_util.frPyObjects(seg, info.height, info.width))
    _check_rle(seg, info, where, t)
    if isinstance(seg["counts"], list):
        return mask_util.frPyObjects(seg, info.height, info.width)
    return {"size": [info.height, info.width], "counts": seg["counts"]}


def _make_track(video_id, category_id, score, iscrowd, segs, info, where, allow_polygons,
                area_hint=None):
    """Build a Track; ``area_hint`` (json per-frame areas) overrides the mask areas for avg_area.

    ``where`` names the entry in errors and has a ``{t}`` field for the frame. Compressed RLE dicts
    of the video's size are kept as they are (no copy); a frame area above height x width means
    corrupt counts.
    """
    size = [info.height, info.width]
    rles = [None] * len(segs)
    for t, seg in enumerate(segs):
        if not seg:
            continue
        if type(seg) is dict and type(seg.get("counts")) is str and seg.get("size") == size:
            rles[t] = seg
        else:
            rles[t] = _frame_rle(seg, info, where, t, allow_polygons)
    present = [t for t, r in enumerate(rles) if r is not None]
    areas = np.zeros(len(rles), dtype=np.int64)
    if present:
        areas[present] = mask_util.area([rles[t] for t in present])
        bad = np.flatnonzero((areas < 0) | (areas > info.height * info.width))
        if bad.size:
            raise ValueError(f"{where.format(t=int(bad[0]))}: corrupt RLE counts (mask area "
                             f"{int(areas[bad[0]])} outside [0, {info.height * info.width}])")
    rles = [r if a > 0 else None for r, a in zip(rles, areas)]
    nonzero = areas[areas > 0]
    if area_hint is not None and len(area_hint) == len(segs):
        nonzero = np.array([a for a in area_hint if a], dtype=np.float64)
    avg_area = float(nonzero.mean()) if nonzero.size else 0.0
    return Track(video_id, category_id, float(score), bool(iscrowd), rles, areas, avg_area)


# Compressed RLE counts use the characters chr(48) .. chr(111) ("0" .. "o").
_RLE_CHARS = bytes(range(48, 112))


def _check_counts_alphabet(tracks, where_of):
    """Raise ValueError naming the track and frame if a string RLE has characters outside "0".."o".

    One pass over all strings at once (the common, valid case costs a join and a translate).
    ``where_of(k)`` is the message prefix (with a ``{t}`` field) of ``tracks[k]``.
    """
    strings = [r["counts"] for tr in tracks for r in tr.rles if r is not None and type(r["counts"]) is str]
    if not "".join(strings).encode("latin-1", "replace").translate(None, _RLE_CHARS):
        return
    for k, tr in enumerate(tracks):
        for t, r in enumerate(tr.rles):
            counts = r["counts"] if r is not None else b""
            if type(counts) is str and counts.encode("latin-1", "replace").translate(None, _RLE_CHARS):
                raise ValueError(f"{where_of(k).format(t=t)}: corrupt RLE counts (characters outside "
                                 "'0'..'o' of the COCO compressed RLE alphabet)")


def load_ground_truth(source):
    """Load a YTVIS/OVIS json (path or dict). ``annotations`` may be missing or null.

    Segmentations may be polygons, uncompressed or compressed RLE, or null per frame.
    """
    gt_json = read_json(source, "ground-truth")
    check_ytvis_json(gt_json, os.fspath(source) if isinstance(source, (str, os.PathLike)) else "ground truth")
    try:
        return _parse_ground_truth(gt_json)
    except (KeyError, TypeError) as e:
        raise ValueError(f"malformed ground-truth json: {type(e).__name__} {e}") from None


def _parse_ground_truth(gt_json):
    """GroundTruth from a parsed YTVIS json dict."""
    videos = index_videos(gt_json)
    categories = OrderedDict(
        sorted((int(c["id"]), str(c.get("name", c["id"]))) for c in gt_json.get("categories") or [])
    )
    tracks, ann_ids = [], []
    for i, ann in enumerate(gt_json.get("annotations") or []):
        vid, cat = int(ann["video_id"]), int(ann["category_id"])
        ann_id = ann.get("id", i)
        where = f"ground-truth annotation {ann_id} (video {vid})"
        if vid not in videos:
            raise ValueError(f"{where}: unknown video id")
        if cat not in categories:
            raise ValueError(f"{where}: unknown category id {cat}")
        segs = ann["segmentations"]
        if len(segs) != videos[vid].length:
            raise ValueError(f"{where}: {len(segs)} segmentations for a video of "
                             f"{videos[vid].length} frames")
        tracks.append(_make_track(vid, cat, 1.0, ann.get("iscrowd", 0), segs, videos[vid],
                                  _gt_where(ann_id, vid), True, ann.get("areas")))
        ann_ids.append(ann_id)
    _check_counts_alphabet(tracks, lambda k: _gt_where(ann_ids[k], tracks[k].video_id))
    return GroundTruth(videos, categories, tracks, bool(tracks))


def _gt_where(ann_id, video_id):
    """Error-message prefix for frame ``{t}`` of a ground-truth annotation."""
    return f"ground-truth annotation {ann_id} (video {video_id}, frame {{t}})"


def _check_result(i, r, videos, category_ids):
    """Validate one result entry (its RLEs are checked by ``_make_track``); returns its VideoInfo.
    Raises ValueError naming the video."""
    if not isinstance(r, dict) or not {"video_id", "category_id", "score", "segmentations"} <= set(r):
        raise ValueError(f"result {i}: expected a dict with video_id, category_id, score and "
                         "segmentations")
    vid = r["video_id"]
    if not isinstance(vid, numbers.Integral) or vid not in videos:
        raise ValueError(f"result {i}: video {vid} is not in the ground-truth split")
    info = videos[vid]
    if not isinstance(r["category_id"], numbers.Integral) or r["category_id"] not in category_ids:
        raise ValueError(f"result {i} (video {vid}): unknown category_id {r['category_id']}")
    score = r["score"]
    if (not isinstance(score, numbers.Real) or isinstance(score, bool) or not math.isfinite(score)
            or not 0.0 <= score <= 1.0):
        raise ValueError(f"result {i} (video {vid}): score {score!r} is not a finite number in [0, 1]")
    segs = r["segmentations"]
    if not isinstance(segs, list) or len(segs) != info.length:
        n = len(segs) if isinstance(segs, list) else type(segs).__name__
        raise ValueError(f"result {i} (video {vid}): {n} segmentations for a video of "
                         f"{info.length} frames")
    return info


def _result_where(i, video_id):
    """Error-message prefix for frame ``{t}`` of result entry ``i``."""
    return f"result {i} (video {video_id}, frame {{t}})"


def validate_results(results, gt_json_dict):
    """Check a YTVIS submission against its split; raises ValueError naming the video (and frame).

    Every entry needs a known ``video_id`` and ``category_id``, a finite score in [0, 1] and exactly
    ``length`` segmentations, each null or an RLE of size [height, width] with valid counts.
    """
    load_results(results, load_ground_truth(gt_json_dict))


def load_results(source, gt):
    """Load and validate predictions (path to .json/.zip, or a list) into Tracks for ``gt``.

    RLE counts may be compressed (str/bytes) or uncompressed (list); null frames are absent.
    """
    results = read_json(source, "results")
    if not isinstance(results, list):
        raise ValueError(f"results must be a list of dicts, got {type(results).__name__}")
    tracks = []
    for i, r in enumerate(results):
        info = _check_result(i, r, gt.videos, gt.categories)
        tracks.append(_make_track(r["video_id"], r["category_id"], r["score"], False,
                                  r["segmentations"], info, _result_where(i, r["video_id"]), False))
    _check_counts_alphabet(tracks, lambda k: _result_where(k, tracks[k].video_id))
    return tracks


# -------------------------------------------------------------------------------------- matching
def video_iou(dets, gts):
    """(D, G) video IoU between tracks of one video: sum_t intersection / sum_t union.

    One ``mask_util.iou`` call per frame where both sides have masks.
    """
    d_area = np.stack([d.areas for d in dets]).astype(np.float64)  # (D, L)
    g_area = np.stack([g.areas for g in gts]).astype(np.float64)  # (G, L)
    inter = np.zeros((len(dets), len(gts)))
    det_at, gt_at = _tracks_per_frame(d_area), _tracks_per_frame(g_area)
    crowd = np.ones(len(gts), dtype=np.uint8)
    for t, (di, gi) in enumerate(zip(det_at, gt_at)):
        if not di or not gi:
            continue
        # crowd mode: iou = |d & g| / |d|
        ratio = mask_util.iou([dets[i].rles[t] for i in di], [gts[j].rles[t] for j in gi], crowd[: len(gi)])
        inter[np.ix_(di, gi)] += np.rint(ratio * d_area[di, t, None])
    union = d_area.sum(axis=1)[:, None] + g_area.sum(axis=1)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _tracks_per_frame(areas):
    """For each frame of ``areas`` (N, L), the list of track indices with a mask there."""
    per_frame = [[] for _ in range(areas.shape[1])]
    for i, t in zip(*np.nonzero(areas)):
        per_frame[t].append(int(i))
    return per_frame


def _outside(avg_areas):
    """(A, N) bool: track outside each area range (bounds inclusive)."""
    a = np.asarray(avg_areas, dtype=np.float64)[None, :]
    return (a < _AREA_BOUNDS[:, :1]) | (a > _AREA_BOUNDS[:, 1:])


def _greedy_match(ious, gt_ignore, crowd):
    """COCO greedy matching of score-sorted detections, all area ranges and thresholds at once.

    ious: (D, G); gt_ignore: (A, G); crowd: (G,). Each detection takes the still-free GT with the
    highest IoU >= threshold (ties -> last GT, as in cocoapi), non-ignored GT first; crowd GT stay free.
    Returns matched, ignored: (A, T, D) bool.
    """
    num_dets, num_gts = ious.shape
    shape = (gt_ignore.shape[0], IOU_THRESHOLDS.size)
    taken = np.zeros(shape + (num_gts,), dtype=bool)
    matched = np.zeros(shape + (num_dets,), dtype=bool)
    ignored = np.zeros_like(matched)
    regular_gt = ~gt_ignore[:, None, :]
    above = ious[:, None, :] >= IOU_THRESHOLDS[None, :, None]  # (D, T, G)
    for d in range(num_dets):
        cand = above[d][None] & ~taken
        regular = cand & regular_gt
        pool = np.where(regular.any(axis=-1, keepdims=True), regular, cand)
        a_idx, t_idx = np.nonzero(pool.any(axis=-1))
        if a_idx.size == 0:
            continue
        best = np.where(pool[a_idx, t_idx], ious[d], -1.0)
        g_idx = num_gts - 1 - np.argmax(best[:, ::-1], axis=1)
        matched[a_idx, t_idx, d] = True
        ignored[a_idx, t_idx, d] = gt_ignore[a_idx, g_idx]
        keep = ~crowd[g_idx]
        taken[a_idx[keep], t_idx[keep], g_idx[keep]] = True
    return matched, ignored


@dataclass
class _PairEval:
    """Matching of one (video, category): scores (D,) sorted, matched/ignored (A, T, D), gt_ignore (A, G)."""

    scores: np.ndarray
    matched: np.ndarray
    ignored: np.ndarray
    gt_ignore: np.ndarray


def _evaluate_pair(dets, gts):
    """Sort/truncate the detections of one (video, category) and match them to its GT tracks."""
    order = np.argsort([-d.score for d in dets], kind="mergesort")[: MAX_DETS[-1]]
    dets = [dets[i] for i in order]
    crowd = np.array([g.iscrowd for g in gts], dtype=bool)
    gt_ignore = crowd[None, :] | _outside([g.avg_area for g in gts])
    shape = (len(AREA_RANGES), IOU_THRESHOLDS.size, len(dets))
    if dets and gts:
        matched, ignored = _greedy_match(video_iou(dets, gts), gt_ignore, crowd)
    else:
        matched, ignored = np.zeros(shape, dtype=bool), np.zeros(shape, dtype=bool)
    ignored |= ~matched & _outside([d.avg_area for d in dets])[:, None, :]
    return _PairEval(np.array([d.score for d in dets], dtype=np.float64), matched, ignored, gt_ignore)


# ------------------------------------------------------------------------------------ accumulate
def _pr_curve(matched, ignored, num_gt):
    """Interpolated precision (T, R) and final recall (T,) from score-sorted matches (T, n)."""
    tp = np.cumsum(matched & ~ignored, axis=1, dtype=np.float64)
    fp = np.cumsum(~matched & ~ignored, axis=1, dtype=np.float64)
    num = tp.shape[1]
    precision = np.zeros((tp.shape[0], RECALL_THRESHOLDS.size))
    if num == 0:
        return precision, np.zeros(tp.shape[0])
    rc = tp / num_gt
    pr = np.maximum.accumulate((tp / (tp + fp + np.spacing(1)))[:, ::-1], axis=1)[:, ::-1]
    for t in range(tp.shape[0]):
        idx = np.searchsorted(rc[t], RECALL_THRESHOLDS, side="left")
        valid = idx < num
        precision[t, valid] = pr[t, idx[valid]]
    return precision, rc[:, -1]


def _accumulate(pairs_by_category, category_ids):
    """precision (T, R, K, A, M) and recall (T, K, A, M), -1 where a category has no GT in range."""
    num_t, num_a = IOU_THRESHOLDS.size, len(AREA_RANGES)
    precision = -np.ones((num_t, RECALL_THRESHOLDS.size, len(category_ids), num_a, len(MAX_DETS)))
    recall = -np.ones((num_t, len(category_ids), num_a, len(MAX_DETS)))
    for k, cat in enumerate(category_ids):
        pairs = pairs_by_category.get(cat, [])
        for a in range(num_a):
            num_gt = sum(int(np.count_nonzero(~p.gt_ignore[a])) for p in pairs)
            if num_gt == 0:
                continue
            for m, max_det in enumerate(MAX_DETS):
                scores = np.concatenate([p.scores[:max_det] for p in pairs])
                order = np.argsort(-scores, kind="mergesort")
                matched = np.concatenate([p.matched[a, :, :max_det] for p in pairs], axis=1)
                ignored = np.concatenate([p.ignored[a, :, :max_det] for p in pairs], axis=1)
                precision[:, :, k, a, m], recall[:, k, a, m] = _pr_curve(
                    matched[:, order], ignored[:, order], num_gt)
    return precision, recall


def _mean_percent(values):
    """100 * mean of the defined (> -1) entries, NaN when there are none."""
    valid = values[values > -1]
    return float(valid.mean()) * 100.0 if valid.size else float("nan")


def _summarize(precision, recall):
    """The nine reported metrics (percent) in METRIC_NAMES order."""
    all_, small, medium, large = range(4)
    return OrderedDict([
        ("AP", _mean_percent(precision[:, :, :, all_, 2])),
        ("AP50", _mean_percent(precision[0, :, :, all_, 2])),
        ("AP75", _mean_percent(precision[5, :, :, all_, 2])),
        ("APs", _mean_percent(precision[:, :, :, small, 2])),
        ("APm", _mean_percent(precision[:, :, :, medium, 2])),
        ("APl", _mean_percent(precision[:, :, :, large, 2])),
        ("AR1", _mean_percent(recall[:, :, all_, 0])),
        ("AR10", _mean_percent(recall[:, :, all_, 1])),
        ("AR100", _mean_percent(recall[:, :, all_, 2])),
    ])


def evaluate(gt, detections):
    """Score ``detections`` (list of Track) against ``gt`` (GroundTruth) -> YTVISMetrics."""
    if not gt.has_annotations:
        raise ValueError("the ground truth has no annotations; there is nothing to score against")
    groups = defaultdict(lambda: ([], []))
    for d in detections:
        groups[d.video_id, d.category_id][0].append(d)
    for g in gt.tracks:
        groups[g.video_id, g.category_id][1].append(g)
    pairs_by_category = defaultdict(list)
    for key in sorted(groups):  # video-id order inside each category, as in cocoapi
        pairs_by_category[key[1]].append(_evaluate_pair(*groups[key]))
    category_ids = list(gt.categories)
    precision, recall = _accumulate(pairs_by_category, category_ids)
    per_category = OrderedDict(
        (gt.categories[c], _mean_percent(precision[:, :, k, 0, 2])) for k, c in enumerate(category_ids)
    )
    return YTVISMetrics(_summarize(precision, recall), per_category, precision, recall)


def evaluate_ytvis(gt_source, results_source):
    """Convenience: load GT (path/dict) and results (path/zip/list), then evaluate."""
    gt = load_ground_truth(gt_source)
    return evaluate(gt, load_results(results_source, gt))


# ---------------------------------------------------------------------------------------- tables
def summary_table(metrics):
    """One-row table of the nine metrics (percent, 'nan' where undefined)."""
    return tabulate([[f"{v:.3f}" for v in metrics.summary.values()]], headers=list(metrics.summary),
                    tablefmt="pipe", numalign="left", stralign="center")


def per_category_table(metrics, columns=3):
    """Per-category AP table laid out in ``columns`` (name, AP) column pairs."""
    cells = [x for name, ap in metrics.per_category.items() for x in (name, f"{ap:.3f}")]
    rows = [cells[i: i + 2 * columns] for i in range(0, len(cells), 2 * columns)]
    return tabulate(rows, headers=["category", "AP"] * columns, tablefmt="pipe", numalign="left")
