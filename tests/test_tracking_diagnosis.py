"""Tracking diagnosis: relabelling (model / IoU-linked / oracle IDs) and identity statistics on
hand-built masks, and one run of tools/analyze_tracking.py on the session's overfit model."""
import json

import numpy as np
import pytest

from iai_d2.inference.relabel import (
    IoULinker,
    as_rles,
    greedy_match,
    iou_link_ids,
    match_to_gt,
    oracle_ids,
    tracking_statistics,
)

H, W = 32, 48


def box(x0, y0, size=8):
    """(H, W) bool mask of a size x size square at (x0, y0)."""
    m = np.zeros((H, W), dtype=bool)
    m[y0: y0 + size, x0: x0 + size] = True
    return m


def frames_of(*frames):
    """Per frame, a list of masks -> per frame (M, H, W) bool arrays."""
    return [np.stack(f) if f else np.zeros((0, H, W), dtype=bool) for f in frames]


def gt_of(*frames):
    """Per frame {gt id: mask} -> per frame {gt id: RLE}."""
    return [{g: as_rles(m[None])[0] for g, m in f.items()} for f in frames]


def test_greedy_match_takes_highest_iou_first_and_each_side_once():
    iou = np.array([[0.6, 0.5], [0.9, 0.05]])
    assert sorted(greedy_match(iou, 0.1)) == [(0, 1), (1, 0)]
    assert greedy_match(iou, 0.95) == []
    assert greedy_match(np.array([[0.5]]), 0.5) == []  # strict
    assert greedy_match(np.array([[0.5]]), 0.5, strict=False) == [(0, 0)]


def test_iou_linking_follows_moving_objects_and_starts_new_ids():
    # Two objects move 2 px per frame (IoU ~0.6); a third appears at frame 2; object A leaves.
    frames = frames_of(
        [box(0, 0), box(30, 20)],
        [box(30 - 2, 20), box(2, 0)],  # order swapped: linking must follow the masks
        [box(28 - 2, 20), box(4, 0), box(20, 2)],
        [box(24, 20)],
    )
    ids = iou_link_ids(frames)
    assert ids[0] == [0, 1]
    assert ids[1] == [1, 0]
    assert ids[2][:2] == [1, 0] and ids[2][2] not in (0, 1)
    assert ids[3] == [1]
    # A threshold above the overlap of a moving object breaks every link.
    assert iou_link_ids(frames, iou_thresh=0.9)[1] == [2, 3]


def test_iou_linker_uses_each_previous_track_once():
    linker = IoULinker()
    assert linker(frames_of([box(10, 10)])[0]) == [0]
    # Two detections overlap the one previous track: the better one continues it.
    ids = linker(frames_of([box(13, 10), box(11, 10)])[0])
    assert ids == [1, 0]


def test_oracle_ids_and_statistics_on_a_perfect_track_a_swap_a_fragment_and_a_false_positive():
    # GT 7: a perfect track. GT 8 and GT 9 cross: at frame 2 the model swaps their ids. GT 5 is
    # fragmented: the model gives it a new id at frame 2. One false positive at frame 1.
    gt = gt_of(
        {7: box(0, 0), 8: box(20, 0), 9: box(30, 0), 5: box(0, 20)},
        {7: box(1, 0), 8: box(22, 0), 9: box(32, 0), 5: box(1, 20)},
        {7: box(2, 0), 8: box(24, 0), 9: box(34, 0), 5: box(2, 20)},
        {7: box(3, 0), 8: box(26, 0), 9: box(36, 0), 5: box(3, 20)},
    )
    dets = frames_of(
        [box(0, 0), box(20, 0), box(30, 0), box(0, 20)],
        [box(1, 0), box(22, 0), box(32, 0), box(1, 20), box(40, 22)],  # + false positive
        [box(2, 0), box(24, 0), box(34, 0), box(2, 20)],
        [box(3, 0), box(26, 0), box(36, 0), box(3, 20)],
    )
    model_ids = [[0, 1, 2, 3], [0, 1, 2, 3, 4], [0, 2, 1, 5], [0, 2, 1, 5]]

    matches = match_to_gt(dets, gt)
    assert matches[0] == {0: 7, 1: 8, 2: 9, 3: 5}
    assert 4 not in matches[1]  # the false positive matches no GT

    oracle = oracle_ids(dets, gt)
    assert oracle[0] == [7, 8, 9, 5] and oracle[3] == [7, 8, 9, 5]
    assert oracle[1][:4] == [7, 8, 9, 5] and oracle[1][4] > 9  # fresh id above every GT id

    stats = tracking_statistics(model_ids, matches)
    assert stats["fragments"] == {7: 1, 8: 2, 9: 2, 5: 2}
    assert stats["id_switches"] == 3  # GT 8 and 9 swap, GT 5 re-born, all at frame 2
    # 4 GT tracks continue over 3 frame pairs: frame 2 has 2 swaps and 1 new id.
    assert (stats["kept"], stats["swap"], stats["new"]) == (9, 2, 1)
    assert sorted(stats["switches"]) == [(2, 5, 3, 5, "new"), (2, 8, 1, 2, "swap"), (2, 9, 2, 1, "swap")]

    perfect = tracking_statistics(oracle, matches)
    assert perfect["id_switches"] == 0 and set(perfect["fragments"].values()) == {1}
    assert (perfect["kept"], perfect["swap"], perfect["new"]) == (12, 0, 0)


def test_switch_is_counted_against_the_last_matched_frame():
    # The GT is missed at frame 1 and comes back with another id at frame 2: one switch, but no
    # continuation (it was not matched in the previous frame).
    gt = gt_of({1: box(0, 0)}, {1: box(0, 0)}, {1: box(0, 0)})
    dets = frames_of([box(0, 0)], [], [box(0, 0)])
    stats = tracking_statistics([[0], [], [3]], match_to_gt(dets, gt))
    assert stats["id_switches"] == 1 and stats["fragments"] == {1: 2}
    assert stats["switches"] == [(2, 1, 0, 3, "new")]
    assert stats["kept"] + stats["swap"] + stats["new"] == 0


def test_duplicate_detection_of_one_object_gets_a_fresh_oracle_id():
    gt = gt_of({3: box(10, 10)})
    dets = frames_of([box(10, 10), box(11, 10)])
    ids = oracle_ids(dets, gt)[0]
    assert ids[0] == 3 and ids[1] != 3


def test_match_to_gt_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="2 frames of detections but 1 of GT"):
        match_to_gt(frames_of([], []), gt_of({}))


def test_analyze_tracking_tool_on_the_overfit_model(
    overfit_model, synthetic_vis_root, run_tool, e2e_settings, tmp_path
):
    out = tmp_path / "diagnosis"
    proc = run_tool(
        "analyze_tracking.py", "--config-file", e2e_settings.config, "--dataset", "synthetic_vis_val",
        "--output", out, *e2e_settings.input_opts, "MODEL.WEIGHTS", overfit_model.weights,
        datasets_root=synthetic_vis_root,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "diagnosis.json").read_text())
    assert result["dataset"] == "synthetic_vis_val" and result["videos"] == 4
    assert list(result["rows"]) == ["model", "iou_link", "oracle"]
    continuations = set()
    for key, row in result["rows"].items():
        for metric in ("AP", "AP50", "AP75", "AR1", "AR10", "HOTA", "DetA", "AssA", "IDF1"):
            assert 0.0 <= row[metric] <= 100.0, (key, metric, row[metric])
        assert row["id_switches"] >= 0 and min(row["kept"], row["swap"], row["new"]) >= 0
        continuations.add(row["kept"] + row["swap"] + row["new"])
        assert (out / key / "submission.zip").is_file() and (out / key / "results.json").is_file()
    # The same detections and GT matches under every labelling: as many continuations each.
    assert len(continuations) == 1
    assert sorted(v["video_id"] for v in result["per_video"]) == [1, 2, 3, 4]
    lost = [v["AP"]["oracle"] - v["AP"]["model"] for v in result["per_video"]]
    assert lost == sorted(lost, reverse=True)  # the report's order: most AP lost to identity first
    page = (out / "report.html").read_text()
    assert page.count('<section class="video"') == 4 and page.count("data:image/jpeg;base64,") == 4 * 6 * 3
    oracle = result["rows"]["oracle"]
    assert oracle["id_switches"] == 0 and oracle["swap"] == 0 and oracle["new"] == 0
    if result["gt_tracks"]:
        assert oracle["fragmentation"] == 1.0
    # Same detections, same GT matches: every labelling has the same returns after a gap.
    assert list(result["reid"]) == ["model", "iou_link"]
    returns = {key: sum(sum(side.values()) for side in counts["all"].values()) for key, counts in result["reid"].items()}
    assert len(set(returns.values())) == 1
    assert list(result["id_head"]) == ["teacher_forced", "inference"]
    assert result["id_head"]["teacher_forced"]["seen"] > 0
    for mode, row in result["id_head"].items():
        if row["seen"]:
            assert 0.0 <= row["prior"] <= 1.0 and 0.0 <= row["accuracy"] <= 1.0, (mode, row)
            assert abs(row["accuracy"] + row["answered_new"] + row["answered_other"] - 1.0) < 1e-9
    table = (out / "diagnosis.md").read_text()
    for name in ("model IDs", "IoU-linked", "oracle", "id_switches", "fragmentation", "teacher-forced memory",
                 "HOTA", "AssA", "IDF1", "gap k", "look-alike"):
        assert name in table and name in proc.stdout


def test_analyze_tracking_tool_missing_weights_is_one_line_error(run_tool, e2e_settings, tmp_path):
    proc = run_tool(
        "analyze_tracking.py", "--config-file", e2e_settings.config, "--output", tmp_path,
        "MODEL.WEIGHTS", tmp_path / "missing.pth", timeout=120,
    )
    assert proc.returncode != 0
    last_line = proc.stderr.strip().splitlines()[-1]
    assert last_line == f"error: MODEL.WEIGHTS {tmp_path / 'missing.pth'} does not exist"
