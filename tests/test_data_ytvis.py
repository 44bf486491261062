"""YouTube-VIS / OVIS json loading, validation, built-in registration (every path convention)
and the train_sub / val_sub splitter."""
import copy
import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from iai_d2.data import (
    OVIS_CATEGORIES,
    YTVIS_2019_CATEGORIES,
    YTVIS_2021_CATEGORIES,
    load_ytvis_json,
    register_all_ytvis,
    register_ytvis_instances,
    split_ytvis_json,
)
from iai_d2.data.datasets import builtin

H, W = 6, 8


def _rle(mask, compressed=True):
    if compressed:
        rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        return {"size": [H, W], "counts": rle["counts"].decode("ascii")}
    flat = mask.astype(np.uint8).flatten(order="F")
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return {"size": [H, W], "counts": np.diff(np.concatenate([[0], changes])).tolist()}


def _box_mask(y0, y1, x0, x1):
    m = np.zeros((H, W), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def _ytvis_dict(with_annotations=True):
    """Two videos (3 and 2 frames); RLE (compressed / uncompressed), polygon and None frames."""
    data = {
        "videos": [
            {"id": 7, "width": W, "height": H, "length": 3,
             "file_names": ["a/00000.jpg", "a/00005.jpg", "a/00010.jpg"]},
            {"id": 9, "width": W, "height": H, "length": 2, "file_names": ["b/0.jpg", "b/1.jpg"]},
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}],
    }
    if with_annotations:
        data["annotations"] = [
            {"id": 5, "video_id": 7, "category_id": 3, "iscrowd": 0,
             "segmentations": [_rle(_box_mask(1, 3, 1, 4)), None,
                               _rle(_box_mask(2, 4, 2, 6), compressed=False)],
             "bboxes": [[1, 1, 3, 2], None, None], "areas": [6, None, 8]},
            {"id": 2, "video_id": 7, "category_id": 1, "iscrowd": 1,
             "segmentations": [None, [[0, 0, 4, 0, 4, 4, 0, 4]], None],
             "bboxes": [None, None, None], "areas": [None, 16, None]},
        ]
    return data


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f)
    return str(path)


def test_load_records(tmp_path):
    json_file = _write(tmp_path / "train.json", _ytvis_dict())
    records = load_ytvis_json(json_file, "/imgs")
    assert [r["video_id"] for r in records] == [7, 9]
    v7, v9 = records
    assert v7["file_names"] == ["/imgs/a/00000.jpg", "/imgs/a/00005.jpg", "/imgs/a/00010.jpg"]
    assert (v7["length"], v7["height"], v7["width"]) == (3, H, W)
    assert v9["annotations"] == [[], []]  # a video without annotations is valid
    frame0, frame1, frame2 = v7["annotations"]
    assert [a["id"] for a in frame0] == [5] and [a["id"] for a in frame1] == [2]
    assert frame0[0]["category_id"] == 1  # dataset id 3 -> contiguous 1 (ids sorted: 1, 3)
    assert frame0[0]["bbox"] == [1, 1, 3, 2] and frame0[0]["bbox_mode"] == BoxMode.XYWH_ABS
    assert frame1[0]["iscrowd"] == 1 and isinstance(frame1[0]["segmentation"], list)
    assert frame1[0]["bbox"] == [0, 0, 4, 4]  # computed from the polygon
    # uncompressed RLE -> compressed with str counts; missing bbox computed from the mask
    seg = frame2[0]["segmentation"]
    assert isinstance(seg["counts"], str)
    np.testing.assert_array_equal(mask_util.decode(seg).astype(bool), _box_mask(2, 4, 2, 6))
    assert frame2[0]["bbox"] == [2, 2, 4, 2]


def test_load_sets_metadata_from_json(tmp_path):
    json_file = _write(tmp_path / "train.json", _ytvis_dict())
    name = "test_data_ytvis_custom"
    register_ytvis_instances(name, {}, json_file, str(tmp_path))
    try:
        assert len(DatasetCatalog.get(name)) == 2
        meta = MetadataCatalog.get(name)
        assert meta.thing_classes == ["cat", "dog"]
        assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 3: 1}
        assert (meta.json_file, meta.evaluator_type) == (json_file, "ytvis")
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_no_annotations(tmp_path):
    ytvis_valid = _write(tmp_path / "valid.json", _ytvis_dict(with_annotations=False))
    ovis = _ytvis_dict(with_annotations=False)
    ovis["annotations"] = None  # OVIS valid / test
    ovis_valid = _write(tmp_path / "annotations_valid.json", ovis)
    for json_file in (ytvis_valid, ovis_valid):
        records = load_ytvis_json(json_file, str(tmp_path))
        assert len(records) == 2 and all("annotations" not in r for r in records)


def _corrupt(data, what):
    video, ann = data["videos"][0], data["annotations"][0]
    if what == "length":
        video["length"] = 4
    elif what in ("segmentations", "bboxes", "areas"):
        ann[what] = ann[what][:2]
    elif what == "category":
        ann["category_id"] = 2
    elif what == "rle_size":
        ann["segmentations"][2]["size"] = [H + 1, W]
    elif what == "video_id":
        ann["video_id"] = 99
    return data


@pytest.mark.parametrize(
    "what, expected",
    [
        ("length", ["video id 7", "3 file_names", "length 4"]),
        ("segmentations", ["video id 7", "annotation id 5", "'segmentations' has 2 entries"]),
        ("bboxes", ["video id 7", "'bboxes'"]),
        ("areas", ["video id 7", "'areas'"]),
        ("category", ["video id 7", "unknown category id 2"]),
        ("rle_size", ["video id 7", "frame 2", f"[{H + 1}, {W}]"]),
        ("video_id", ["unknown video id 99"]),
    ],
)
def test_bad_json_raises(tmp_path, what, expected):
    json_file = _write(tmp_path / "bad.json", _corrupt(_ytvis_dict(), what))
    with pytest.raises(ValueError) as e:
        load_ytvis_json(json_file, str(tmp_path))
    for text in [json_file] + expected:
        assert text in str(e.value)


def test_missing_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_ytvis_json(str(tmp_path / "nope.json"), str(tmp_path))


def test_category_lists():
    assert len(YTVIS_2019_CATEGORIES) == 40 and len(YTVIS_2021_CATEGORIES) == 40
    assert len(OVIS_CATEGORIES) == 25
    for cats in (YTVIS_2019_CATEGORIES, YTVIS_2021_CATEGORIES, OVIS_CATEGORIES):
        assert [c["id"] for c in cats] == list(range(1, len(cats) + 1))
    assert YTVIS_2019_CATEGORIES[0]["name"] == YTVIS_2021_CATEGORIES[25]["name"] == "person"
    names19 = {c["name"] for c in YTVIS_2019_CATEGORIES}
    names21 = {c["name"] for c in YTVIS_2021_CATEGORIES}
    assert names19 - names21 == {"ape", "hand", "owl", "eagle", "sedan"}
    assert names21 - names19 == {"bird", "car", "flying_disc", "squirrel", "whale"}


# ---------------------------------------------------------------- built-in names / layouts

# Path conventions: dataset family -> list of layouts, each {split: (json path, image dir)}.
_LAYOUTS = {
    "ytvis": [
        {s: (f"{{d}}/{o}.json", f"{{d}}/{o}/JPEGImages") for s, o in
         (("train", "train"), ("val", "valid"), ("test", "test"))},
        {s: (f"{{d}}/annotations/instances_{s}_sub.json", f"{{d}}/{s}/JPEGImages")
         for s in ("train", "val", "test")},
        {"train": ("{d}/annotations/instances_train_sub.json", "{d}/train/JPEGImages"),
         "val": ("{d}/annotations/instances_val_sub.json", "{d}/valid/JPEGImages")},
    ],
    "ovis": [
        {s: (f"ovis/annotations/annotations_{o}.json", f"ovis/{o}") for s, o in
         (("train", "train"), ("val", "valid"), ("test", "test"))},
        {s: (f"ovis/annotations/{o}.json", f"ovis/{o}") for s, o in
         (("train", "train"), ("val", "valid"), ("test", "test"))},
        {s: (f"ovis/annotations_{o}.json", f"ovis/{o}") for s, o in
         (("train", "train"), ("val", "valid"))},
    ],
}


@pytest.fixture
def restore_builtin():
    yield
    register_all_ytvis(builtin._root)


def _fake_split(root, json_rel, image_rel, num_classes, annotated, null_annotations=False):
    data = {
        "videos": [{"id": 1, "width": W, "height": H, "length": 1, "file_names": ["v/0.jpg"]}],
        "categories": [{"id": i, "name": f"c{i}"} for i in range(1, num_classes + 1)],
    }
    if annotated:
        data["annotations"] = [{"id": 1, "video_id": 1, "category_id": num_classes, "iscrowd": 0,
                                "segmentations": [_rle(_box_mask(0, 2, 0, 2))],
                                "bboxes": [[0, 0, 2, 2]], "areas": [4]}]
    elif null_annotations:
        data["annotations"] = None
    _write(os.path.join(root, json_rel), data)
    os.makedirs(os.path.join(root, image_rel), exist_ok=True)


@pytest.mark.parametrize("family, layout", [(f, i) for f in _LAYOUTS for i in range(3)])
def test_builtin_path_conventions(tmp_path, restore_builtin, family, layout):
    root = str(tmp_path)
    dirs = {"ytvis_2019": YTVIS_2019_CATEGORIES, "ytvis_2021": YTVIS_2021_CATEGORIES} \
        if family == "ytvis" else {"ovis": OVIS_CATEGORIES}
    for dirname, categories in dirs.items():
        for split, (json_rel, image_rel) in _LAYOUTS[family][layout].items():
            _fake_split(root, json_rel.format(d=dirname), image_rel.format(d=dirname),
                        len(categories), split != "test", null_annotations=family == "ovis")
    register_all_ytvis(root)  # registration only; the layout is resolved on load
    for dirname, categories in dirs.items():
        for split, (json_rel, image_rel) in _LAYOUTS[family][layout].items():
            name = f"{dirname}_{split}"
            records = DatasetCatalog.get(name)
            meta = MetadataCatalog.get(name)
            assert meta.json_file == os.path.join(root, json_rel.format(d=dirname))
            assert meta.image_root == os.path.join(root, image_rel.format(d=dirname))
            assert records[0]["file_names"] == [os.path.join(meta.image_root, "v/0.jpg")]
            if split == "test":
                assert "annotations" not in records[0]
            else:  # the last dataset id maps to the last contiguous id
                assert records[0]["annotations"][0][0]["category_id"] == len(categories) - 1


def test_builtin_names_and_missing_layout(tmp_path, restore_builtin):
    register_all_ytvis(str(tmp_path))  # empty root: registering touches no file
    expected = {"ytvis_2019": 40, "ytvis_2021": 40, "ovis": 25, "synthetic_vis": 4}
    for prefix, num_classes in expected.items():
        splits = ("train", "val") if prefix == "synthetic_vis" else ("train", "val", "test")
        for split in splits:
            meta = MetadataCatalog.get(f"{prefix}_{split}")
            assert meta.evaluator_type == "ytvis" and len(meta.thing_classes) == num_classes
            assert len(meta.thing_colors) == num_classes
    with pytest.raises(FileNotFoundError) as e:
        DatasetCatalog.get("ytvis_2019_val")
    for candidate in ("ytvis_2019/valid.json", "ytvis_2019/annotations/instances_val_sub.json"):
        assert os.path.join(str(tmp_path), candidate) in str(e.value)
    with pytest.raises(FileNotFoundError, match="ovis/annotations_test.json"):
        DatasetCatalog.get("ovis_test")


def test_split_ytvis_json(tmp_path, restore_builtin):
    data = _ytvis_dict()
    data["videos"] += [dict(data["videos"][0], id=i) for i in range(10, 18)]
    data["annotations"].append(dict(copy.deepcopy(data["annotations"][0]), id=30, video_id=12))
    src = _write(tmp_path / "ytvis_2019" / "train.json", data)
    out_train = str(tmp_path / "ytvis_2019" / "train_sub.json")
    out_val = str(tmp_path / "ytvis_2019" / "val_sub.json")
    train_ids, val_ids = split_ytvis_json(src, out_train, out_val, val_fraction=0.3, seed=1)
    assert len(val_ids) == 3
    assert sorted(train_ids + val_ids) == sorted(v["id"] for v in data["videos"])
    assert split_ytvis_json(src, out_train, out_val, num_val=3, seed=1) == (train_ids, val_ids)
    for path, ids in ((out_train, train_ids), (out_val, val_ids)):
        with open(path) as f:
            part = json.load(f)
        assert [v["id"] for v in part["videos"]] == ids
        assert {a["video_id"] for a in part["annotations"]} <= set(ids)
        assert part["categories"] == data["categories"]
    os.makedirs(tmp_path / "ytvis_2019" / "train" / "JPEGImages")
    register_all_ytvis(str(tmp_path))
    assert sorted(r["video_id"] for r in DatasetCatalog.get("ytvis_2019_val_sub")) == val_ids
    with pytest.raises(ValueError, match="exactly one"):
        split_ytvis_json(src, out_train, out_val)
    with pytest.raises(ValueError, match="no annotations"):
        unannotated = _write(tmp_path / "v.json", _ytvis_dict(with_annotations=False))
        split_ytvis_json(unannotated, out_train, out_val, num_val=1)
