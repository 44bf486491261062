"""
Re-identification accounting: what identity a GT track gets back when it returns after a gap.

A *return* is a frame where a GT track is matched to a detection (``match_to_gt``) after k >= 1
frames without a match (fully hidden, out of the frame, or missed by the detector) and it had
been matched before the gap. Its outcome is ``kept`` (the id it had at its last matched frame),
``new`` (an id no detection carried in an earlier frame) or ``other`` (an id that already
existed: another track's). Returns are bucketed by k (``GAP_BUCKETS``) and by whether another GT
instance of the same class is visible at the return frame (a look-alike).
"""
from collections import OrderedDict
from typing import Dict, List, Sequence

__all__ = ["GAP_BUCKETS", "OUTCOMES", "gap_bucket", "reid_counts", "returns", "sum_counts"]

# bucket name -> (smallest k, largest k)
GAP_BUCKETS = OrderedDict([("1", (1, 1)), ("2-3", (2, 3)), ("4-7", (4, 7)), (">=8", (8, 10**9))])
OUTCOMES = ("kept", "new", "other")


def gap_bucket(k: int) -> str:
    """The GAP_BUCKETS name of a gap of ``k`` >= 1 frames."""
    for name, (lo, hi) in GAP_BUCKETS.items():
        if lo <= k <= hi:
            return name
    raise ValueError(f"gap_bucket: a gap has k >= 1 frames, got {k}")


def returns(
    ids: Sequence[Sequence[int]],
    matches: Sequence[Dict[int, int]],
    gt_frames: Sequence[Dict[int, dict]],
    gt_categories: Dict[int, int],
) -> List[Dict]:
    """
    The returns of one video under one labelling.

    Args:
        ids: per frame, the track id of each detection.
        matches: per frame, {detection index: GT track id} (:func:`~iai_d2.inference.relabel.match_to_gt`).
        gt_frames: per frame, {GT track id: RLE} of the GT instances present (visible).
        gt_categories: {GT track id: category id}.
    Returns:
        one dict per return, in frame order: gt (track id), frame, gap (k), lookalike (bool),
        outcome (one of OUTCOMES).
    """
    last: Dict[int, tuple] = {}  # GT track -> (frame, id) of its last match
    seen_ids: set = set()  # ids carried by any detection in an earlier frame
    events = []
    for t, (frame_ids, match) in enumerate(zip(ids, matches)):
        for det, gt in match.items():
            track_id = frame_ids[det]
            if gt in last and t - last[gt][0] > 1:
                if track_id == last[gt][1]:
                    outcome = "kept"
                else:
                    outcome = "other" if track_id in seen_ids else "new"
                category = gt_categories[gt]
                lookalike = any(gt_categories[g] == category for g in gt_frames[t] if g != gt)
                events.append(dict(gt=gt, frame=t, gap=t - last[gt][0] - 1, lookalike=lookalike,
                                   outcome=outcome))
            last[gt] = (t, track_id)
        seen_ids.update(frame_ids)
    return events


def reid_counts(events: Sequence[Dict]) -> Dict:
    """{gap bucket: {"lookalike" | "alone": {outcome: count}}} of ``events`` (every cell present)."""
    counts = OrderedDict(
        (bucket, OrderedDict((side, OrderedDict((o, 0) for o in OUTCOMES)) for side in ("alone", "lookalike")))
        for bucket in GAP_BUCKETS
    )
    for e in events:
        counts[gap_bucket(e["gap"])]["lookalike" if e["lookalike"] else "alone"][e["outcome"]] += 1
    return counts


def sum_counts(counts: Sequence[Dict]) -> Dict:
    """Cell-wise sum of :func:`reid_counts` dicts; the totals over buckets under key "all"."""
    total = reid_counts([])
    for c in counts:
        for bucket, sides in c.items():
            if bucket not in GAP_BUCKETS:
                continue
            for side, outcomes in sides.items():
                for o, n in outcomes.items():
                    total[bucket][side][o] += n
    total["all"] = OrderedDict(
        (side, OrderedDict((o, sum(total[b][side][o] for b in GAP_BUCKETS)) for o in OUTCOMES))
        for side in ("alone", "lookalike")
    )
    return total
