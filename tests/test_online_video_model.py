"""The online video base every video model builds on (iai_d2.modeling.OnlineVideoModel), on a fake
detector: the forward dispatch of clips / images / videos, the frame-major clip loop and its loss
averaging, de-overlapping, and video inference through the online protocol."""
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.structures import ImageList, Instances
from torch import nn

from iai_d2.config import add_iai_config
from iai_d2.modeling import IAIVideoModel, OnlineVideoModel, online_config

H, W = 8, 12


class FakeDetector(nn.Module):
    """An image model whose backbone returns its input as the one feature level ("x")."""

    def __init__(self):
        super().__init__()
        self.backbone = lambda x: {"x": x.float()}

    @property
    def device(self):
        return torch.device("cpu")

    def preprocess_image(self, batched_inputs):
        return ImageList.from_tensors([x["image"] for x in batched_inputs])

    def forward(self, batched_inputs):
        return {"detector": len(batched_inputs)}


class FakeVideoModel(OnlineVideoModel, FakeDetector):
    """
    Records what the clip hooks see. Online, every frame gives one detection (class 1, score of the
    frame's mean value) covering the rows 0..3, continuing track 7.
    """

    num_classes = 3

    def __init__(self, trains_on_clips=True):
        super().__init__()
        self.TRAINS_ON_CLIPS = trains_on_clips
        cfg = get_cfg()
        add_iai_config(cfg)
        cfg.TEST.PROGRESS_BAR = False
        self._setup_online(**online_config(cfg, cfg.MODEL.IAI.INFERENCE))
        self.seen = []

    def _start_clips(self, clips, targets):
        self.seen.append(("start", len(clips), len(targets)))
        return {"frames": 0}

    def _clip_frame_losses(self, state, t, images, features, targets):
        state["frames"] += 1
        self.seen.append((t, images.tensor[:, 0, 0, 0].tolist(), features["x"][:, 0, 0, 0].tolist(),
                          [g.gt_ids.tolist() for g in targets], state["frames"]))
        losses = {"loss_a": torch.tensor(float(t))}
        if t > 0:  # a loss of some frames only is averaged over those
            losses["loss_b"] = torch.tensor(float(10 * t))
        return losses

    def new_video_state(self):
        return {"frame": 0}

    def inference_frame(self, state, image, height, width):
        det = Instances((height, width))
        det.scores = image.float().mean()[None] / 255
        det.pred_classes = torch.tensor([1])
        det.class_probs = torch.nn.functional.one_hot(det.pred_classes, 3) * det.scores[:, None]
        det.pred_masks = torch.zeros((1, height, width), dtype=torch.bool)
        det.pred_masks[:, :4] = True
        det.ID = torch.tensor([7])
        state["frame"] += 1
        return det


def clip(b, num_frames):
    """Clip b: frame t is filled with 10 * b + t, its one instance has gt_ids 100 * b + t."""
    instances = []
    for t in range(num_frames):
        inst = Instances((H, W))
        inst.gt_ids = torch.tensor([100 * b + t])
        instances.append(inst)
    return {"video_id": b, "image": [torch.full((3, H, W), 10 * b + t, dtype=torch.uint8) for t in range(num_frames)],
            "instances": instances}


def test_clip_loop_sees_every_clip_frame_major_and_averages_losses_per_frame():
    model = FakeVideoModel().train()
    losses = model([clip(0, 3), clip(1, 3)])
    assert model.seen == [
        ("start", 2, 3),
        (0, [0.0, 10.0], [0.0, 10.0], [[0], [100]], 1),
        (1, [1.0, 11.0], [1.0, 11.0], [[1], [101]], 2),
        (2, [2.0, 12.0], [2.0, 12.0], [[2], [102]], 3),
    ]
    assert losses["loss_a"].item() == 1.0  # (0 + 1 + 2) / 3
    assert losses["loss_b"].item() == 15.0  # (10 + 20) / 2


def test_clips_too_short_or_of_different_lengths_are_one_clear_error():
    model = FakeVideoModel().train()
    model.MIN_CLIP_FRAMES = 2
    with pytest.raises(ValueError, match=r"SAMPLING_FRAME_NUM >= 2 frames.*got \[1, 1\] frames \(videos \[0, 1\]\)"):
        model([clip(0, 1), clip(1, 1)])
    with pytest.raises(ValueError, match=r"the same for every clip of a batch; got \[3, 2\]"):
        model([clip(0, 3), clip(1, 2)])


def test_forward_dispatches_clips_images_and_videos():
    images = [{"image": torch.zeros((3, H, W), dtype=torch.uint8)}] * 2
    assert FakeVideoModel(trains_on_clips=False).train()(images) == {"detector": 2}
    model = FakeVideoModel().eval()
    assert model(images) == {"detector": 2}  # images at test time: the detector's own inference
    frames = [torch.full((3, H, W), 51 * t, dtype=torch.uint8) for t in range(3)]
    out = model([{"video_id": 4, "length": 3, "height": H, "width": W, "frames": frames}])
    assert len(out) == 1 and (out[0]["video_id"], out[0]["length"]) == (4, 3)
    (pred,) = out[0]["predictions"]  # one track, one class above VIDEO_SCORE_THRESH
    assert pred["category_id"] == 1
    assert pred["score"] == pytest.approx((0 + 51 + 102) / 255 / 3)
    assert all(seg is not None and seg["size"] == [H, W] for seg in pred["segmentations"])


def test_remove_overlaps_keeps_better_detections_whole():
    model = FakeVideoModel()
    det = Instances((H, W))
    det.scores = torch.tensor([0.9, 0.8, 0.7])
    det.pred_masks = torch.zeros((3, H, W), dtype=torch.bool)
    det.pred_masks[0, :4] = True  # 48 pixels
    det.pred_masks[1, 2:6] = True  # half under detection 0: keeps 24 pixels
    det.pred_masks[2, :4, :2] = True  # entirely under detection 0: dropped
    out = model._remove_overlaps(det)
    assert out.scores.tolist() == pytest.approx([0.9, 0.8])
    assert out.pred_masks.sum((1, 2)).tolist() == [48, 24]
    assert not (out.pred_masks[0] & out.pred_masks[1]).any()


def test_online_config_reads_the_inference_node_and_the_progress_bar():
    assert issubclass(IAIVideoModel, OnlineVideoModel)
    cfg = get_cfg()
    add_iai_config(cfg)
    cfg.merge_from_list(["MODEL.IAI.INFERENCE.VIDEO_TOPK", "3", "MODEL.IAI.INFERENCE.MIN_MASK_KEEP", "0.25",
                         "TEST.PROGRESS_BAR", "False"])
    assert online_config(cfg, cfg.MODEL.IAI.INFERENCE) == {
        "video_topk": 3, "video_score_thresh": 0.05, "progress_bar": False, "min_mask_keep": 0.25, "mask_threshold": 0.5}
    # a model keeping its detector's own masks reads the video-level fields only
    assert online_config(cfg, cfg.MODEL.IAI.INFERENCE, frame_masks=False) == {
        "video_topk": 3, "video_score_thresh": 0.05, "progress_bar": False}
