"""
The floor of video instance segmentation on a given image model: a plain Detectron2 Mask R-CNN,
trained on video frames as images, whose detections are linked online between consecutive frames
by greedy mask IoU (``iai_d2.inference.relabel.IoULinker``; nothing is learned about identity).

Importing this package registers the ``IoULinkRCNN`` meta-architecture.
"""
from typing import Dict

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import nms
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Instances

from iai_d2.inference.relabel import LINK_IOU_THRESH, IoULinker
from iai_d2.modeling.online import OnlineVideoModel, online_config

__all__ = ["IoULinkRCNN"]


@META_ARCH_REGISTRY.register()
class IoULinkRCNN(OnlineVideoModel, GeneralizedRCNN):
    """
    ``GeneralizedRCNN`` (same parameters, so image-model checkpoints load unchanged) that also runs
    online on videos (:class:`OnlineVideoModel`): ``new_video_state`` / ``inference_frame`` give
    every frame's detections track ids by mask-IoU linking to the previous frame (IoU >
    ``LINK_IOU_THRESH``). Video frames get IAI's per-frame post-processing first (masks binarised
    at MODEL.IAI.INFERENCE.MASK_THRESH, class-agnostic NMS, at most ``max_per_frame`` detections,
    masks made disjoint), so that one object is one detection to link.

    Training input: images (Detectron2's standard format). Test input: images, or videos with
    lazily decoded ``frames`` (the video test loader), which return YTVIS predictions as IAIRCNN does.
    Class probabilities of a detection are its score on its class, 0 elsewhere.
    """

    TRAINS_ON_CLIPS = False

    @configurable
    def __init__(self, *, num_classes: int, nms_thresh: float, max_per_frame: int, online: Dict, **kwargs):
        """
        Args:
            num_classes: K foreground classes.
            nms_thresh, max_per_frame: video frames' class-agnostic NMS IoU and detections kept after it.
            online: arguments of :meth:`OnlineVideoModel._setup_online` (see ``online_config``):
                mask threshold, the area fraction a mask must keep when made disjoint, video-level
                (track, class) selection, as IAIRCNN's.
            kwargs: GeneralizedRCNN's arguments.
        """
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.nms_thresh = nms_thresh
        self.max_per_frame = max_per_frame
        self._setup_online(**online)

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        inf = cfg.MODEL.IAI.INFERENCE
        ret.update(
            num_classes=cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            nms_thresh=inf.NMS_THRESH,
            max_per_frame=inf.MAX_PER_FRAME,
            online=online_config(cfg, inf),
        )
        return ret

    def new_video_state(self) -> IoULinker:
        """A fresh linker for a new video."""
        return IoULinker(LINK_IOU_THRESH)

    @torch.no_grad()
    def inference_frame(self, state: IoULinker, image: torch.Tensor, height: int, width: int) -> Instances:
        """:meth:`OnlineVideoModel.inference_frame`: the detections with pred_boxes too and ID (M,)
        IoU-linked track ids."""
        instances = self.inference([{"image": image}], do_postprocess=False)[0]
        instances = detector_postprocess(instances, height, width, self.mask_threshold)
        keep = nms(instances.pred_boxes.tensor, instances.scores, self.nms_thresh)[: self.max_per_frame]
        instances = self._remove_overlaps(instances[keep])  # score descending
        one_hot = F.one_hot(instances.pred_classes, self.num_classes).to(instances.scores.dtype)
        instances.class_probs = one_hot * instances.scores[:, None]
        instances.ID = torch.as_tensor(state(instances.pred_masks.cpu().numpy()), dtype=torch.long)
        return instances
