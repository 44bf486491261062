"""
The floor of video instance segmentation on a given image model: a plain Detectron2 Mask R-CNN,
trained on video frames as images, whose detections are linked online between consecutive frames
by greedy mask IoU (``iai_d2.inference.relabel.IoULinker``; nothing is learned about identity).

Importing this package registers the ``IoULinkRCNN`` meta-architecture.
"""
from typing import Dict, List

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.structures import Instances

from iai_d2.evaluation.diagnosis import run_video, video_predictions
from iai_d2.inference.relabel import LINK_IOU_THRESH, IoULinker

__all__ = ["IoULinkRCNN"]


@META_ARCH_REGISTRY.register()
class IoULinkRCNN(GeneralizedRCNN):
    """
    ``GeneralizedRCNN`` (same parameters, so image-model checkpoints load unchanged) that also runs
    online on videos: ``new_video_state`` / ``inference_frame`` give every frame's detections
    track ids by mask-IoU linking to the previous frame (IoU > ``LINK_IOU_THRESH``).

    Training input: images (Detectron2's standard format). Test input: images, or videos with
    lazily decoded ``frames`` (the video test loader), which return YTVIS predictions as IAIRCNN does.
    Class probabilities of a detection are its score on its class, 0 elsewhere.
    """

    @configurable
    def __init__(self, *, num_classes: int, video_topk: int, video_score_thresh: float, **kwargs):
        """
        Args:
            num_classes: K foreground classes.
            video_topk, video_score_thresh: video-level (track, class) selection, as IAIRCNN's.
            kwargs: GeneralizedRCNN's arguments.
        """
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.video_topk = video_topk
        self.video_score_thresh = video_score_thresh

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret.update(
            num_classes=cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            video_topk=cfg.MODEL.IAI.INFERENCE.VIDEO_TOPK,
            video_score_thresh=cfg.MODEL.IAI.INFERENCE.VIDEO_SCORE_THRESH,
        )
        return ret

    def forward(self, batched_inputs: List[Dict]):
        if not self.training and batched_inputs and "frames" in batched_inputs[0]:
            return [self.inference_video(video) for video in batched_inputs]
        return super().forward(batched_inputs)

    def new_video_state(self) -> IoULinker:
        """A fresh linker for a new video."""
        return IoULinker(LINK_IOU_THRESH)

    @torch.no_grad()
    def inference_frame(self, state: IoULinker, image: torch.Tensor, height: int, width: int) -> Instances:
        """
        Args:
            image: (3, h, w) frame in the model's input format, already resized.
            height, width: output resolution (the original frame size).
        Returns:
            Instances at (height, width) with pred_boxes, scores, pred_classes, pred_masks
            (M, height, width) bool, class_probs (M, K) and ID (M,) IoU-linked track ids.
        """
        instances = self.inference([{"image": image, "height": height, "width": width}])[0]["instances"]
        instances.pred_masks = instances.pred_masks.bool()
        one_hot = F.one_hot(instances.pred_classes, self.num_classes).to(instances.scores.dtype)
        instances.class_probs = one_hot * instances.scores[:, None]
        instances.ID = torch.as_tensor(state(instances.pred_masks.cpu().numpy()), dtype=torch.long)
        return instances

    def inference_video(self, video: Dict) -> Dict:
        """
        Args:
            video: a test record with ``frames`` (lazy (3, h, w) tensors), ``video_id``,
                ``length``, ``height``, ``width``.
        Returns:
            dict with video_id, length, height, width and ``predictions`` (score, contiguous
            category_id, per-frame RLE or None).
        """
        dets = run_video(self, video)
        predictions = video_predictions(
            dets, dets.model_ids, self.num_classes, self.video_topk, self.video_score_thresh
        )
        return {k: video[k] for k in ("video_id", "length", "height", "width")} | {"predictions": predictions}
