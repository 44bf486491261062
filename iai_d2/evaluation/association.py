"""
Association metrics of one labelling of a split's per-frame detections: HOTA, DetA, AssA
(Luiten et al., IJCV 2021) and IDF1 (Ristani et al., 2016), computed by TrackEval's metric
classes (``trackeval.metrics.HOTA`` / ``Identity``) on per-sequence data built here in memory.

Scoring is class-agnostic: every GT track and every detection whose max class probability is at
least ``score_thresh`` take part, similarity is mask IoU. AssA isolates identity from detection;
DetA scores the detections alone, HOTA = sqrt(DetA * AssA) averaged over IoU thresholds 0.05 ..
0.95; IDF1 matches whole tracks one to one at IoU >= 0.5.
"""
from typing import Dict, List, Sequence

import numpy as np

from ..inference.relabel import mask_iou

__all__ = ["ASSOCIATION_COLUMNS", "SCORE_THRESH", "association_metrics", "sequence_data"]

ASSOCIATION_COLUMNS = ("HOTA", "DetA", "AssA", "IDF1")
SCORE_THRESH = 0.5  # a detection takes part when its max class probability is at least this


def _contiguous(ids_per_frame: Sequence[Sequence[int]]) -> List[np.ndarray]:
    """Per frame, the ids mapped to 0 .. n-1 (order of first appearance), as int arrays."""
    index: Dict[int, int] = {}
    return [np.array([index.setdefault(i, len(index)) for i in frame], dtype=int)
            for frame in ids_per_frame]


def sequence_data(
    ids: Sequence[Sequence[int]],
    rles: Sequence[Sequence[dict]],
    gt_frames: Sequence[Dict[int, dict]],
    keep: Sequence[Sequence[bool]] = None,
) -> Dict:
    """
    TrackEval's per-sequence data dict of one video.

    Args:
        ids: per frame, the track id of each detection.
        rles: per frame, the detections' RLEs (same order as ``ids``).
        gt_frames: per frame, {GT track id: RLE} of the GT instances present.
        keep: per frame, which detections take part (default: all).
    Returns:
        dict with num_gt_ids, num_tracker_ids, num_gt_dets, num_tracker_dets, gt_ids,
        tracker_ids (per frame, contiguous int arrays) and similarity_scores (per frame,
        (num GT, num detections) mask IoU).
    """
    if not len(ids) == len(rles) == len(gt_frames):
        raise ValueError(f"sequence_data: {len(ids)} frames of ids, {len(rles)} of detections and "
                         f"{len(gt_frames)} of GT")
    keep = keep if keep is not None else [[True] * len(frame) for frame in ids]
    det_ids, det_rles = [], []
    for frame_ids, frame_rles, frame_keep in zip(ids, rles, keep):
        det_ids.append([i for i, k in zip(frame_ids, frame_keep) if k])
        det_rles.append([r for r, k in zip(frame_rles, frame_keep) if k])
    gt_ids = _contiguous([list(gts) for gts in gt_frames])
    tracker_ids = _contiguous(det_ids)
    similarity = [mask_iou([gts[g] for g in gts], frame_rles) for gts, frame_rles in zip(gt_frames, det_rles)]
    return {
        "num_gt_ids": len({int(i) for frame in gt_ids for i in frame}),
        "num_tracker_ids": len({int(i) for frame in tracker_ids for i in frame}),
        "num_gt_dets": sum(len(frame) for frame in gt_ids),
        "num_tracker_dets": sum(len(frame) for frame in tracker_ids),
        "gt_ids": gt_ids,
        "tracker_ids": tracker_ids,
        "similarity_scores": similarity,
    }


def association_metrics(sequences: Sequence[Dict]) -> Dict[str, float]:
    """
    HOTA, DetA, AssA (means over TrackEval's 19 IoU thresholds) and IDF1 of a split, in percent,
    TrackEval combining the sequences (:func:`sequence_data` dicts) as it combines videos.
    """
    from trackeval.metrics import HOTA, Identity

    hota, identity = HOTA(), Identity({"PRINT_CONFIG": False})
    per_seq_hota = {str(k): hota.eval_sequence(data) for k, data in enumerate(sequences)}
    per_seq_id = {str(k): identity.eval_sequence(data) for k, data in enumerate(sequences)}
    combined, combined_id = hota.combine_sequences(per_seq_hota), identity.combine_sequences(per_seq_id)
    out = {name: 100.0 * float(np.mean(combined[name])) for name in ("HOTA", "DetA", "AssA")}
    out["IDF1"] = 100.0 * float(combined_id["IDF1"])
    return out
