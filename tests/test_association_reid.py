"""Association metrics (TrackEval HOTA / DetA / AssA / IDF1) and the re-identification accounting
on hand-built tracks whose values are computed by hand."""
import numpy as np
import pytest

from iai_d2.evaluation.association import association_metrics, sequence_data
from iai_d2.evaluation.reidentification import gap_bucket, reid_counts, returns, sum_counts
from iai_d2.inference.relabel import as_rles, match_to_gt

H, W = 32, 48


def box(x0, y0, size=8):
    m = np.zeros((H, W), dtype=bool)
    m[y0: y0 + size, x0: x0 + size] = True
    return as_rles(m[None])[0]


A, B, C = box(0, 0), box(20, 0), box(0, 20)  # disjoint objects, static: detections equal the GT masks


def test_perfect_tracks_score_100():
    gt = [{1: A, 2: B}] * 4
    seq = sequence_data([[7, 9]] * 4, [[A, B]] * 4, gt)
    assert seq["num_gt_ids"] == seq["num_tracker_ids"] == 2 and seq["num_gt_dets"] == 8
    metrics = association_metrics([seq])
    for name in ("HOTA", "DetA", "AssA", "IDF1"):
        assert metrics[name] == pytest.approx(100.0)


def test_a_swap_halfway_gives_the_hand_computed_assa_and_idf1():
    # Two GT tracks over 4 frames, perfectly detected; their ids swap after frame 1.
    gt = [{1: A, 2: B}] * 4
    ids = [[0, 1], [0, 1], [1, 0], [1, 0]]
    metrics = association_metrics([sequence_data(ids, [[A, B]] * 4, gt)])
    # Each TP pair (gt, id) is matched in 2 of the gt's 4 frames and the id's 4: TPA 2, FNA 2,
    # FPA 2 -> AssA 2 / 6; DetA 1; HOTA sqrt(1/3).
    assert metrics["DetA"] == pytest.approx(100.0)
    assert metrics["AssA"] == pytest.approx(100 / 3)
    assert metrics["HOTA"] == pytest.approx(100 * np.sqrt(1 / 3))
    # IDF1: the best one-to-one track matching keeps 4 of 8 detections: 2 * 4 / (8 + 8).
    assert metrics["IDF1"] == pytest.approx(50.0)


def test_a_missed_track_and_a_filtered_false_positive():
    # GT 1 is found in every frame; GT 2 never; a low-score false positive is left out by ``keep``.
    gt = [{1: A, 2: B}] * 3
    ids = [[0, 5]] * 3
    keep = [[True, False]] * 3
    metrics = association_metrics([sequence_data(ids, [[A, C]] * 3, gt, keep)])
    # DetA = TP / (TP + FN + FP) = 3 / 6; association of the found track is perfect.
    assert metrics["DetA"] == pytest.approx(50.0)
    assert metrics["AssA"] == pytest.approx(100.0)
    assert metrics["IDF1"] == pytest.approx(100 * 2 * 3 / (6 + 3))  # IDTP 3, 6 GT dets, 3 tracker dets
    with_fp = association_metrics([sequence_data(ids, [[A, C]] * 3, gt)])
    assert with_fp["DetA"] == pytest.approx(100 * 3 / 9)


def test_sequence_data_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="frames of ids"):
        sequence_data([[0]], [[A], [A]], [{1: A}])


def test_returns_kept_new_and_other_by_gap_and_lookalike():
    # GT 1 (category 1) and GT 2 (category 1, a look-alike) and GT 3 (category 2).
    cats = {1: 1, 2: 1, 3: 2}
    gt = [
        {1: A, 2: B, 3: C},
        {2: B, 3: C},  # GT 1 hidden (k = 1), look-alike GT 2 in view
        {1: A, 2: B},  # GT 1 back with its id (kept); GT 3 gone
        {1: A},
        {1: A},  # GT 3 absent for frames 2-4 (k = 3)
        {1: A, 3: C},
    ]
    dets = [[A, B, C], [B, C], [A, B], [A], [A], [A, C]]
    ids = [[0, 1, 2], [1, 2], [0, 1], [0], [0], [0, 1]]  # GT 3 comes back with GT 2's id 1: other
    matches = match_to_gt(dets, gt)
    events = returns(ids, matches, gt, cats)
    assert [(e["gt"], e["frame"], e["gap"], e["lookalike"], e["outcome"]) for e in events] == [
        (1, 2, 1, True, "kept"),
        (3, 5, 3, False, "other"),
    ]
    # A new id on return; a detector miss (GT present, not detected) is a gap too.
    dets2 = [[A], [], [A]]
    gt2 = [{1: A}] * 3
    events2 = returns([[0], [], [4]], match_to_gt(dets2, gt2), gt2, {1: 1})
    assert [(e["gap"], e["lookalike"], e["outcome"]) for e in events2] == [(1, False, "new")]

    counts = sum_counts([reid_counts(events), reid_counts(events2)])
    assert counts["1"]["lookalike"]["kept"] == 1 and counts["1"]["alone"]["new"] == 1
    assert counts["2-3"]["alone"]["other"] == 1
    assert counts["all"]["alone"] == {"kept": 0, "new": 1, "other": 1}
    assert sum(n for b in ("1", "2-3", "4-7", ">=8") for s in counts[b].values() for n in s.values()) == 3


def test_gap_buckets():
    assert [gap_bucket(k) for k in (1, 2, 3, 4, 7, 8, 50)] == ["1", "2-3", "2-3", "4-7", "4-7", ">=8", ">=8"]
    with pytest.raises(ValueError):
        gap_bucket(0)
