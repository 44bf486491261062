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

Speed: all RLE strings of a file are decoded together, vectorised with NumPy (``_rle_sums``), for
the frame areas and the exact run-length totals (an RLE whose runs do not cover height x width makes
pycocotools' IoU loop forever); pycocotools' C code parses a string again only where a GT track of
the same category has a mask in that frame, in the single ``mask_util.iou`` call of its video (see
``_intersections``). Anything unusual (polygons, uncompressed or bytes counts, an error to report)
takes the per-track path, which builds the same tracks or names the entry and frame at fault.
"""
import contextlib
import gc
import json
import math
import numbers
import os
import zipfile
from collections import OrderedDict, defaultdict, namedtuple
from dataclasses import dataclass
from itertools import chain, compress
from operator import itemgetter

import numpy as np
from pycocotools import mask as mask_util
from tabulate import tabulate

from ..ytvis_format import check_ytvis_json

try:  # a fast JSON parser (a pinned requirement); the standard library's when it is not installed
    import orjson
except ImportError:
    orjson = None

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
@contextlib.contextmanager
def _gc_paused():
    """Pause Python's cyclic garbage collector (JSON trees and tracks hold no cycles).

    Parsing a results file creates millions of containers, and every collection walks all of them:
    pausing halves the JSON parse and keeps building and scoring from paying for it again.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _loads(raw):
    """Parse JSON bytes with orjson when it is importable (3-4x faster than the standard library on
    a results file), else, or where orjson refuses what the standard library reads (NaN, Infinity,
    integers beyond 64 bits), with ``json``: both accept and reject the same files, and parse every
    number to the same value."""
    if orjson is not None:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw)


def read_json(source, what):
    """Parse ``source`` (a .json path, a .zip holding ``results.json``, or an already loaded object)."""
    if not isinstance(source, (str, os.PathLike)):
        return source
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        with _gc_paused():
            if zipfile.is_zipfile(path):
                with zipfile.ZipFile(path) as zf:
                    if "results.json" not in zf.namelist():
                        raise ValueError(f"{what} zip {path} has no results.json at its root")
                    return _loads(zf.read("results.json"))
            with open(path, "rb") as f:
                return _loads(f.read())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{what} file {path} is not valid JSON: {e}") from None


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
    avg_area = _mean_nonzero(areas if area_hint is None else area_hint)
    return Track(video_id, category_id, float(score), bool(iscrowd), rles, areas, avg_area)


def _mean_nonzero(areas):
    """Mean of the non-zero (and non-null) per-frame areas, 0.0 when there are none."""
    nonzero = np.array([a for a in areas if a], dtype=np.float64)
    return float(nonzero.mean()) if nonzero.size else 0.0


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


# Longest accepted value: 6 characters carry 30 bits, so |value| < 2**29 (pycocotools' own int arithmetic
# is exact there; a valid encoder needs 7 only for frames of 2**29 pixels or more).
_MAX_VALUE_CHARS = 6
# Characters per decoding step: small enough that the step's arrays stay in the CPU caches
_CHUNK_CHARS = 1 << 18


def _rle_totals(counts):
    """(N,) int64 sum of the run lengths of compressed RLE count strings (str or bytes), or -1.

    -1 marks a string that is not a valid encoding: a character outside '0'..'o', a value cut off at
    the end or longer than 6 characters, or a negative run length.
    """
    raw = [c if type(c) is bytes else c.encode("utf-8") for c in counts]
    lens = np.fromiter(map(len, raw), dtype=np.int64, count=len(raw))
    return _rle_sums(np.frombuffer(b"".join(raw), dtype=np.uint8), lens)[0]


def _rle_sums(chars, lens):
    """Run-length totals and mask areas of compressed RLE strings, decoded together with NumPy.

    chars: (C,) uint8, the strings concatenated; lens: (N,) int64 their lengths. Returns (totals,
    areas), both (N,) int64: the sum of all run lengths (-1 where the string is not a valid encoding,
    as in ``_rle_totals``) and of the odd-indexed (foreground) ones, pycocotools' area.

    pycocotools' format (maskApi.c rleFrString): per value, characters c - 48 carry 5 data bits
    (low first) and a continuation bit 0x20; the last character's 0x10 bit sign-extends; from the
    fourth value on, a value is a delta to the count two places back. So the counts of a string are
    running sums along two chains, the odd-indexed values from index 1 and the even-indexed ones
    from index 2 (index 0 stands alone). The values of all strings are numbered together and split
    by the parity of that number into two arrays whose cumulative sums are every chain's running
    sums at once, less the sum before the chain's first value: a string's counts are non-negative
    iff each chain's minimum is at least that base, and its totals are segment sums (reduceat).
    Strings are decoded in steps of about _CHUNK_CHARS characters.
    """
    ends = np.cumsum(lens)
    totals, areas = np.empty(lens.size, dtype=np.int64), np.empty(lens.size, dtype=np.int64)
    s0 = 0
    while s0 < lens.size:
        c0 = int(ends[s0] - lens[s0])
        s1 = max(int(np.searchsorted(ends, c0 + _CHUNK_CHARS, side="right")), s0 + 1)
        totals[s0:s1], areas[s0:s1] = _rle_sums_chunk(chars[c0: int(ends[s1 - 1])], lens[s0:s1])
        s0 = s1
    return totals, areas


def _rle_sums_chunk(chars, lens):
    n = lens.size
    ends = np.cumsum(lens)
    starts = ends - lens
    d = chars - np.uint8(48)  # wraps below "0": >= 64 is outside the alphabet
    bad = np.zeros(n, dtype=bool)
    if d.size and d.max() >= 64:
        outside = np.flatnonzero(d >= 64)
        bad[np.searchsorted(ends, outside, side="right")] = True
        d[outside] = 0
    last = ends[lens > 0] - 1
    bad[lens > 0] |= d[last] >= 32  # value cut off at the end of the string
    d[last] &= 31  # keep a bad string's characters out of the next string's values
    final = d < 32  # the last character of a value
    cont = np.flatnonzero(~final)  # the other characters (few: most values take one)
    top = d[final].view(np.int8)  # (V,) last character of each value: 5 bits, the high one the sign
    top ^= 16
    top -= 16
    num_v = top.size
    v_start = starts - np.searchsorted(cont, starts)  # index of each string's first value
    v_count = np.diff(v_start, append=num_v)
    y = top.astype(np.int64)  # exact for |value| < 2**29
    if cont.size:  # values of several characters: add the low characters, shift the top one
        value = cont - np.arange(cont.size)  # index of the value each continuation character belongs to
        first = np.flatnonzero(np.diff(value, prepend=-1))
        num_low = np.diff(first, append=cont.size)  # continuation characters per multi-char value
        if num_low.max() >= _MAX_VALUE_CHARS:
            bad[np.searchsorted(v_start, value[first][num_low >= _MAX_VALUE_CHARS], side="right") - 1] = True
            num_low = np.minimum(num_low, _MAX_VALUE_CHARS - 1)
        low = (d[cont[first]] & np.uint8(31)).astype(np.int64)
        for k in range(1, int(num_low.max())):
            sel = np.flatnonzero(num_low > k)
            low[sel] |= (d[cont[first[sel] + k]] & np.uint8(31)).astype(np.int64) << (5 * k)
        idx = value[first]
        y[idx] = low + (y[idx] << (5 * num_low))
    nonempty = v_count > 0
    v0 = v_start[nonempty]
    head = np.zeros(n, dtype=np.int64)  # count 0: the first value, outside both chains
    head[nonempty] = y[v0]
    y[v0] = 0
    cols = [np.cumsum(y[0::2]), np.cumsum(y[1::2])]  # running sums of the values by index parity

    def get(idx):
        odd = (idx & 1).astype(bool)
        out = np.empty(idx.size, dtype=np.int64)
        out[~odd], out[odd] = cols[0][idx[~odd] >> 1], cols[1][idx[odd] >> 1]
        return out

    # chain sums before each string: the chain with index 0 starts at 2 (value 0 is zeroed, so the
    # running sum at index 0 is its base); the other starts at 1, its base is the sum just before
    base_same, base_other = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    base_same[nonempty] = get(v0)
    before = v0 > 0
    base_other[np.flatnonzero(nonempty)[before]] = get(v0[before] - 1)
    parity = v_start & 1
    sums, mins, sizes = np.zeros((2, n), dtype=np.int64), np.zeros((2, n), dtype=np.int64), [None, None]
    maxs = np.zeros((2, n), dtype=np.int64)
    check_max = v_count.max(initial=0) >= 1 << 17  # else the totals cannot wrap around int64
    for p, col in enumerate(cols):
        r0 = (v_start - p + 1) // 2  # the string's rows in this parity's array: [r0, r1)
        sizes[p] = (v_start + v_count - p + 1) // 2 - r0
        sel = np.flatnonzero(sizes[p] > 0)
        if sel.size:  # rows of consecutive strings are contiguous: each segment ends at the next one
            sums[p, sel] = np.add.reduceat(col, r0[sel])
            mins[p, sel] = np.minimum.reduceat(col, r0[sel])
            if check_max:
                maxs[p, sel] = np.maximum.reduceat(col, r0[sel])
    rows = np.arange(n)
    same, other = parity, 1 - parity  # the chain holding index 0, 2, 4, ... and the one of 1, 3, ...
    size_same, size_other = np.choose(same, sizes), np.choose(other, sizes)
    areas = sums[other, rows] - size_other * base_other
    totals = head + areas + sums[same, rows] - size_same * base_same
    bad |= head < 0
    bad |= (size_other > 0) & (mins[other, rows] < base_other)
    bad |= mins[same, rows] < base_same
    if check_max:  # a count of 2**32 or more is no pycocotools count either
        bad |= (maxs[other, rows] - base_other >= 1 << 32) | (maxs[same, rows] - base_same >= 1 << 32)
    totals[bad] = -1
    return totals, areas


def _check_counts_totals(tracks, where_of):
    """Raise ValueError naming the track and frame if a compressed RLE's run lengths do not add up
    to height x width (pycocotools' IoU loops forever on such a mask) or do not decode.

    Frames whose mask is empty were dropped already and never reach the IoU.
    """
    keys = [(k, t) for k, tr in enumerate(tracks) for t, r in enumerate(tr.rles) if r is not None]
    if not keys:
        return
    rles = [tracks[k].rles[t] for k, t in keys]
    totals = _rle_totals([r["counts"] for r in rles])
    pixels = np.array([h * w for h, w in (r["size"] for r in rles)], dtype=np.int64)
    bad = np.flatnonzero(totals != pixels)
    if bad.size:
        (k, t), total = keys[bad[0]], int(totals[bad[0]])
        got = "do not decode" if total < 0 else f"sum to {total}"
        raise ValueError(f"{where_of(k).format(t=t)}: corrupt RLE counts (run lengths {got}, not "
                         f"height x width = {int(pixels[bad[0]])})")


class _NotBulk(Exception):
    """Input the bulk track builder does not take; the per-track path builds it or names the error."""


def _bulk_frames(segs_lists, sizes):
    """Areas, RLE lists and mask mean areas of many tracks at once, for the common input.

    segs_lists: per track its list of segmentations; sizes: per track its video's [height, width].
    Accepted: every frame falsy (absent) or a dict whose ``size`` equals the track's size and whose
    ``counts`` is a str that decodes (``_rle_sums``) to non-negative runs summing to height x width.
    Returns (areas, rles, avg_areas): per track an int64 (L,) array, a list (the dict, or None where
    absent or empty) and the mean non-zero area (0 if none), exactly as ``_make_track`` computes them.
    Raises _NotBulk for anything else (nothing is reported from here: the caller falls back to the
    per-track path, which builds the same tracks or raises the error naming entry and frame).
    """
    num = len(segs_lists)
    lens = np.fromiter(map(len, segs_lists), dtype=np.int64, count=num)
    flat = list(chain.from_iterable(segs_lists))
    try:
        present = np.fromiter(map(bool, flat), dtype=bool, count=len(flat))
    except (TypeError, ValueError):
        raise _NotBulk from None
    objs = list(compress(flat, present))
    track_of = np.repeat(np.arange(num), lens)
    areas = np.zeros(len(flat), dtype=np.int64)
    if objs:
        if set(map(type, objs)) != {dict}:
            raise _NotBulk
        try:
            counts = list(map(itemgetter("counts"), objs))
            obj_sizes = list(map(itemgetter("size"), objs))
            joined = "".join(counts)  # TypeError unless every counts is a str
        except (KeyError, TypeError):
            raise _NotBulk from None
        owner = track_of[present]
        distinct = {tuple(size) for size in sizes}
        if len(distinct) == 1 and obj_sizes.count(sizes[0]) != len(obj_sizes):
            raise _NotBulk
        if len(distinct) > 1 and obj_sizes != [sizes[k] for k in owner.tolist()]:
            raise _NotBulk
        if not joined.isascii():
            raise _NotBulk
        pixels = np.array([h * w for h, w in sizes], dtype=np.int64)[owner]
        chars = np.frombuffer(joined.encode("ascii"), dtype=np.uint8)
        totals, obj_areas = _rle_sums(chars, np.fromiter(map(len, counts), dtype=np.int64, count=len(counts)))
        if np.any(totals != pixels):  # also -1: not a valid encoding (alphabet, cut off, negative run)
            raise _NotBulk
        areas[present] = obj_areas
    ends = np.cumsum(lens).tolist()
    starts = [0] + ends[:-1]
    area_list = [areas[a:b] for a, b in zip(starts, ends)]
    # a track keeps its frames as given unless a frame is falsy but not None, or present but empty
    odd = np.zeros(num, dtype=bool)
    odd[track_of[present & (areas == 0)]] = True
    if len(objs) + flat.count(None) != len(flat):
        odd |= [len(segs) - segs.count(None) != n for segs, n in
                zip(segs_lists, np.bincount(track_of[present], minlength=num).tolist())]
    rles = [[r if a > 0 else None for r, a in zip(segs, ar.tolist())] if o else list(segs)
            for segs, ar, o in zip(segs_lists, area_list, odd.tolist())]
    nonzero = areas > 0
    count = np.bincount(track_of[nonzero], minlength=num)
    total = np.bincount(track_of[nonzero], weights=areas[nonzero].astype(np.float64), minlength=num)
    avg = np.divide(total, count, out=np.zeros(num), where=count > 0)  # integer sums: exact, as mean()
    return area_list, rles, avg.tolist()


def _source_name(source, what):
    """The file name errors about ``source`` start with (a path, or ``what`` for loaded objects)."""
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else what


@_gc_paused()
def load_ground_truth(source):
    """Load a YTVIS/OVIS json (path or dict). ``annotations`` may be missing or null.

    Segmentations may be polygons, uncompressed or compressed RLE, or null per frame. Every format
    invariant is checked (``check_ytvis_json``); errors name the file and the offending id.
    """
    gt_json = read_json(source, "ground-truth")
    name = _source_name(source, "ground truth")
    videos = check_ytvis_json(gt_json, name)
    try:
        return _parse_ground_truth(gt_json, videos)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None


def _parse_ground_truth(gt_json, videos):
    """GroundTruth from a parsed YTVIS json dict that passed ``check_ytvis_json`` (which gave
    ``videos``: id -> (length, height, width))."""
    videos = {vid: VideoInfo(*info) for vid, info in videos.items()}
    categories = OrderedDict(
        sorted((c["id"], str(c.get("name", c["id"]))) for c in gt_json.get("categories") or [])
    )
    annotations = gt_json.get("annotations") or []
    try:
        tracks = _gt_tracks_bulk(annotations, videos)
    except (_NotBulk, ValueError):  # the per-track path names the culprit
        tracks = _gt_tracks(annotations, videos)
    return GroundTruth(videos, categories, tracks, bool(tracks))


def _gt_tracks_bulk(annotations, videos):
    """GT tracks through ``_bulk_frames``; raises _NotBulk on input the per-track path must judge."""
    segs_lists = [ann["segmentations"] for ann in annotations]
    sizes = [[videos[ann["video_id"]].height, videos[ann["video_id"]].width] for ann in annotations]
    areas, rles, avg_areas = _bulk_frames(segs_lists, sizes)
    tracks = []
    for ann, ar, rl, avg in zip(annotations, areas, rles, avg_areas):
        if ann.get("areas") is not None:
            avg = _mean_nonzero(ann["areas"])
        tracks.append(Track(ann["video_id"], ann["category_id"], 1.0, bool(ann.get("iscrowd", 0)), rl, ar, avg))
    return tracks


def _gt_tracks(annotations, videos):
    """GT tracks one by one, validating each frame's mask (errors name the annotation and frame)."""
    tracks = []
    for ann in annotations:
        vid = ann["video_id"]
        tracks.append(_make_track(vid, ann["category_id"], 1.0, ann.get("iscrowd", 0), ann["segmentations"],
                                  videos[vid], _gt_where(ann["id"], vid), True, ann.get("areas")))
    ann_ids = [ann["id"] for ann in annotations]
    _check_counts_alphabet(tracks, lambda k: _gt_where(ann_ids[k], tracks[k].video_id))
    _check_counts_totals(tracks, lambda k: _gt_where(ann_ids[k], tracks[k].video_id))
    return tracks


def _gt_where(ann_id, video_id):
    """Error-message prefix for frame ``{t}`` of a ground-truth annotation."""
    return f"annotation id {ann_id} (video id {video_id}, frame {{t}})"


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


@_gc_paused()
def load_results(source, gt):
    """Load and validate predictions (path to .json/.zip, or a list) into Tracks for ``gt``.

    RLE counts may be compressed (str/bytes) or uncompressed (list); null frames are absent.
    """
    results = read_json(source, "results")
    try:
        return _results_bulk(results, gt)
    except ValueError as e:
        raise ValueError(f"{_source_name(source, 'results')}: {e}") from None


def _results_bulk(results, gt):
    """Result tracks through ``_bulk_frames``, or, for any input it does not take, ``_result_tracks``."""
    if not isinstance(results, list):
        raise ValueError(f"results must be a list of dicts, got {type(results).__name__}")
    try:
        infos = [_check_result(i, r, gt.videos, gt.categories) for i, r in enumerate(results)]
        areas, rles, avg_areas = _bulk_frames([r["segmentations"] for r in results],
                                              [[info.height, info.width] for info in infos])
    except (_NotBulk, ValueError):  # the per-track path names the first bad entry and frame
        return _result_tracks(results, gt)
    return [Track(r["video_id"], r["category_id"], float(r["score"]), False, rl, ar, avg)
            for r, ar, rl, avg in zip(results, areas, rles, avg_areas)]


def _result_tracks(results, gt):
    """Result tracks one by one, validating each entry and frame (errors name them)."""
    tracks = []
    for i, r in enumerate(results):
        info = _check_result(i, r, gt.videos, gt.categories)
        tracks.append(_make_track(r["video_id"], r["category_id"], r["score"], False,
                                  r["segmentations"], info, _result_where(i, r["video_id"]), False))
    _check_counts_alphabet(tracks, lambda k: _result_where(k, tracks[k].video_id))
    _check_counts_totals(tracks, lambda k: _result_where(k, tracks[k].video_id))
    return tracks


# -------------------------------------------------------------------------------------- matching
def video_iou(dets, gts):
    """(D, G) video IoU between tracks of one video: sum_t intersection / sum_t union."""
    if not dets or not gts:
        return np.zeros((len(dets), len(gts)))
    rle = next((r for tr in chain(dets, gts) for r in tr.rles if r is not None), None)
    height, width = rle["size"] if rle is not None else (1, 1)
    slots = np.zeros(len(dets), dtype=np.int64), np.zeros(len(gts), dtype=np.int64)
    inter = _intersections(dets, gts, *slots, height, width)
    return _iou_from_intersections(inter, _area_sums(dets), _area_sums(gts))


def _area_sums(tracks):
    """(N,) float64 total mask area of each track."""
    return np.array([float(tr.areas.sum()) for tr in tracks], dtype=np.float64)


def _iou_from_intersections(inter, det_sums, gt_sums):
    """Video IoU from (D, G) intersections and per-track area sums; 0 where the union is empty."""
    union = det_sums[:, None] + gt_sums[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


# (det mask, GT mask) pairs per pycocotools iou call: its result matrix takes 8 bytes per pair
_PAIRS_PER_CALL = 1 << 21


def _intersections(dets, gts, det_slot, gt_slot, height, width):
    """(D, G) float64 sum over frames of |d_t & g_t| for one video's tracks, 0 unless the slots match.

    All masks go to one pycocotools ``iou`` call (per block of frames, to bound its D x G matrix),
    each with its width widened by a key unique to its (frame, slot). pycocotools only compares
    masks whose boxes overlap and whose sizes are equal (other pairs cost a box test and come back
    0 or -1), and an RLE's box and pixels depend on its height and counts alone, so exactly the
    same-frame, same-slot pairs are computed. Masks whose (frame, slot) has nothing on the other
    side are left out. Crowd mode gives iou = |d & g| / |d|, so |d & g| = rint(iou * |d|), exact.
    """
    num_d, num_g = len(dets), len(gts)
    inter = np.zeros(num_d * num_g)
    if num_d and num_g:
        d_area = np.stack([d.areas for d in dets])
        g_area = np.stack([g.areas for g in gts])
        length = d_area.shape[1]
        num_slots = int(max(det_slot.max(), gt_slot.max())) + 1
        g_on = np.zeros((num_slots, length), dtype=bool)
        g_i, g_t = np.nonzero(g_area > 0)
        g_on[gt_slot[g_i], g_t] = True
        d_i, d_t = np.nonzero((d_area > 0) & g_on[det_slot])
        d_on = np.zeros_like(g_on)
        d_on[det_slot[d_i], d_t] = True
        keep = d_on[gt_slot[g_i], g_t]
        g_i, g_t = g_i[keep], g_t[keep]
        for t0, t1 in _frame_blocks(np.bincount(d_t, minlength=length), np.bincount(g_t, minlength=length)):
            d_sel = np.flatnonzero((d_t >= t0) & (d_t < t1))
            g_sel = np.flatnonzero((g_t >= t0) & (g_t < t1))
            if not d_sel.size or not g_sel.size:
                continue
            di, dt = d_i[d_sel], d_t[d_sel]
            gi, gt = g_i[g_sel], g_t[g_sel]
            sizes = [[height, width + k] for k in range(t0 * num_slots, t1 * num_slots)]
            d_keys = ((dt - t0) * num_slots + det_slot[di]).tolist()
            g_keys = ((gt - t0) * num_slots + gt_slot[gi]).tolist()
            d_objs = [{"size": sizes[k], "counts": dets[i].rles[t]["counts"]}
                      for i, t, k in zip(di.tolist(), dt.tolist(), d_keys)]
            g_objs = [{"size": sizes[k], "counts": gts[i].rles[t]["counts"]}
                      for i, t, k in zip(gi.tolist(), gt.tolist(), g_keys)]
            ratio = mask_util.iou(d_objs, g_objs, np.ones(len(g_objs), dtype=np.uint8))
            r, c = np.nonzero(ratio > 0)
            pixels = np.rint(ratio[r, c] * d_area[di[r], dt[r]])
            inter += np.bincount(di[r] * num_g + gi[c], weights=pixels, minlength=num_d * num_g)
    return inter.reshape(num_d, num_g)


def _frame_blocks(d_count, g_count):
    """[t0, t1) frame ranges whose (det masks) x (GT masks) stay within _PAIRS_PER_CALL (or one frame)."""
    blocks, t0, nd, ng = [], 0, 0, 0
    for t, (a, b) in enumerate(zip(d_count.tolist(), g_count.tolist())):
        if t > t0 and (nd + a) * (ng + b) > _PAIRS_PER_CALL:
            blocks.append((t0, t))
            t0, nd, ng = t, 0, 0
        nd, ng = nd + a, ng + b
    blocks.append((t0, len(d_count)))
    return blocks


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
    if num_gts == 1:  # the common case, without the loop: the first detection above takes it
        above = ious[:, 0, None] >= IOU_THRESHOLDS[None, :]  # (D, T)
        if not crowd[0]:
            above &= np.cumsum(above, axis=0) == 1
        matched = np.broadcast_to(above.T[None], shape + (num_dets,)).copy()
        return matched, matched & gt_ignore[:, :, None]
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


def _accumulate(scores, categories, ranks, matched, ignored, num_gt):
    """precision (T, R, K, A, M) and recall (T, K, A, M), -1 where a category has no GT in range.

    Per detection (N,): score, category index, rank in its (video, category) by score; matched and
    ignored (A, T, N), detections in (video, category) order; num_gt (K, A) non-ignored GT tracks.
    Each category's detections are ranked by score, ties in (video, category, rank) order, as the
    stable sort of cocoapi's concatenation in video order does.
    """
    num_k, num_a = num_gt.shape
    num_t = IOU_THRESHOLDS.size
    precision = -np.ones((num_t, RECALL_THRESHOLDS.size, num_k, num_a, len(MAX_DETS)))
    recall = -np.ones((num_t, num_k, num_a, len(MAX_DETS)))
    order = np.lexsort((np.arange(scores.size), -scores, categories))
    bounds = np.searchsorted(categories[order], np.arange(num_k + 1)).tolist()
    for k in range(num_k):
        dets = order[bounds[k]: bounds[k + 1]]
        for m, max_det in enumerate(MAX_DETS):
            sel = dets[ranks[dets] < max_det]
            for a in range(num_a):
                if num_gt[k, a]:
                    precision[:, :, k, a, m], recall[:, k, a, m] = _pr_curve(
                        matched[a][:, sel], ignored[a][:, sel], int(num_gt[k, a]))
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


@_gc_paused()
def evaluate(gt, detections):
    """Score ``detections`` (list of Track) against ``gt`` (GroundTruth) -> YTVISMetrics."""
    if not gt.has_annotations:
        raise ValueError("the ground truth has no annotations; there is nothing to score against")
    category_ids = list(gt.categories)
    cat_index = {c: k for k, c in enumerate(category_ids)}
    groups = defaultdict(lambda: ([], []))
    for d in detections:
        groups[d.video_id, d.category_id][0].append(d)
    for g in gt.tracks:
        groups[g.video_id, g.category_id][1].append(g)

    num_gt = np.zeros((len(category_ids), len(AREA_RANGES)), dtype=np.int64)
    kept, starts, paired = [], [], defaultdict(list)  # paired: video -> groups with dets and GT
    for key in sorted(groups):  # video-id order inside each category, as in cocoapi
        if key[1] not in cat_index:
            continue
        dets, gts = groups[key]
        if gts:
            num_gt[cat_index[key[1]]] += np.count_nonzero(~_gt_ignore(gts), axis=1)
        if not dets:
            continue
        order = np.argsort([-d.score for d in dets], kind="mergesort")[: MAX_DETS[-1]]
        starts.append(len(kept))
        kept.extend(dets[i] for i in order)
        if gts:
            paired[key[0]].append((starts[-1], len(kept), gts))
    group_sizes = np.diff(starts + [len(kept)])

    shape = (len(AREA_RANGES), IOU_THRESHOLDS.size, len(kept))
    matched, ignored = np.zeros(shape, dtype=bool), np.zeros(shape, dtype=bool)
    for vid, pairs in paired.items():
        dets = [d for d0, d1, _ in pairs for d in kept[d0:d1]]
        gts = [g for _, _, g_list in pairs for g in g_list]
        det_slot = np.repeat(np.arange(len(pairs)), [d1 - d0 for d0, d1, _ in pairs])
        gt_slot = np.repeat(np.arange(len(pairs)), [len(g_list) for _, _, g_list in pairs])
        info = gt.videos[vid]
        inter = _intersections(dets, gts, det_slot, gt_slot, info.height, info.width)
        ious = _iou_from_intersections(inter, _area_sums(dets), _area_sums(gts))
        r0 = c0 = 0
        for d0, d1, g_list in pairs:
            r1, c1 = r0 + d1 - d0, c0 + len(g_list)
            crowd = np.array([g.iscrowd for g in g_list], dtype=bool)
            matched[:, :, d0:d1], ignored[:, :, d0:d1] = _greedy_match(
                ious[r0:r1, c0:c1], _gt_ignore(g_list), crowd)
            r0, c0 = r1, c1
    ignored |= ~matched & _outside([d.avg_area for d in kept])[:, None, :]

    scores = np.array([d.score for d in kept], dtype=np.float64)
    categories = np.array([cat_index[d.category_id] for d in kept], dtype=np.int64)
    ranks = np.arange(len(kept)) - np.repeat(np.array(starts, dtype=np.int64), group_sizes)
    precision, recall = _accumulate(scores, categories, ranks, matched, ignored, num_gt)
    per_category = OrderedDict(
        (gt.categories[c], _mean_percent(precision[:, :, k, 0, 2])) for k, c in enumerate(category_ids)
    )
    return YTVISMetrics(_summarize(precision, recall), per_category, precision, recall)


def per_video_ap(gt, detections):
    """{video id: AP (percent)} of each video of ``gt`` scored on its own (``evaluate`` restricted
    to the video's GT tracks and detections: categories absent from the video are left out of
    its mean); NaN for a video without GT tracks."""
    dets, gts = defaultdict(list), defaultdict(list)
    for d in detections:
        dets[d.video_id].append(d)
    for g in gt.tracks:
        gts[g.video_id].append(g)
    aps = OrderedDict()
    for vid, info in gt.videos.items():
        if not gts[vid]:
            aps[vid] = math.nan
            continue
        video_gt = GroundTruth({vid: info}, gt.categories, gts[vid], True)
        aps[vid] = evaluate(video_gt, dets[vid]).summary["AP"]
    return aps


def _gt_ignore(gts):
    """(A, G) bool: GT track ignored in each area range (crowd, or mean area outside the range)."""
    crowd = np.array([g.iscrowd for g in gts], dtype=bool)
    return crowd[None, :] | _outside([g.avg_area for g in gts])


@_gc_paused()  # once for all three steps: the collector is not re-enabled (and run) between them
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
