"""tools/detection_errors.py: each prediction lands in the right kind on a hand-built image."""
import importlib.util
import json
import os

import numpy as np
from pycocotools import mask as mask_util

TOOL = os.path.join(os.path.dirname(__file__), "..", "tools", "detection_errors.py")


def _tool():
    spec = importlib.util.spec_from_file_location("detection_errors", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _square(y0, x0, size, h=40, w=40):
    m = np.zeros((h, w), dtype=np.uint8, order="F")
    m[y0:y0 + size, x0:x0 + size] = 1
    rle = mask_util.encode(m)
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def test_every_kind_on_a_hand_built_image(tmp_path, capsys):
    gt = {"images": [{"id": 1, "height": 40, "width": 40}],
          "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": _square(0, 0, 10)},
                          {"id": 2, "image_id": 1, "category_id": 2, "segmentation": _square(20, 20, 10)}]}
    results = [
        {"image_id": 1, "category_id": 1, "score": 0.9, "segmentation": _square(0, 0, 10)},   # TP, IoU 1
        {"image_id": 1, "category_id": 1, "score": 0.8, "segmentation": _square(0, 1, 10)},   # duplicate
        {"image_id": 1, "category_id": 1, "score": 0.7, "segmentation": _square(20, 20, 10)},  # wrong class
        {"image_id": 1, "category_id": 2, "score": 0.6, "segmentation": _square(20, 26, 10)},  # IoU 4/16
        {"image_id": 1, "category_id": 2, "score": 0.2, "segmentation": _square(0, 30, 5)},    # background
    ]
    tool = _tool()
    matched = tool.match_images(gt, results)
    counts, tp_iou = tool.classify(matched, 0.5)
    assert counts == {"true positive": 1, "duplicate": 1, "wrong class": 1, "poor localisation": 1,
                      "background": 0}
    assert tp_iou == 1.0
    assert tool.classify(matched, 0.1)[0]["background"] == 1

    paths = [tmp_path / "gt.json", tmp_path / "res.json"]
    for path, obj in zip(paths, (gt, results)):
        path.write_text(json.dumps(obj))
    tool.main(["--gt", str(paths[0]), "--results", str(paths[1]), "--thresholds", "0.5"])
    assert "| >= 0.5  |               1 |" in capsys.readouterr().out


def test_missing_file_is_a_one_line_error(tmp_path):
    import pytest

    with pytest.raises(SystemExit, match=r"error: cannot read .*nope.json"):
        _tool().main(["--gt", str(tmp_path / "nope.json"), "--results", str(tmp_path / "r.json")])
