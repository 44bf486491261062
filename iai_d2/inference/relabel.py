"""
Re-labelling one video's per-frame detections with other track identities, and identity
statistics against ground truth (the tracking diagnosis; NumPy + pycocotools only).

A video's detections are given per frame, either as a bool array (M, H, W) or as a list of M
COCO RLE dicts. Three labellings can be compared on the same detections: the model's own IDs,
greedy mask-IoU linking to the previous frame (:class:`IoULinker`, no learning) and oracle IDs
(:func:`oracle_ids`, every detection gets the ground-truth track it matches).

Matching a detection to ground truth (oracle IDs and statistics) is one-to-one per frame, highest
mask IoU first, and needs IoU >= ``gt_iou_thresh`` (default 0.5, the usual criterion of a correct
detection in COCO and CLEAR-MOT): a detection below it is a false positive whose identity cannot be
right, and a duplicate detection of an already matched object stays unmatched.
"""
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np
import pycocotools.mask as mask_util

__all__ = [
    "IoULinker",
    "as_rles",
    "greedy_match",
    "iou_link_ids",
    "mask_iou",
    "match_to_gt",
    "oracle_ids",
    "tracking_statistics",
]

FrameMasks = Union[np.ndarray, Sequence[dict]]

LINK_IOU_THRESH = 0.1  # IoU linking: a pair links when its mask IoU is strictly above this
GT_IOU_THRESH = 0.5  # a detection is a GT track's when its mask IoU is at least this


def as_rles(masks: FrameMasks) -> List[dict]:
    """One frame's masks, a bool array (M, H, W) or a list of M RLE dicts, as a list of RLEs."""
    if isinstance(masks, np.ndarray):
        if masks.ndim != 3:
            raise ValueError(f"masks must have shape (M, H, W), got {masks.shape}")
        return list(mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8))))
    return list(masks)


def mask_iou(rles_a: Sequence[dict], rles_b: Sequence[dict]) -> np.ndarray:
    """(len(a), len(b)) mask IoU of two lists of same-size RLEs."""
    if not rles_a or not rles_b:
        return np.zeros((len(rles_a), len(rles_b)))
    return np.asarray(mask_util.iou(list(rles_a), list(rles_b), [0] * len(rles_b))).reshape(
        len(rles_a), len(rles_b)
    )


def greedy_match(iou: np.ndarray, thresh: float, strict: bool = True) -> List[Tuple[int, int]]:
    """
    One-to-one matching of rows and columns of ``iou`` (R, C), highest IoU first.

    Args:
        thresh: a pair is eligible when its IoU is > thresh (``strict``) or >= thresh.
    Returns:
        (row, column) pairs; ties are broken by row then column (stable order).
    """
    if iou.size == 0:
        return []
    flat = iou.reshape(-1)
    order = np.argsort(-flat, kind="stable")
    eligible = flat[order] > thresh if strict else flat[order] >= thresh
    used_rows, used_cols, pairs = set(), set(), []
    for idx in order[eligible].tolist():
        row, col = divmod(idx, iou.shape[1])
        if row in used_rows or col in used_cols:
            continue
        used_rows.add(row)
        used_cols.add(col)
        pairs.append((row, col))
    return pairs


class IoULinker:
    """
    Online greedy mask-IoU linking: each frame's detections are matched to the previous frame's
    (highest IoU first, IoU > ``iou_thresh``, each previous track used once); a matched detection
    continues that track, an unmatched one starts a new ID. Nothing is learned or remembered
    beyond the previous frame.
    """

    def __init__(self, iou_thresh: float = LINK_IOU_THRESH):
        self.iou_thresh = iou_thresh
        self._prev_rles: List[dict] = []
        self._prev_ids: List[int] = []
        self._next_id = 0

    def __call__(self, masks: FrameMasks) -> List[int]:
        """Track IDs (>= 0) of the next frame's M detections, in their order."""
        rles = as_rles(masks)
        ids = [-1] * len(rles)
        for row, col in greedy_match(mask_iou(rles, self._prev_rles), self.iou_thresh):
            ids[row] = self._prev_ids[col]
        for i, track_id in enumerate(ids):
            if track_id < 0:
                ids[i] = self._next_id
                self._next_id += 1
        self._prev_rles, self._prev_ids = rles, ids
        return ids


def iou_link_ids(frames: Sequence[FrameMasks], iou_thresh: float = LINK_IOU_THRESH) -> List[List[int]]:
    """Per frame, the IoU-linked track IDs of its detections (see :class:`IoULinker`)."""
    linker = IoULinker(iou_thresh)
    return [linker(masks) for masks in frames]


def match_to_gt(
    frames: Sequence[FrameMasks], gt_frames: Sequence[Dict[int, dict]], iou_thresh: float = GT_IOU_THRESH
) -> List[Dict[int, int]]:
    """
    Args:
        frames: per frame, the detections' masks.
        gt_frames: per frame, {GT track id: RLE} of the (non-crowd) GT instances present.
    Returns:
        per frame, {detection index: GT track id}, one-to-one, IoU >= iou_thresh.
    """
    if len(frames) != len(gt_frames):
        raise ValueError(f"match_to_gt: {len(frames)} frames of detections but {len(gt_frames)} of GT")
    matches = []
    for masks, gts in zip(frames, gt_frames):
        gt_ids = list(gts)
        iou = mask_iou(as_rles(masks), [gts[g] for g in gt_ids])
        matches.append({d: gt_ids[g] for d, g in greedy_match(iou, iou_thresh, strict=False)})
    return matches


def oracle_ids(
    frames: Sequence[FrameMasks], gt_frames: Sequence[Dict[int, dict]], iou_thresh: float = GT_IOU_THRESH
) -> List[List[int]]:
    """
    Per frame, perfect identities: a detection matched to a GT track (:func:`match_to_gt`) gets
    that track's id; every other detection gets a fresh id of its own (above all GT ids).
    """
    matches = match_to_gt(frames, gt_frames, iou_thresh)
    next_id = 1 + max((g for gts in gt_frames for g in gts), default=-1)
    ids = []
    for masks, match in zip(frames, matches):
        frame_ids = []
        for d in range(len(as_rles(masks))):
            if d in match:
                frame_ids.append(match[d])
            else:
                frame_ids.append(next_id)
                next_id += 1
        ids.append(frame_ids)
    return ids


def tracking_statistics(ids: Sequence[Sequence[int]], matches: Sequence[Dict[int, int]]) -> dict:
    """
    Identity statistics of one labelling of a video against its GT matches.

    Args:
        ids: per frame, the track id of each detection.
        matches: per frame, {detection index: GT track id} (:func:`match_to_gt`).
    Returns:
        dict with
          ``id_switches``: frames where a GT track's matched id differs from its id at the
              previous frame where it was matched;
          ``fragments``: {GT track id: number of distinct ids over the frames it is matched};
          ``kept`` / ``swap`` / ``new``: detections matched to a GT track that was also matched
              in the previous frame which keep that frame's id / take an id that already
              existed in an earlier frame / carry an id never seen before;
          ``switches``: one (frame, GT track id, previous id, new id, kind) per ID switch, kind
              "swap" (the new id existed in an earlier frame) or "new".
    """
    last_id: Dict[int, int] = {}  # GT track -> id at its last matched frame
    seen_gt_ids: Dict[int, set] = {}
    prev_match: Dict[int, int] = {}  # GT track -> id, previous frame only
    seen_ids: set = set()  # ids of all earlier frames
    stats = {"id_switches": 0, "kept": 0, "swap": 0, "new": 0}
    switches = []
    for t, (frame_ids, match) in enumerate(zip(ids, matches)):
        cur_match = {}
        for det, gt in match.items():
            track_id = frame_ids[det]
            cur_match[gt] = track_id
            seen_gt_ids.setdefault(gt, set()).add(track_id)
            if gt in last_id and last_id[gt] != track_id:
                stats["id_switches"] += 1
                switches.append((t, gt, last_id[gt], track_id, "swap" if track_id in seen_ids else "new"))
            last_id[gt] = track_id
            if gt in prev_match:
                if track_id == prev_match[gt]:
                    stats["kept"] += 1
                elif track_id in seen_ids:
                    stats["swap"] += 1
                else:
                    stats["new"] += 1
        prev_match = cur_match
        seen_ids.update(frame_ids)
    stats["fragments"] = {gt: len(s) for gt, s in seen_gt_ids.items()}
    stats["switches"] = switches
    return stats
