"""Synthetic moving-shapes generator: determinism, YouTube-VIS layout, occlusion, enter/leave."""
import json
import os
import subprocess
import sys
import time

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest

from iai_d2.data import (
    SYNTHETIC_CATEGORIES,
    SyntheticVideo,
    generate_synthetic_vis,
    load_ytvis_json,
)

SMALL = dict(num_videos=4, num_frames=6, height=48, width=64, occlusion=0.8, num_val_videos=2)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tree(root):
    """Relative path -> bytes of every file under ``root``."""
    files = {}
    for d, _, names in os.walk(root):
        for n in names:
            path = os.path.join(d, n)
            with open(path, "rb") as f:
                files[os.path.relpath(path, root)] = f.read()
    return files


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("synthetic"))
    generate_synthetic_vis(out, seed=0, **SMALL)
    return out


def test_deterministic_by_seed(small_set, tmp_path):
    generate_synthetic_vis(str(tmp_path / "same"), seed=0, **SMALL)
    generate_synthetic_vis(str(tmp_path / "other"), seed=1, **SMALL)
    reference, same, other = _tree(small_set), _tree(tmp_path / "same"), _tree(tmp_path / "other")
    assert reference == same  # identical json and image bytes
    assert reference.keys() == other.keys()
    assert reference["train.json"] != other["train.json"]
    assert reference["train/JPEGImages/train0001/00000.jpg"] != \
        other["train/JPEGImages/train0001/00000.jpg"]


def test_ytvis_layout_and_round_trip(small_set):
    for split, num_videos in (("train", 4), ("valid", 2)):
        with open(os.path.join(small_set, f"{split}.json")) as f:
            data = json.load(f)
        assert [v["id"] for v in data["videos"]] == list(range(1, num_videos + 1))
        assert [c["id"] for c in data["categories"]] == [c["id"] for c in SYNTHETIC_CATEGORIES]
        ann_ids = [a["id"] for a in data["annotations"]]
        assert len(set(ann_ids)) == len(ann_ids) > 0  # valid is annotated too
        image_root = os.path.join(small_set, split, "JPEGImages")
        loaded = load_ytvis_json(os.path.join(small_set, f"{split}.json"), image_root)
        records = {r["video_id"]: r for r in loaded}
        for video in data["videos"]:
            assert video["length"] == len(video["file_names"]) == 6
            image = cv2.imread(os.path.join(image_root, video["file_names"][-1]))
            assert image.shape == (48, 64, 3)
        for ann in data["annotations"]:
            assert 1 <= ann["category_id"] <= len(SYNTHETIC_CATEGORIES) and ann["iscrowd"] == 0
            record = records[ann["video_id"]]
            for t, (segm, bbox, area) in enumerate(zip(ann["segmentations"], ann["bboxes"],
                                                       ann["areas"])):
                assert (segm is None) == (bbox is None) == (area is None)
                loaded = [a for a in record["annotations"][t] if a["id"] == ann["id"]]
                if segm is None:
                    assert loaded == []
                    continue
                assert isinstance(segm["counts"], str) and segm["size"] == [48, 64]
                assert area == int(mask_util.area(segm)) > 0
                assert loaded[0]["segmentation"] == segm and loaded[0]["bbox"] == bbox
                assert loaded[0]["category_id"] == ann["category_id"] - 1


def test_enter_and_leave(small_set):
    with open(os.path.join(small_set, "train.json")) as f:
        data = json.load(f)
    absent = [[s is None for s in a["segmentations"]] for a in data["annotations"]]
    assert any(any(a) and not all(a) for a in absent)  # a track that is absent in some frames
    found = {"enter": False, "leave": False}
    for seed in range(30):
        video = SyntheticVideo(np.random.default_rng(seed), 12, 64, 80, occlusion=0.0)
        in_frame = np.stack([video.render(t)[2].any(axis=(1, 2)) for t in range(12)], axis=1)
        found["enter"] |= bool(np.any(~in_frame[:, 0] & in_frame[:, -1]))
        found["leave"] |= bool(np.any(in_frame[:, 0] & ~in_frame[:, -1]))
    assert found == {"enter": True, "leave": True}


def _boxes_overlap(a, b):
    ya, xa = np.nonzero(a)
    yb, xb = np.nonzero(b)
    return (xa.min() <= xb.max() and xb.min() <= xa.max()
            and ya.min() <= yb.max() and yb.min() <= ya.max())


def test_occlusion(small_set):
    partial = full = False
    for seed in range(15):
        video = SyntheticVideo(np.random.default_rng(seed), 12, 64, 80, occlusion=1.0)
        for t in range(12):
            _, visible, amodal = video.render(t)
            for k in range(len(visible)):
                hidden = amodal[k].sum() - visible[k].sum()
                if hidden > 0 and visible[k].any():
                    others = [j for j in range(len(visible)) if j != k and visible[j].any()]
                    partial |= any(_boxes_overlap(visible[k], visible[j]) for j in others)
                full |= bool(amodal[k].any() and not visible[k].any())  # in frame, fully hidden
    assert partial and full
    # fully hidden frames are None in the json: the generator's first valid video, re-rendered
    with open(os.path.join(small_set, "valid.json")) as f:
        anns = [a for a in json.load(f)["annotations"] if a["video_id"] == 1]
    video = SyntheticVideo(np.random.default_rng([0, 1, 0]), 6, 48, 64, SMALL["occlusion"])
    frames = [video.render(t)[1] for t in range(6)]
    visible_tracks = [k for k in range(len(video.category_ids)) if any(f[k].any() for f in frames)]
    assert [a["category_id"] for a in anns] == [video.category_ids[k] for k in visible_tracks]
    for ann, k in zip(anns, visible_tracks):
        assert [s is None for s in ann["segmentations"]] == [not f[k].any() for f in frames]


def test_occlusion_knob_raises_overlap():
    def hidden_fraction(occlusion):
        hidden = total = 0
        for seed in range(12):
            video = SyntheticVideo(np.random.default_rng(seed), 8, 48, 64, occlusion)
            for t in range(0, 8, 2):
                _, visible, amodal = video.render(t)
                hidden += amodal.sum() - visible.sum()
                total += amodal.sum()
        return hidden / total

    assert hidden_fraction(1.0) > hidden_fraction(0.0)
    with pytest.raises(ValueError, match="occlusion"):
        SyntheticVideo(np.random.default_rng(0), 4, 32, 32, occlusion=1.5)


def test_default_size_is_fast(tmp_path):
    start = time.perf_counter()
    generate_synthetic_vis(str(tmp_path), num_videos=60, num_frames=12, height=128, width=160,
                           seed=0, occlusion=0.5, num_val_videos=0)
    assert time.perf_counter() - start < 30


def test_cli(tmp_path):
    out = tmp_path / "cli"
    subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "make_synthetic_vis.py"), "--out", str(out),
         "--videos", "2", "--frames", "3", "--height", "32", "--width", "40", "--seed", "5",
         "--occlusion", "0.3", "--val-videos", "1"],
        check=True, capture_output=True,
    )
    with open(out / "valid.json") as f:
        assert len(json.load(f)["videos"]) == 1
    assert sorted(os.listdir(out / "train" / "JPEGImages" / "train0002")) == \
        ["00000.jpg", "00001.jpg", "00002.jpg"]
