"""YTVISEvaluator: id mapping, submission files, validation, splits without GT."""
import json
import logging
import math
import uuid
import zipfile

import numpy as np
import pytest
from detectron2.data import MetadataCatalog
from detectron2.evaluation import print_csv_format
from pycocotools import mask as mask_util

from iai_d2.evaluation import YTVISEvaluator, validate_results

H, W = 48, 64
BOX = (4, 14, 6, 26)  # 10 x 20 = 200 px


def rle(box, h=H, w=W, as_bytes=False):
    """Compressed RLE of a rectangle (rows y0:y1, cols x0:x1)."""
    m = np.zeros((h, w), dtype=np.uint8, order="F")
    m[box[0]: box[1], box[2]: box[3]] = 1
    r = mask_util.encode(m)
    return r if as_bytes else {"size": [h, w], "counts": r["counts"].decode("ascii")}


def write_split(tmp_path, with_annotations=True):
    """Two 3-frame videos (ids 11, 12), dataset category ids 5 ("cat") and 9 ("dog")."""
    gt = {"videos": [{"id": v, "length": 3, "height": H, "width": W,
                      "file_names": [f"{v}/{t}.jpg" for t in range(3)]} for v in (11, 12)],
          "categories": [{"id": 5, "name": "cat"}, {"id": 9, "name": "dog"}]}
    if with_annotations:
        gt["annotations"] = [
            {"id": 1, "video_id": 11, "category_id": 9, "iscrowd": 0, "segmentations": [rle(BOX)] * 3,
             "areas": [200] * 3},
            {"id": 2, "video_id": 12, "category_id": 5, "iscrowd": 0,
             "segmentations": [None, rle(BOX), rle(BOX)], "areas": [None, 200, 200]},
        ]
    path = tmp_path / "valid.json"
    path.write_text(json.dumps(gt))
    name = f"test_ytvis_{uuid.uuid4().hex}"
    MetadataCatalog.get(name).set(json_file=str(path), thing_dataset_id_to_contiguous_id={5: 0, 9: 1},
                                  thing_classes=["cat", "dog"], evaluator_type="ytvis")
    return name, gt


def perfect_outputs():
    """Model outputs (INTERFACES section 3) with contiguous ids: dog = 1, cat = 0."""
    return [
        {"video_id": 11, "length": 3, "height": H, "width": W,
         "predictions": [{"score": 0.9, "category_id": 1, "segmentations": [rle(BOX, as_bytes=True)] * 3}]},
        {"video_id": 12, "length": 3, "height": H, "width": W,
         "predictions": [{"score": 0.8, "category_id": 0, "segmentations": [None, rle(BOX), rle(BOX)]}]},
    ]


def run(evaluator, outputs):
    evaluator.reset()
    for out in outputs:
        evaluator.process([{"video_id": out["video_id"]}], [out])
    return evaluator.evaluate()


def test_process_evaluate_writes_submission_and_scores(tmp_path):
    name, _ = write_split(tmp_path)
    out_dir = tmp_path / "inference"
    results = run(YTVISEvaluator(name, output_dir=str(out_dir)), perfect_outputs())
    assert list(results) == ["segm"]
    segm = results["segm"]
    assert segm["AP"] == pytest.approx(100.0) and segm["AR1"] == pytest.approx(100.0)
    assert segm["AP-cat"] == pytest.approx(100.0) and segm["AP-dog"] == pytest.approx(100.0)
    assert math.isnan(segm["APm"])  # 200 px objects are all small
    print_csv_format(results)

    written = json.loads((out_dir / "results.json").read_text())
    assert [(r["video_id"], r["category_id"]) for r in written] == [(11, 9), (12, 5)]  # dataset ids
    assert written[0]["segmentations"][0] == rle(BOX)  # bytes counts stored as str
    assert written[1]["segmentations"][0] is None
    with zipfile.ZipFile(out_dir / "submission.zip") as zf:
        assert zf.namelist() == ["results.json"]
        assert json.loads(zf.read("results.json")) == written
    assert sorted(p.name for p in out_dir.iterdir()) == ["results.json", "submission.zip"]


def test_missing_video_prediction_is_a_warning(tmp_path, caplog):
    name, _ = write_split(tmp_path)
    with caplog.at_level(logging.WARNING):
        results = run(YTVISEvaluator(name, output_dir=None), perfect_outputs()[:1])
    assert "1 of 2 videos" in caplog.text
    # dog found exactly, cat missed: mean over the two classes
    assert results["segm"]["AP"] == pytest.approx(50.0)


@pytest.mark.parametrize("bad, message", [
    ({"video_id": 99}, "video 99"),
    ({"segmentations": [None, None]}, r"video 11\): 2 segmentations"),
    ({"segmentations": [None, rle(BOX, h=24, w=32), None]}, r"video 11, frame 1\): RLE size \[24, 32\]"),
])
def test_invalid_predictions_raise_and_leave_no_files(tmp_path, bad, message):
    name, _ = write_split(tmp_path)
    out_dir = tmp_path / "inference"
    outputs = perfect_outputs()
    pred = outputs[0]["predictions"][0]
    pred.update({k: v for k, v in bad.items() if k != "video_id"})
    outputs[0].update({k: v for k, v in bad.items() if k == "video_id"})
    with pytest.raises(ValueError, match=message):
        run(YTVISEvaluator(name, output_dir=str(out_dir)), outputs)
    assert not out_dir.exists() or not any(out_dir.iterdir())


def test_unknown_contiguous_category_is_rejected(tmp_path):
    name, _ = write_split(tmp_path)
    outputs = perfect_outputs()
    outputs[1]["predictions"][0]["category_id"] = 7
    with pytest.raises(ValueError, match="video 12: predicted category 7"):
        run(YTVISEvaluator(name), outputs)


def test_split_without_annotations_writes_files_and_returns_empty(tmp_path):
    name, _ = write_split(tmp_path, with_annotations=False)
    out_dir = tmp_path / "inference"
    assert run(YTVISEvaluator(name, output_dir=str(out_dir)), perfect_outputs()) == {}
    with zipfile.ZipFile(out_dir / "submission.zip") as zf:
        assert zf.namelist() == ["results.json"]
    assert len(json.loads((out_dir / "results.json").read_text())) == 2


def test_metadata_must_provide_json_and_id_mapping():
    name = f"test_ytvis_{uuid.uuid4().hex}"
    MetadataCatalog.get(name).set(json_file="x.json")
    with pytest.raises(ValueError, match="thing_dataset_id_to_contiguous_id"):
        YTVISEvaluator(name)


def test_validate_results_checks_scores_and_categories(tmp_path):
    _, gt = write_split(tmp_path)
    good = {"video_id": 11, "category_id": 9, "score": 0.5, "segmentations": [rle(BOX), None, None]}
    validate_results([good], gt)
    validate_results([], gt)
    for field, value, message in [("score", float("nan"), "video 11.*score"), ("score", 1.5, "score"),
                                  ("category_id", 1, "video 11.*category_id 1")]:
        with pytest.raises(ValueError, match=message):
            validate_results([dict(good, **{field: value})], gt)
    with pytest.raises(ValueError, match="list"):
        validate_results({"video_id": 11}, gt)


def test_failed_zip_write_leaves_no_partial_zip(tmp_path, monkeypatch):
    name, _ = write_split(tmp_path)
    out_dir = tmp_path / "inference"

    def broken_writestr(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(zipfile.ZipFile, "writestr", broken_writestr)
    with pytest.raises(OSError, match="disk full"):
        run(YTVISEvaluator(name, output_dir=str(out_dir)), perfect_outputs())
    assert sorted(p.name for p in out_dir.iterdir()) == ["results.json"]  # no zip, no temp file
