"""IAIRCNN: Mask R-CNN turned into an online video instance segmenter (Instance As Identity)."""

import logging
from typing import Dict, List

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import BitMasks, ImageList, Instances

from .video_model import IAIVideoModel, VideoState, video_config

__all__ = ["IAIRCNN", "VideoState"]

logger = logging.getLogger(__name__)

_ID_DECODERS = ("roi", "dense")


@META_ARCH_REGISTRY.register()
class IAIRCNN(IAIVideoModel, GeneralizedRCNN):
    """
    Mask R-CNN whose backbone (:class:`IAIFPN`) fuses one level (res5 or res4) with an association
    memory, and whose ID decoder (the ROI ID predictor of :class:`IAIROIHeads`, or the dense
    :class:`DenseIDHead` on the association output) gives every detection an identity among N ID
    channels.

    The video logic (clip training, memory, ID targets, dense ID decoder, per-frame inference,
    identify / teacher_forced_frame, video inference) is :class:`IAIVideoModel`'s, shared with
    other detectors; this class supplies the Mask R-CNN detector hooks (RPN + IAIROIHeads) and
    the ROI ID decoder ("roi").
    """

    ID_DECODERS = _ID_DECODERS
    IDENTITY_MODULES = IAIVideoModel.IDENTITY_MODULES + ("roi_heads.id_predictor",)

    @configurable
    def __init__(self, *, video: Dict, **kwargs):
        """
        Args:
            video: arguments of :meth:`IAIVideoModel._setup_video` (see ``video_config``);
                ``id_decoder`` "roi" (the ROI ID head's probabilities decide identities, the
                paper) or "dense".
            kwargs: arguments of :class:`GeneralizedRCNN`.
        """
        super().__init__(**kwargs)
        self._setup_video(**video)

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret["video"] = video_config(cfg, ret["backbone"], cfg.MODEL.ROI_HEADS.NUM_CLASSES)
        return ret

    # ------------------------------------------------------------------ detector hooks
    def _frame_detector_losses(
        self, images: ImageList, features: Dict[str, torch.Tensor], targets: List[Instances]
    ) -> Dict[str, torch.Tensor]:
        proposals, proposal_losses = self.proposal_generator(images, features, targets)
        _, detector_losses = self.roi_heads(images, features, proposals, targets)
        return {**proposal_losses, **detector_losses}

    def _frame_detections(
        self, images: ImageList, features: Dict[str, torch.Tensor], first_frame: bool, height: int, width: int
    ) -> Instances:
        proposals, _ = self.proposal_generator(images, features, None)
        detections = self.roi_heads.inference_frame(features, proposals, first_frame)[0]
        return detector_postprocess(detections, height, width, self.mask_threshold)

    def _detector_id_probs(self, frame: Dict, masks: torch.Tensor) -> torch.Tensor:
        """The ROI ID head classifies each mask's box."""
        proposals = Instances(frame["images"].image_sizes[0])
        proposals.proposal_boxes = BitMasks(masks).get_bounding_boxes().to(self.device)
        _, id_logits = self.roi_heads._box_and_id_predictions(frame["features"], [proposals])
        return self.roi_heads.id_probabilities(id_logits)
