"""TrackROIHeads: Detectron2's StandardROIHeads plus a MaskTrack R-CNN-style tracking head."""
from typing import Dict, List, Optional, Tuple

import torch
from detectron2.config import configurable
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, StandardROIHeads, select_foreground_proposals
from detectron2.structures import Boxes, ImageList, Instances
from torch import nn

from iai_d2.inference.frame_detections import select_frame_detections

from .matching import track_loss

__all__ = ["TrackROIHeads"]


@ROI_HEADS_REGISTRY.register()
class TrackROIHeads(StandardROIHeads):
    """
    StandardROIHeads with a tracking head ``Linear(box_head_dim, FC_DIM) -> ReLU ->
    Linear(FC_DIM, EMBED_DIM)`` on the box-head feature of a box.

    Training: given the embeddings and ``gt_ids`` of a reference frame's GT instances, every
    foreground proposal of the key frame is classified over [new, reference instances] (logits
    of :func:`affinity_logits`); the target is the reference instance with the proposal's
    ``gt_ids``, or "new". Online inference goes through :meth:`inference_frame`.
    """

    @configurable
    def __init__(
        self,
        *,
        track_fc_dim: int,
        embed_dim: int,
        track_loss_weight: float = 1.0,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        max_per_frame: int = 10,
        **kwargs,
    ):
        """
        Args:
            track_fc_dim, embed_dim: hidden and output width of the tracking head.
            track_loss_weight: multiplier of ``loss_track``.
            score_thresh: inference keeps boxes whose max foreground class probability exceeds it.
            nms_thresh: IoU threshold of the class-agnostic NMS at inference.
            max_per_frame: detections kept per frame at inference.
            kwargs: arguments of :class:`StandardROIHeads`; a mask head is required.
        """
        super().__init__(**kwargs)
        if not self.mask_on:
            raise ValueError("TrackROIHeads needs a mask head (MODEL.MASK_ON=True)")
        shape = self.box_head.output_shape
        in_dim = shape.channels * (shape.height or 1) * (shape.width or 1)
        self.track_head = nn.Sequential(
            nn.Linear(in_dim, track_fc_dim), nn.ReLU(inplace=True), nn.Linear(track_fc_dim, embed_dim)
        )
        # Small initial embeddings (as Detectron2's predictors): affinities start near 0, so the
        # unnormalised dot products grow gradually instead of overshooting in the first steps.
        nn.init.normal_(self.track_head[-1].weight, std=0.01)
        nn.init.constant_(self.track_head[-1].bias, 0)
        self.track_loss_weight = track_loss_weight
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.max_per_frame = max_per_frame

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        head = cfg.MODEL.TRACK_HEAD
        ret.update(
            track_fc_dim=head.FC_DIM,
            embed_dim=head.EMBED_DIM,
            track_loss_weight=head.LOSS_WEIGHT,
            score_thresh=head.INFERENCE.SCORE_THRESH,
            nms_thresh=head.INFERENCE.NMS_THRESH,
            max_per_frame=head.INFERENCE.MAX_PER_FRAME,
        )
        return ret

    def embed(self, features: Dict[str, torch.Tensor], boxes: List[Boxes]) -> torch.Tensor:
        """
        Args:
            features: FPN features of B images, e.g. {"p2": (B, C, H/4, W/4), ...}.
            boxes: B Boxes (R_i boxes each) in input-image coordinates.
        Returns:
            (sum R_i, EMBED_DIM) tracking embeddings, image by image.
        """
        pooled = self.box_pooler([features[f] for f in self.box_in_features], boxes)
        return self.track_head(torch.flatten(self.box_head(pooled), start_dim=1))

    # ------------------------------------------------------------------ training
    def forward(
        self,
        images: ImageList,
        features: Dict[str, torch.Tensor],
        proposals: List[Instances],
        targets: Optional[List[Instances]] = None,
        references: Optional[List[Tuple[torch.Tensor, torch.Tensor]]] = None,
    ):
        """
        :meth:`StandardROIHeads.forward`; in training with ``references`` (per image: the
        reference frame's GT embeddings (R_ref, D) and ``gt_ids`` (R_ref,)), also ``loss_track``.
        Targets must then carry ``gt_ids`` (identities shared with the reference frame).
        """
        if not self.training or references is None:
            return super().forward(images, features, proposals, targets)
        for i, target in enumerate(targets):
            if not target.has("gt_ids"):
                raise ValueError(f"TrackROIHeads: training targets of image {i} have no `gt_ids` field")
        proposals, losses = super().forward(images, features, proposals, targets)
        losses.update(self.track_losses(features, proposals, references))
        return proposals, losses

    def track_losses(
        self,
        features: Dict[str, torch.Tensor],
        proposals: List[Instances],
        references: List[Tuple[torch.Tensor, torch.Tensor]],
    ) -> Dict[str, torch.Tensor]:
        """
        Args:
            features: FPN features of the B key frames.
            proposals: B sampled proposals with gt_classes and gt_ids.
            references: per image, (embeddings (R_ref, D), gt_ids (R_ref,)) of the reference frame.
        Returns:
            {"loss_track": cross-entropy over [new, reference instances], mean over the
            foreground proposals, times the loss weight}.
        """
        fg_proposals, _ = select_foreground_proposals(proposals, self.num_classes)
        embeddings = self.embed(features, [p.proposal_boxes for p in fg_proposals])
        keys = list(zip(embeddings.split([len(p) for p in fg_proposals]), [p.gt_ids for p in fg_proposals]))
        return track_loss(keys, references, self.track_loss_weight)

    # ------------------------------------------------------------------ online inference
    def inference_frame(
        self, features: Dict[str, torch.Tensor], proposals: List[Instances]
    ) -> List[Instances]:
        """
        Per-frame detections with tracking embeddings (eval mode).

        Args:
            features: FPN features of B images.
            proposals: B Instances with ``proposal_boxes`` (image_size = network input size).
        Returns:
            B Instances with M <= max_per_frame detections each, score descending: pred_boxes
            (Boxes, M), scores (M,) max foreground class probability, pred_classes (M,),
            class_probs (M, K), embeddings (M, D) of the final boxes, pred_masks (M, 1, Hm, Wm)
            mask probabilities.
        """
        if self.training:
            raise RuntimeError("TrackROIHeads.inference_frame must be called in eval mode")
        box_features = [features[f] for f in self.box_in_features]
        pooled = self.box_pooler(box_features, [p.proposal_boxes for p in proposals])
        predictions = self.box_predictor(self.box_head(pooled))
        boxes = self.box_predictor.predict_boxes(predictions, proposals)
        class_probs = self.box_predictor.predict_probs(predictions, proposals)
        instances = [
            select_frame_detections(
                b,
                c,
                p.image_size,
                num_classes=self.num_classes,
                cls_score_thresh=self.score_thresh,
                nms_thresh=self.nms_thresh,
                max_per_frame=self.max_per_frame,
            )
            for b, c, p in zip(boxes, class_probs, proposals)
        ]
        instances = self.forward_with_given_boxes(features, instances)
        embeddings = self.embed(features, [i.pred_boxes for i in instances])
        for inst, emb in zip(instances, embeddings.split([len(i) for i in instances])):
            inst.embeddings = emb
        return instances
