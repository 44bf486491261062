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
from detectron2.layers import nms
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.structures import Instances

from iai_d2.inference.id_assignment import remove_overlaps
from iai_d2.inference.relabel import LINK_IOU_THRESH, IoULinker
from iai_d2.inference.tracks import track_video

__all__ = ["IoULinkRCNN"]


@META_ARCH_REGISTRY.register()
class IoULinkRCNN(GeneralizedRCNN):
    """
    ``GeneralizedRCNN`` (same parameters, so image-model checkpoints load unchanged) that also runs
    online on videos: ``new_video_state`` / ``inference_frame`` give every frame's detections
    track ids by mask-IoU linking to the previous frame (IoU > ``LINK_IOU_THRESH``). Video frames
    get IAI's per-frame post-processing first (class-agnostic NMS, at most ``max_per_frame``
    detections, masks made disjoint), so that one object is one detection to link.

    Training input: images (Detectron2's standard format). Test input: images, or videos with
    lazily decoded ``frames`` (the video test loader), which return YTVIS predictions as IAIRCNN does.
    Class probabilities of a detection are its score on its class, 0 elsewhere.
    """

    @configurable
    def __init__(
        self,
        *,
        num_classes: int,
        nms_thresh: float,
        max_per_frame: int,
        min_mask_keep: float,
        video_topk: int,
        video_score_thresh: float,
        **kwargs,
    ):
        """
        Args:
            num_classes: K foreground classes.
            nms_thresh, max_per_frame, min_mask_keep: video frames' class-agnostic NMS IoU,
                detections kept after it, and the area fraction a mask must keep when made disjoint.
            video_topk, video_score_thresh: video-level (track, class) selection, as IAIRCNN's.
            kwargs: GeneralizedRCNN's arguments.
        """
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.nms_thresh = nms_thresh
        self.max_per_frame = max_per_frame
        self.min_mask_keep = min_mask_keep
        self.video_topk = video_topk
        self.video_score_thresh = video_score_thresh

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret.update(
            num_classes=cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            nms_thresh=cfg.MODEL.IAI.INFERENCE.NMS_THRESH,
            max_per_frame=cfg.MODEL.IAI.INFERENCE.MAX_PER_FRAME,
            min_mask_keep=cfg.MODEL.IAI.INFERENCE.MIN_MASK_KEEP,
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
        keep = nms(instances.pred_boxes.tensor, instances.scores, self.nms_thresh)[: self.max_per_frame]
        instances = instances[keep]  # score descending
        keep, masks = remove_overlaps(instances.pred_masks.bool(), self.min_mask_keep)
        instances = instances[keep]
        instances.pred_masks = masks
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
        return track_video(self, video, self.video_topk, self.video_score_thresh)
