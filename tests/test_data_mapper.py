"""YTVISClipDatasetMapper (train clips, test-time lazy frames), frame reading errors, loaders."""
import json
import os

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils
from detectron2.data import transforms as T
from detectron2.structures import BoxMode

from iai_d2.config import add_iai_config
from iai_d2.data import (
    YTVISClipDatasetMapper,
    build_clip_train_loader,
    build_video_test_loader,
    load_ytvis_json,
    register_ytvis_instances,
    return_clip_indices,
    sample_clip_indices,
    track_returns,
)

H, W, LENGTH = 32, 48, 8
EMPTY_FRAME = 2  # no annotation: never sampled for training
# track id -> (dataset category id, box rows, box cols, BGR colour, frames present, iscrowd)
TRACKS = {
    4: (1, (4, 12), (2, 14), (0, 0, 255), range(LENGTH), 0),  # left: reveals horizontal flips
    7: (2, (16, 28), (20, 30), (0, 255, 0), range(LENGTH), 0),
    11: (3, (2, 10), (34, 46), (255, 0, 0), range(5), 0),  # leaves after frame 4
    20: (1, (20, 30), (2, 10), (255, 255, 255), range(LENGTH), 1),  # crowd: dropped
}
TRACK_OF_CLASS = {0: 4, 1: 7, 2: 11}  # contiguous class -> track id (one track per class)


@pytest.fixture
def video(tmp_path):
    """A tiny annotated video written as PNG frames + YouTube-VIS json; returns its record."""
    segms = {t: [None] * LENGTH for t in TRACKS}
    frame_dir = tmp_path / "JPEGImages" / "v"
    os.makedirs(frame_dir)
    for f in range(LENGTH):
        image = np.zeros((H, W, 3), dtype=np.uint8)
        for tid, (_, (y0, y1), (x0, x1), colour, frames, _) in TRACKS.items():
            if f in frames and f != EMPTY_FRAME:
                image[y0:y1, x0:x1] = colour
                mask = np.zeros((H, W), dtype=np.uint8, order="F")
                mask[y0:y1, x0:x1] = 1
                rle = mask_util.encode(mask)
                segms[tid][f] = {"size": [H, W], "counts": rle["counts"].decode()}
        cv2.imwrite(str(frame_dir / f"{f:05d}.png"), image)
    data = {
        "videos": [{"id": 1, "height": H, "width": W, "length": LENGTH,
                    "file_names": [f"v/{f:05d}.png" for f in range(LENGTH)]}],
        "annotations": [{"id": tid, "video_id": 1, "category_id": cat, "iscrowd": crowd,
                         "segmentations": segms[tid], "bboxes": [None] * LENGTH}
                        for tid, (cat, _, _, _, _, crowd) in TRACKS.items()],
        "categories": [{"id": i, "name": f"c{i}"} for i in (1, 2, 3)],
    }
    json_file = tmp_path / "train.json"
    json_file.write_text(json.dumps(data))
    return load_ytvis_json(str(json_file), str(tmp_path / "JPEGImages"))[0]


def _cfg(**input_keys):
    cfg = get_cfg()
    add_iai_config(cfg)
    cfg.INPUT.MIN_SIZE_TRAIN = (16, 24, 32)
    cfg.INPUT.MAX_SIZE_TRAIN = 1000
    cfg.INPUT.MIN_SIZE_TEST = 16
    cfg.INPUT.MAX_SIZE_TEST = 1000
    cfg.INPUT.SAMPLING_FRAME_NUM = 3
    cfg.INPUT.SAMPLING_FRAME_RANGE = 2
    cfg.DATALOADER.NUM_WORKERS = 0
    for k, v in input_keys.items():
        setattr(cfg.INPUT, k, v)
    return cfg


def _flipped(instances):
    """Whether the left-side track 4 (class 0) appears on the right half."""
    mask = instances.gt_masks.tensor[instances.gt_classes == 0][0]
    return mask.nonzero()[:, 1].float().mean().item() > mask.shape[1] / 2


def test_clip_sampling():
    candidates = [0, 1, 3, 4, 5, 6, 7]
    rng = np.random.RandomState(0)
    for _ in range(200):
        clip = sample_clip_indices(candidates, 3, 2, rng=rng)
        positions = [candidates.index(i) for i in clip]
        assert all(1 <= b - a <= 2 for a, b in zip(positions, positions[1:]))
    starts = {sample_clip_indices(candidates, 3, 2, rng=rng)[0] for _ in range(200)}
    assert starts == {0, 1, 3, 4, 5}  # uniform start over every position where the clip fits
    assert sample_clip_indices([3, 5], 5, 3, rng=rng) == [3, 3, 3, 5, 5]  # short: repeat in order
    shuffled = [sample_clip_indices(candidates, 3, 2, shuffle=True, rng=rng) for _ in range(50)]
    assert any(c != sorted(c) for c in shuffled)


def test_clips_around_returns(video):
    # Every non-crowd track skips the unannotated frame 2 (track 11 also leaves for good).
    assert track_returns(video["annotations"]) == [(1, 3)] * 3
    rng = np.random.RandomState(0)
    assert {tuple(return_clip_indices(LENGTH, (1, 3), 3, rng)) for _ in range(50)} == {(0, 1, 3), (1, 3, 4)}
    assert return_clip_indices(4, (1, 3), 3, rng) == [0, 1, 3]  # moved to fit the video
    assert return_clip_indices(4, (0, 3), 3, rng) is None  # 2 frames around the return, 3 needed
    mapper = YTVISClipDatasetMapper(_cfg(SAMPLING_RETURN_PROB=1.0), is_train=True)
    for seed in range(10):
        np.random.seed(seed)
        indices = mapper(video)["frame_indices"]
        assert 1 in indices and 3 in indices and EMPTY_FRAME not in indices


def test_train_clip(video):
    mapper = YTVISClipDatasetMapper(_cfg(), is_train=True)
    for seed in range(15):
        np.random.seed(seed)
        out = mapper(video)
        indices = out["frame_indices"]
        assert len(indices) == 3 and indices == sorted(indices) and EMPTY_FRAME not in indices
        assert out["file_names"] == [video["file_names"][i] for i in indices]
        assert (out["video_id"], out["height"], out["width"], out["length"]) == (1, H, W, LENGTH)
        annos = [a for i in indices for a in video["annotations"][i] if not a["iscrowd"]]
        present = sorted({a["id"] for a in annos})
        for image, inst, frame in zip(out["image"], out["instances"], indices):
            assert image.dtype == torch.uint8 and image.shape[1:] == inst.image_size
            track_ids = [TRACK_OF_CLASS[c] for c in inst.gt_classes.tolist()]
            expected = sorted(a["id"] for a in video["annotations"][frame] if not a["iscrowd"])
            assert sorted(track_ids) == expected  # only present, non-crowd instances
            assert inst.gt_ids.tolist() == [present.index(t) for t in track_ids]  # clip slot = rank
            assert inst.gt_masks.tensor.dtype == torch.bool and len(inst.gt_boxes) == len(inst)
            for k, c in enumerate(inst.gt_classes.tolist()):  # image and mask moved together (BGR)
                ys, xs = inst.gt_masks.tensor[k].nonzero().float().mean(0).round().long().tolist()
                colour = TRACKS[TRACK_OF_CLASS[c]][3]
                assert np.abs(image[:, ys, xs].numpy().astype(int) - colour).max() < 40
    first = video["annotations"][0][0]  # the record was not modified
    assert first["bbox_mode"] == BoxMode.XYWH_ABS and isinstance(first["segmentation"], dict)


def test_clip_consistent_augmentation(video):
    augs = [T.ResizeShortestEdge((16, 24, 32), 1000, "choice"), T.RandomFlip()]
    kwargs = dict(augmentations=augs, image_format="BGR", sampling_frame_num=3,
                  sampling_frame_range=2)
    by_clip = YTVISClipDatasetMapper(True, augment_by_clip=True, **kwargs)
    per_frame = YTVISClipDatasetMapper(True, augment_by_clip=False, **kwargs)
    flips, mixed = set(), 0
    for seed in range(20):
        np.random.seed(seed)
        out = by_clip(video)
        assert len({tuple(im.shape) for im in out["image"]}) == 1
        assert len({_flipped(inst) for inst in out["instances"]}) == 1
        flips.add(_flipped(out["instances"][0]))
        out = per_frame(video)
        shapes = {tuple(im.shape) for im in out["image"]}
        mixed += len(shapes) > 1 or len({_flipped(inst) for inst in out["instances"]}) > 1
    assert flips == {True, False} and mixed > 0


def test_from_config_format_and_crowd_only(video):
    np.random.seed(0)
    out = YTVISClipDatasetMapper(_cfg(FORMAT="RGB", RANDOM_FLIP="none"), is_train=True)(video)
    inst = out["instances"][0]
    ys, xs = inst.gt_masks.tensor[inst.gt_classes == 0][0].nonzero().float().mean(0).long().tolist()
    assert out["image"][0][:, ys, xs].tolist()[0] > 200  # track 4 is red: R first in RGB
    assert min(im.shape[1] for im in out["image"]) in (16, 24, 32)
    # a video whose only instance is a crowd: all frames are candidates, no instances
    crowd = [[a for a in frame if a["iscrowd"]] for frame in video["annotations"]]
    crowd_only = dict(video, annotations=crowd)
    out = YTVISClipDatasetMapper(_cfg(), is_train=True)(crowd_only)
    assert all(len(inst) == 0 and inst.gt_masks.tensor.shape[0] == 0 for inst in out["instances"])


def test_test_mode_is_lazy(video, monkeypatch):
    reads = []
    real_read = detection_utils.read_image

    def counting_read(file_name, format=None):
        reads.append(file_name)
        return real_read(file_name, format)

    monkeypatch.setattr(detection_utils, "read_image", counting_read)
    out = YTVISClipDatasetMapper(_cfg(), is_train=False)(video)
    assert reads == [] and "image" not in out
    frames = out["frames"]
    assert len(frames) == LENGTH == out["length"] and out["file_names"] == video["file_names"]
    frame = frames[5]
    assert reads == [video["file_names"][5]]
    assert frame.dtype == torch.uint8 and tuple(frame.shape) == (3, 16, 24)
    assert frames[-1].shape == frame.shape and len(reads) == 2
    with pytest.raises(IndexError):
        frames[LENGTH]


def test_bad_frames_raise(video):
    file_names = video["file_names"]
    os.remove(file_names[1])
    with open(file_names[3], "wb") as f:
        f.write(b"not an image")
    cv2.imwrite(file_names[4], np.zeros((H + 2, W, 3), dtype=np.uint8))
    frames = YTVISClipDatasetMapper(_cfg(), is_train=False)(video)["frames"]
    for idx, error in ((1, FileNotFoundError), (3, ValueError), (4, ValueError)):
        with pytest.raises(error) as e:
            frames[idx]
        for text in (file_names[idx], "video id 1", f"frame {idx}"):
            assert text in str(e.value)
    mapper = YTVISClipDatasetMapper(_cfg(SAMPLING_FRAME_NUM=7), is_train=True)
    with pytest.raises(FileNotFoundError, match="video id 1, frame 1"):
        mapper(video)  # 7 of the 7 annotated frames: frame 1 is read


def test_loaders(video, tmp_path):
    name = "test_data_mapper_tiny"
    register_ytvis_instances(name, {}, str(tmp_path / "train.json"), str(tmp_path / "JPEGImages"))
    try:
        cfg = _cfg()
        cfg.DATASETS.TRAIN = (name,)
        cfg.SOLVER.IMS_PER_BATCH = 2
        batch = next(iter(build_clip_train_loader(cfg)))
        assert len(batch) == 2 and all(len(clip["image"]) == 3 for clip in batch)
        videos = list(build_video_test_loader(cfg, name))
        assert len(videos) == 1 and len(videos[0]) == 1
        assert len(videos[0][0]["frames"]) == LENGTH
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
