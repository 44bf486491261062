"""TrackRCNN: Mask R-CNN with a MaskTrack R-CNN-style tracking head (tracking by detection)."""
from typing import Dict, List, Optional, Tuple

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import ImageList, Instances

from .video_model import References, TrackVideoModel, TrackVideoState, tracking_config

__all__ = ["TrackRCNN", "TrackVideoState"]


@META_ARCH_REGISTRY.register()
class TrackRCNN(TrackVideoModel, GeneralizedRCNN):
    """
    Tracking by detection on Detectron2's Mask R-CNN (the paradigm of MaskTrack R-CNN), with
    :class:`TrackROIHeads`: the pair training, matching and video inference are
    :class:`TrackVideoModel`'s; this class supplies the Mask R-CNN hooks. The references of a
    frame are the tracking embeddings of its GT boxes; ``loss_track`` classifies the key frame's
    foreground proposals.
    """

    @configurable
    def __init__(self, *, tracking: Dict, **kwargs):
        """
        Args:
            tracking: arguments of :meth:`TrackVideoModel._setup_tracking` (see ``tracking_config``).
            kwargs: arguments of :class:`GeneralizedRCNN`.
        """
        super().__init__(**kwargs)
        self._setup_tracking(**tracking)

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret["tracking"] = tracking_config(cfg, cfg.MODEL.ROI_HEADS.NUM_CLASSES)
        return ret

    # ------------------------------------------------------------------ detector hooks
    def _frame_losses(
        self,
        images: ImageList,
        features: Dict[str, torch.Tensor],
        targets: List[Instances],
        references: Optional[References],
        make_references: bool,
    ) -> Tuple[Dict[str, torch.Tensor], Optional[References]]:
        proposals, proposal_losses = self.proposal_generator(images, features, targets)
        _, detector_losses = self.roi_heads(images, features, proposals, targets, references=references)
        next_references = None
        if make_references:
            embeddings = self.roi_heads.embed(features, [g.gt_boxes for g in targets])
            next_references = list(zip(embeddings.split([len(g) for g in targets]), [g.gt_ids for g in targets]))
        return {**proposal_losses, **detector_losses}, next_references

    def _frame_detections(
        self, images: ImageList, features: Dict[str, torch.Tensor], height: int, width: int
    ) -> Instances:
        proposals, _ = self.proposal_generator(images, features, None)
        detections = self.roi_heads.inference_frame(features, proposals)[0]
        return detector_postprocess(detections, height, width, self.mask_threshold)
