"""The image-model stage: video frames as Detectron2 image datasets, the plain tiny Mask R-CNN
trained on them by IAITrainer (standard image loader, COCOEvaluator), and its checkpoint loading
into the tiny IAI model."""
import os

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from iai_d2 import add_iai_config
from iai_d2.data import ytvis_frame_records
from iai_d2.engine import is_video_split

FRAMES_CONFIG = os.path.join("configs", "synthetic", "maskrcnn_tiny_frames.yaml")


def _video(video_id, length, annotations=True):
    record = {"video_id": video_id, "file_names": [f"v{video_id}/{t}.jpg" for t in range(length)],
              "length": length, "height": 8, "width": 10}
    if annotations:
        record["annotations"] = [[{"id": 5, "category_id": 1, "bbox": [0, 0, 2, 2]}]] * length
    return record


def test_every_annotated_frame_becomes_one_image_record():
    frames = ytvis_frame_records([_video(3, 2), _video(7, 3)], "toy")
    assert [f["image_id"] for f in frames] == [0, 1, 2, 3, 4]  # unique over the split
    assert [(f["video_id"], f["frame_idx"]) for f in frames] == [(3, 0), (3, 1), (7, 0), (7, 1), (7, 2)]
    assert frames[3]["file_name"] == "v7/1.jpg" and frames[3]["annotations"][0]["id"] == 5
    assert (frames[3]["height"], frames[3]["width"]) == (8, 10)
    with pytest.raises(ValueError, match="toy: video id 9 has no annotations"):
        ytvis_frame_records([_video(9, 2, annotations=False)], "toy")


def test_builtin_frame_splits_are_image_datasets_of_the_synthetic_videos():
    assert is_video_split("synthetic_vis_val") and not is_video_split(["synthetic_vis_train_frames"])
    with pytest.raises(ValueError, match="mix video splits and image datasets"):
        is_video_split(["synthetic_vis_train", "synthetic_vis_train_frames"])


def _cfg(path):
    cfg = get_cfg()
    add_iai_config(cfg)
    cfg.merge_from_file(path)
    return cfg


def test_image_model_weights_fill_every_detection_weight_of_the_tiny_iai_model():
    image_model = build_model(_cfg(FRAMES_CONFIG)).state_dict()
    iai_model = build_model(_cfg(os.path.join("configs", "synthetic", "iai_tiny.yaml"))).state_dict()
    unexpected = [k for k in image_model if k not in iai_model]
    assert unexpected == []
    assert [k for k in image_model if image_model[k].shape != iai_model[k].shape] == []
    detection_prefixes = ("backbone.bottom_up.", "backbone.fpn_", "proposal_generator.", "roi_heads.box_",
                          "roi_heads.mask_head.")
    not_loaded = [k for k in iai_model if k.startswith(detection_prefixes) and k not in image_model]
    assert not_loaded == []


def test_image_stage_trains_on_frames_and_scores_with_coco_evaluator(
    synthetic_vis_root, run_tool, e2e_settings, tmp_path
):
    out = tmp_path / "frames"
    proc = run_tool(
        "train_net.py", "--config-file", FRAMES_CONFIG, *e2e_settings.input_opts,
        "SOLVER.MAX_ITER", 3, "SOLVER.IMS_PER_BATCH", 2, "SOLVER.WARMUP_ITERS", 1, "SOLVER.STEPS", "(2,)",
        "OUTPUT_DIR", out, datasets_root=synthetic_vis_root,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "model_final.pth").is_file()
    checkpoint = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    assert any(k.startswith("roi_heads.mask_head.") for k in checkpoint["model"])
    # The end-of-training evaluation ran COCOEvaluator on the val frames (a 3-iteration model may
    # detect nothing: the metrics are then NaN, but the segm task is still reported).
    assert (out / "inference" / "coco_instances_results.json").is_file()
    assert "copypaste: Task: segm" in proc.stdout + proc.stderr
