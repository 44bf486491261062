"""YouTube-VIS metric: expected values derived by hand from rectangle geometry.

Reminder of the arithmetic used below: with one GT and a single matching detection, precision is
1 at every recall threshold, so AP at an IoU threshold is 1 if the video IoU reaches it and 0 if
not; AP averages the 10 thresholds .50:.05:.95. When a category's GT is only partly found with
precision 1, AP = (#recall thresholds 0, .01, ... <= recall) / 101. Matching and accumulation are
also cross-checked against pycocotools' COCOeval on single-frame videos.
"""
import json
import math
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from iai_d2.evaluation import evaluate_ytvis, load_ground_truth, load_results, per_video_ap, video_iou
from iai_d2.evaluation.__main__ import main as cli_main
from iai_d2.evaluation.ytvis_eval import AREA_RANGES, METRIC_NAMES


def rle(h, w, box):
    """Compressed RLE (str counts) of the rectangle rows [y0, y1) x cols [x0, x1); None if box is None."""
    if box is None:
        return None
    y0, y1, x0, x1 = box
    m = np.zeros((h, w), dtype=np.uint8, order="F")
    m[y0:y1, x0:x1] = 1
    return {"size": [h, w], "counts": mask_util.encode(m)["counts"].decode("ascii")}


def make_gt(videos, annotations, num_categories=3):
    """videos: {vid: (length, h, w)}; annotations: [(vid, cat, [box or None per frame], iscrowd)]."""
    gt = {"videos": [{"id": v, "length": n, "height": h, "width": w,
                      "file_names": [f"{v}/{t}.jpg" for t in range(n)]} for v, (n, h, w) in videos.items()],
          "categories": [{"id": c, "name": f"cat{c}"} for c in range(1, num_categories + 1)],
          "annotations": []}
    for i, (vid, cat, boxes, crowd) in enumerate(annotations):
        _, h, w = videos[vid]
        segs = [rle(h, w, b) for b in boxes]
        areas = [None if b is None else (b[1] - b[0]) * (b[3] - b[2]) for b in boxes]
        gt["annotations"].append({"id": i + 1, "video_id": vid, "category_id": cat, "iscrowd": crowd,
                                  "segmentations": segs, "areas": areas})
    return gt


def det(gt, vid, cat, score, boxes):
    """A result entry for video ``vid`` with one box (or None) per frame."""
    v = next(v for v in gt["videos"] if v["id"] == vid)
    return {"video_id": vid, "category_id": cat, "score": score,
            "segmentations": [rle(v["height"], v["width"], b) for b in boxes]}


def summary(gt, results):
    return evaluate_ytvis(gt, results).summary


ONE_VIDEO = {1: (1, 64, 64)}
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_perfect_predictions_score_100_everywhere():
    videos = {1: (3, 320, 320), 2: (2, 320, 320)}
    small, medium, large = (0, 10, 0, 10), (0, 150, 0, 150), (0, 300, 0, 300)  # 100, 22500, 90000 px
    anns = [(1, 1, [small, (5, 15, 5, 15), None], 0), (1, 2, [medium] * 3, 0), (2, 3, [large, large], 0),
            (2, 1, [None, (50, 60, 50, 60)], 0)]
    gt = make_gt(videos, anns)
    results = [det(gt, vid, cat, 0.9, boxes) for vid, cat, boxes, _ in anns]
    s = summary(gt, results)
    assert list(s) == list(METRIC_NAMES)
    for name in METRIC_NAMES:
        assert s[name] == pytest.approx(100.0), name


@pytest.mark.parametrize("rows, expected_ap", [(38, 60.0), (37, 50.0), (24, 0.0)])
def test_single_prediction_iou_threshold(rows, expected_ap):
    # GT: 50x2 = 100 px; prediction: rows x 2 px inside it -> IoU = 2 * rows / 100 (.76, .74, .48).
    # .76 passes .50-.75 (6 of 10 thresholds), .74 passes .50-.70 (5), .48 none.
    gt = make_gt(ONE_VIDEO, [(1, 1, [(0, 50, 0, 2)], 0)])
    s = summary(gt, [det(gt, 1, 1, 0.8, [(0, rows, 0, 2)])])
    assert s["AP"] == pytest.approx(expected_ap)
    assert s["AR100"] == pytest.approx(expected_ap)
    assert s["AP50"] == pytest.approx(100.0 if rows >= 25 else 0.0)
    assert s["AP75"] == pytest.approx(100.0 if rows >= 38 else 0.0)


def test_video_iou_sums_over_frames():
    # frame 0: GT 10x10 at cols 0-10, pred 10x10 at cols 5-15 -> inter 50, union 150
    # frame 1: GT only (100 px) -> union += 100; frame 2: pred only (6x5 = 30 px) -> union += 30
    gt = make_gt({1: (3, 40, 40)}, [(1, 1, [(0, 10, 0, 10), (0, 10, 0, 10), None], 0)])
    g = load_ground_truth(gt)
    d = load_results([det(gt, 1, 1, 0.5, [(0, 10, 5, 15), None, (20, 26, 20, 25)])], g)
    assert video_iou(d, g.tracks)[0, 0] == pytest.approx(50 / 280)


def test_prediction_missing_a_frame():
    # GT present in 3 frames (100 px each); the prediction is exact on frames 0-1, absent on 2:
    # IoU = 200 / 300 = .667 -> passes .50, .55, .60, .65 -> AP 40.
    boxes = [(0, 10, 0, 10), (2, 12, 2, 12), (4, 14, 4, 14)]
    gt = make_gt({1: (3, 32, 32)}, [(1, 1, boxes, 0)])
    s = summary(gt, [det(gt, 1, 1, 0.9, boxes[:2] + [None])])
    assert s["AP"] == pytest.approx(40.0)


def test_extra_frame_where_gt_is_absent_costs_iou():
    # GT in frames 0-1 only; the prediction also fires on frame 2: IoU = 200 / 300 -> AP 40.
    boxes = [(0, 10, 0, 10), (0, 10, 0, 10), None]
    gt = make_gt({1: (3, 32, 32)}, [(1, 1, boxes, 0)])
    s = summary(gt, [det(gt, 1, 1, 0.9, boxes[:2] + [(20, 30, 20, 30)])])
    assert s["AP"] == pytest.approx(40.0)


def test_track_split_across_two_predictions():
    # GT 3 frames x 100 px. A covers frames 0-1 (IoU 2/3), B frame 2 (IoU 1/3), B scored higher.
    # At .50-.65: B is a FP, then A a TP -> precision [0, .5] -> interpolated .5 everywhere: AP_t = .5.
    # AP = 4 * .5 / 10 = 20; AP50 = 50; AP75 = 0; AR1 = 0 (only B kept); AR10 = AR100 = 4 / 10.
    boxes = [(0, 10, 0, 10)] * 3
    gt = make_gt({1: (3, 32, 32)}, [(1, 1, boxes, 0)])
    s = summary(gt, [det(gt, 1, 1, 0.6, boxes[:2] + [None]), det(gt, 1, 1, 0.9, [None, None, boxes[2]])])
    assert (s["AP"], s["AP50"], s["AP75"]) == pytest.approx((20.0, 50.0, 0.0))
    assert (s["AR1"], s["AR10"], s["AR100"]) == pytest.approx((0.0, 40.0, 40.0))


def test_detections_on_crowd_gt_are_ignored():
    # A crowd region and a normal GT of the same class. Two high-scored detections on the crowd are
    # ignored (a crowd GT may absorb many); the exact detection of the normal GT gives AP 100.
    # Without crowd handling they would be 2 FPs ranked first -> precision 1/3.
    normal, crowd = (0, 10, 0, 10), (30, 50, 30, 50)
    gt = make_gt(ONE_VIDEO, [(1, 1, [normal], 0), (1, 1, [crowd], 1)])
    results = [det(gt, 1, 1, 0.99, [crowd]), det(gt, 1, 1, 0.95, [crowd]), det(gt, 1, 1, 0.5, [normal])]
    s = summary(gt, results)
    assert s["AP"] == pytest.approx(100.0)
    assert s["AR1"] == pytest.approx(0.0)  # the top-1 detection sits on the crowd


def test_empty_results_score_zero():
    gt = make_gt({1: (2, 32, 32), 2: (1, 32, 32)}, [(1, 1, [(0, 10, 0, 10), None], 0), (2, 2, [(0, 5, 0, 5)], 0)])
    s = summary(gt, [])
    for name in ("AP", "AP50", "AP75", "APs", "AR1", "AR10", "AR100"):
        assert s[name] == 0.0, name
    assert math.isnan(s["APm"]) and math.isnan(s["APl"])  # no medium / large GT


def test_video_without_predictions_halves_recall():
    # Two videos with one GT each; only video 1 is predicted (exactly): recall .5 at precision 1.
    # Recall thresholds 0, .01, ..., .50 are reached: AP = 51 / 101.
    box = (0, 10, 0, 10)
    gt = make_gt({1: (1, 32, 32), 2: (1, 32, 32)}, [(1, 1, [box], 0), (2, 1, [box], 0)])
    s = summary(gt, [det(gt, 1, 1, 0.7, [box])])
    assert s["AP"] == pytest.approx(100 * 51 / 101)
    assert s["AR100"] == pytest.approx(50.0)


def test_per_video_ap_scores_each_video_alone():
    # Video 1 predicted exactly, video 2 not at all, video 3 has no GT: 100 / 0 / NaN, where the
    # split's AP is 51 / 101 (test above).
    box = (0, 10, 0, 10)
    gt = make_gt({1: (1, 32, 32), 2: (1, 32, 32), 3: (1, 32, 32)}, [(1, 1, [box], 0), (2, 2, [box], 0)])
    gt_index = load_ground_truth(gt)
    aps = per_video_ap(gt_index, load_results([det(gt, 1, 1, 0.7, [box])], gt_index))
    assert list(aps) == [1, 2, 3]
    assert aps[1] == pytest.approx(100.0) and aps[2] == pytest.approx(0.0) and math.isnan(aps[3])


def test_category_without_gt_is_excluded():
    # Only category 1 has GT. A detection of category 2 neither scores nor hurts category 1.
    box = (0, 10, 0, 10)
    gt = make_gt(ONE_VIDEO, [(1, 1, [box], 0)])
    metrics = evaluate_ytvis(gt, [det(gt, 1, 1, 0.5, [box]), det(gt, 1, 2, 0.9, [box])])
    assert metrics.summary["AP"] == pytest.approx(100.0)
    assert metrics.per_category["cat1"] == pytest.approx(100.0)
    assert math.isnan(metrics.per_category["cat2"]) and math.isnan(metrics.per_category["cat3"])


def test_area_ranges_use_mean_area_over_present_frames():
    # Three single-class videos: small 10x10, medium 150x150, large 300x300. Small and large are found
    # exactly, medium is missed: APs = APl = 100, APm = 0, AP = 67 / 101 (recall 2/3).
    small, medium, large = (0, 10, 0, 10), (0, 150, 0, 150), (0, 300, 0, 300)
    videos = {1: (1, 320, 320), 2: (1, 320, 320), 3: (1, 320, 320)}
    gt = make_gt(videos, [(1, 1, [small], 0), (2, 1, [medium], 0), (3, 1, [large], 0)])
    s = summary(gt, [det(gt, 1, 1, 0.9, [small]), det(gt, 3, 1, 0.8, [large])])
    assert (s["APs"], s["APm"], s["APl"]) == pytest.approx((100.0, 0.0, 100.0))
    assert s["AP"] == pytest.approx(100 * 67 / 101)
    # A 130x130 object (16900 px, medium) present in 1 of 2 frames: mean over present frames keeps it
    # medium (a mean over all frames, 8450, would make it small).
    box = (0, 130, 0, 130)
    gt = make_gt({1: (2, 160, 160)}, [(1, 1, [box, None], 0)])
    s = summary(gt, [det(gt, 1, 1, 0.9, [box, None])])
    assert s["APm"] == pytest.approx(100.0)
    assert math.isnan(s["APs"]) and math.isnan(s["APl"])
    assert AREA_RANGES["medium"] == (128.0**2, 256.0**2)


@pytest.mark.parametrize("num_fp, ap, ar10, ar100", [(10, 100 / 11, 0.0, 100.0), (100, 0.0, 0.0, 0.0)])
def test_max_dets_truncation(num_fp, ap, ar10, ar100):
    # num_fp higher-scored false positives then the exact detection. With 10 FPs the TP is 11th:
    # precision 1/11 at every recall -> AP 100/11, outside the top 10 -> AR10 0. With 100 FPs the TP
    # is 101st and cut by maxDets=100 -> everything 0.
    box, far = (0, 10, 0, 10), (30, 40, 30, 40)
    gt = make_gt(ONE_VIDEO, [(1, 1, [box], 0)])
    results = [det(gt, 1, 1, 0.99 - 0.001 * i, [far]) for i in range(num_fp)] + [det(gt, 1, 1, 0.5, [box])]
    s = summary(gt, results)
    assert (s["AP"], s["AR10"], s["AR100"], s["AR1"]) == pytest.approx((ap, ar10, ar100, 0.0))


def test_input_formats_polygons_uncompressed_rle_and_null_frames():
    # GT: polygon on frame 0, uncompressed RLE on frame 1, compressed RLE on frame 2, null on 3.
    h, w = 32, 32
    poly = [[2.0, 2.0, 20.0, 2.0, 20.0, 12.0, 2.0, 12.0]]
    m0 = mask_util.decode(mask_util.merge(mask_util.frPyObjects(poly, h, w)))
    m1 = np.zeros((h, w), dtype=np.uint8, order="F")
    m1[5:15, 5:20] = 1
    flat = m1.flatten(order="F")
    run_starts = np.flatnonzero(np.diff(flat, prepend=0))  # column-major pixels where the value flips
    uncompressed = {"size": [h, w], "counts": np.diff(np.concatenate([[0], run_starts, [flat.size]])).tolist()}
    gt = make_gt({1: (4, h, w)}, [])
    gt["annotations"] = [{"id": 1, "video_id": 1, "category_id": 1, "iscrowd": 0,
                          "segmentations": [poly, uncompressed, rle(h, w, (0, 4, 0, 4)), None]}]
    enc0 = mask_util.encode(np.asfortranarray(m0))
    results = [{"video_id": 1, "category_id": 1, "score": 0.5,
                "segmentations": [enc0, uncompressed, rle(h, w, (0, 4, 0, 4)), None]}]  # bytes / list / str
    g = load_ground_truth(gt)
    assert g.tracks[0].areas.tolist() == [int(m0.sum()), 150, 16, 0]
    assert summary(gt, results)["AP"] == pytest.approx(100.0)
    assert load_results(results, g)[0].avg_area == pytest.approx((m0.sum() + 150 + 16) / 3)


def test_ground_truth_without_annotations():
    gt = make_gt(ONE_VIDEO, [])
    del gt["annotations"]
    assert not load_ground_truth(gt).has_annotations
    gt["annotations"] = None  # OVIS style
    with pytest.raises(ValueError, match="no annotations"):
        evaluate_ytvis(gt, [])


def test_invalid_results_raise_clear_errors():
    gt = make_gt({1: (2, 32, 32)}, [(1, 1, [(0, 4, 0, 4), None], 0)])
    good = det(gt, 1, 1, 0.5, [(0, 4, 0, 4), None])
    with pytest.raises(ValueError, match="video 7"):
        evaluate_ytvis(gt, [dict(good, video_id=7)])
    with pytest.raises(ValueError, match="1 segmentations"):
        evaluate_ytvis(gt, [dict(good, segmentations=good["segmentations"][:1])])
    with pytest.raises(ValueError, match=r"video 1, frame 0\): RLE size"):
        evaluate_ytvis(gt, [dict(good, segmentations=[rle(16, 16, (0, 4, 0, 4)), None])])


def test_matches_pycocotools_cocoeval_on_single_frame_videos():
    # Independent cross-check: with one frame per video, video mAP is COCO segm mAP with the YTVIS
    # area ranges (non-crowd GT), so pycocotools' COCOeval must agree on every number.
    rng = np.random.default_rng(0)
    h, w = 400, 400
    videos = {v: (1, h, w) for v in range(1, 13)}
    anns, results = [], []
    for vid in videos:
        for _ in range(rng.integers(1, 4)):
            y0, x0 = rng.integers(0, 100, size=2)
            size = rng.integers(5, 300, size=2)
            box = (int(y0), int(y0 + size[0]), int(x0), int(x0 + size[1]))
            anns.append((vid, int(rng.integers(1, 4)), [box], 0))
        for _ in range(rng.integers(0, 12)):
            y0, x0 = rng.integers(0, 100, size=2)
            size = rng.integers(5, 300, size=2)
            results.append((vid, int(rng.integers(1, 4)), float(rng.random()),
                            (int(y0), int(y0 + size[0]), int(x0), int(x0 + size[1]))))
    for vid, cat, boxes, _ in anns[::2]:  # near-copies of half of the GT
        y0, y1, x0, x1 = boxes[0]
        results.append((vid, cat, float(rng.random()), (y0 + 2, y1, x0, x1 + 3)))
    gt = make_gt(videos, anns)
    ours = evaluate_ytvis(gt, [det(gt, v, c, s, [b]) for v, c, s, b in results]).summary

    coco = COCO()
    coco.dataset = {
        "images": [{"id": v, "height": h, "width": w} for v in videos],
        "categories": gt["categories"],
        "annotations": [{"id": a["id"], "image_id": a["video_id"], "category_id": a["category_id"],
                         "iscrowd": 0, "segmentation": a["segmentations"][0], "area": a["areas"][0],
                         "bbox": list(mask_util.toBbox(a["segmentations"][0]))} for a in gt["annotations"]],
    }
    coco.createIndex()
    dets = coco.loadRes([{"image_id": v, "category_id": c, "score": s, "segmentation": rle(h, w, b)}
                         for v, c, s, b in results])
    ev = COCOeval(coco, dets, "segm")
    ev.params.areaRng = [list(r) for r in AREA_RANGES.values()]
    ev.evaluate()
    ev.accumulate()
    p, r = ev.eval["precision"], ev.eval["recall"]

    def mean(x):
        return 100 * x[x > -1].mean() if (x > -1).any() else float("nan")

    expected = [mean(p[..., 0, 2]), mean(p[0, ..., 0, 2]), mean(p[5, ..., 0, 2]), mean(p[..., 1, 2]),
                mean(p[..., 2, 2]), mean(p[..., 3, 2]), mean(r[..., 0, 0]), mean(r[..., 0, 1]),
                mean(r[..., 0, 2])]
    assert list(ours.values()) == pytest.approx(expected, nan_ok=True)
    assert all(0 < ours[k] < 100 for k in ("AP", "APs", "APm", "APl"))


def _write_case(tmp_path):
    box = (0, 10, 0, 10)
    gt = make_gt({1: (2, 32, 32)}, [(1, 1, [box, box], 0)])
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "results.json"
    gt_path.write_text(json.dumps(gt))
    res_path.write_text(json.dumps([det(gt, 1, 1, 0.9, [box, None])]))  # IoU .5 -> AP 10
    return gt, gt_path, res_path


def test_cli_last_line_is_json(tmp_path, capsys):
    _, gt_path, res_path = _write_case(tmp_path)
    assert cli_main(["--gt", str(gt_path), "--results", str(res_path), "--per-category"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    scores = json.loads(lines[-1])
    assert list(scores) == list(METRIC_NAMES)
    assert (scores["AP"], scores["AP50"], scores["AP75"]) == pytest.approx((10.0, 100.0, 0.0))
    assert scores["APm"] is None and scores["APl"] is None
    assert any("cat1" in line for line in lines[:-1])


def test_cli_reads_submission_zip_as_a_module(tmp_path):
    _, gt_path, res_path = _write_case(tmp_path)
    zip_path = tmp_path / "submission.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.write(res_path, "results.json")
    out = subprocess.run([sys.executable, "-m", "iai_d2.evaluation", "--gt", str(gt_path), "--results",
                          str(zip_path)], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    assert json.loads(out.stdout.strip().splitlines()[-1])["AP"] == pytest.approx(10.0)


def test_cli_errors_exit_2_without_traceback(tmp_path, capsys):
    gt, gt_path, res_path = _write_case(tmp_path)
    assert cli_main(["--gt", str(tmp_path / "missing.json"), "--results", str(res_path)]) == 2
    assert "missing.json" in capsys.readouterr().err
    del gt["annotations"]
    empty_path = tmp_path / "empty.json"
    empty_path.write_text(json.dumps(gt))
    assert cli_main(["--gt", str(empty_path), "--results", str(res_path)]) == 2
    assert "no annotations" in capsys.readouterr().err
    bad_path = tmp_path / "bad.json"
    bad_path.write_text(json.dumps([{"video_id": 1, "category_id": 1, "score": 2.0,
                                     "segmentations": [None, None]}]))
    assert cli_main(["--gt", str(gt_path), "--results", str(bad_path)]) == 2
    err = capsys.readouterr().err
    assert "score" in err and "Traceback" not in err
