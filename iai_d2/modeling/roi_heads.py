"""IAI ROI heads: Detectron2's StandardROIHeads plus an ID predictor beside the box predictor.

ID index space (N = MODEL.IAI.NUM_IDS): 0..N-2 tracked memory slots, N-1 "new instance",
N background. The ID predictor sees the same box-head feature as the box predictor.
"""
import math
from typing import Dict, List, Optional, Tuple

import torch
from fvcore.nn import sigmoid_focal_loss
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.layers import cat, cross_entropy
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.structures import Boxes, Instances

from ..inference.frame_detections import select_frame_detections

__all__ = ["IAIROIHeads"]

_ID_LOSSES = ("softmax", "focal")


@ROI_HEADS_REGISTRY.register()
class IAIROIHeads(StandardROIHeads):
    """
    StandardROIHeads with an ID predictor ``Linear(box_head_dim, N + 1)`` (``use_id_predictor``;
    without it, identities come from the dense ID decoder and detections are ranked by class).

    Training adds ``loss_id`` to Detectron2's box and mask losses; target Instances must carry
    ``gt_ids`` (LongTensor in 0..N-1: memory slot, or N-1 for an instance new to the memory).
    Online inference goes through :meth:`inference_frame` (class-agnostic NMS on a weighted
    class/ID score); :meth:`forward` in eval mode stays plain Mask R-CNN inference.
    """

    @configurable
    def __init__(
        self,
        *,
        num_ids: int,
        use_id_predictor: bool = True,
        id_loss: str = "softmax",
        id_loss_weight: float = 1.0,
        id_focal_alpha: float = 0.25,
        id_focal_gamma: float = 2.0,
        cls_score_thresh: float = 0.05,
        id_score_thresh: float = 0.05,
        first_frame_weights: Tuple[float, float] = (1.0, 0.5),
        later_frame_weights: Tuple[float, float] = (0.5, 1.0),
        nms_thresh: float = 0.5,
        max_per_frame: int = 10,
        **kwargs,
    ):
        """
        Args:
            num_ids: N, number of ID channels (slots 0..N-2, "new" N-1); the predictor outputs
                N + 1 logits (index N = background).
            use_id_predictor: build the ROI ID predictor (MODEL.IAI.ID_DECODER "roi"). False
                (decoder "dense"): no ID loss here, ranking and thresholds use the class score.
            id_loss: "softmax" (cross-entropy over N + 1, mean over sampled proposals) or
                "focal" (sigmoid focal over the N foreground channels, background = all-zero
                target, normalised by the number of foreground proposals).
            id_loss_weight: multiplier of ``loss_id``.
            id_focal_alpha, id_focal_gamma: focal loss parameters.
            cls_score_thresh, id_score_thresh: a detection is kept when its max foreground
                class probability and its max probability over the N ID entries both exceed
                these thresholds.
            first_frame_weights, later_frame_weights: (w_cls, w_id) of the NMS ranking score
                w_cls * s_cls + w_id * s_id on the first / later frames of a video.
            nms_thresh: IoU threshold of the class-agnostic NMS.
            max_per_frame: detections kept per frame after NMS.
            kwargs: arguments of :class:`StandardROIHeads`; a mask head is required.
        """
        super().__init__(**kwargs)
        if num_ids < 2:
            raise ValueError(f"MODEL.IAI.NUM_IDS must be >= 2 (one slot + 'new'), got {num_ids}")
        if id_loss not in _ID_LOSSES:
            raise ValueError(f"MODEL.IAI.ID_LOSS must be one of {_ID_LOSSES}, got {id_loss!r}")
        if not self.mask_on:
            raise ValueError("IAIROIHeads needs a mask head (MODEL.MASK_ON=True) to build ID masks")
        self.num_ids = num_ids
        self.id_loss = id_loss
        self.id_loss_weight = id_loss_weight
        self.id_focal_alpha = id_focal_alpha
        self.id_focal_gamma = id_focal_gamma
        self.cls_score_thresh = cls_score_thresh
        self.id_score_thresh = id_score_thresh
        self.first_frame_weights = tuple(first_frame_weights)
        self.later_frame_weights = tuple(later_frame_weights)
        self.nms_thresh = nms_thresh
        self.max_per_frame = max_per_frame

        self.id_predictor = None
        if use_id_predictor:
            shape = self.box_head.output_shape
            in_dim = shape.channels * (shape.height or 1) * (shape.width or 1)
            self.id_predictor = nn.Linear(in_dim, num_ids + 1)
            nn.init.normal_(self.id_predictor.weight, std=0.01)
            # Focal loss: start every sigmoid at the prior 0.01 (as the released head does).
            prior_bias = -math.log((1 - 0.01) / 0.01) if id_loss == "focal" else 0.0
            nn.init.constant_(self.id_predictor.bias, prior_bias)

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        iai = cfg.MODEL.IAI
        ret.update(
            {
                "num_ids": iai.NUM_IDS,
                "use_id_predictor": iai.ID_DECODER == "roi",
                "id_loss": iai.ID_LOSS,
                "id_loss_weight": iai.ID_LOSS_WEIGHT,
                "id_focal_alpha": iai.ID_FOCAL_ALPHA,
                "id_focal_gamma": iai.ID_FOCAL_GAMMA,
                "cls_score_thresh": iai.INFERENCE.CLS_SCORE_THRESH,
                "id_score_thresh": iai.INFERENCE.ID_SCORE_THRESH,
                "first_frame_weights": iai.INFERENCE.FIRST_FRAME_WEIGHTS,
                "later_frame_weights": iai.INFERENCE.LATER_FRAME_WEIGHTS,
                "nms_thresh": iai.INFERENCE.NMS_THRESH,
                "max_per_frame": iai.INFERENCE.MAX_PER_FRAME,
            }
        )
        return ret

    # ------------------------------------------------------------------ training
    @torch.no_grad()
    def label_and_sample_proposals(
        self, proposals: List[Instances], targets: List[Instances]
    ) -> List[Instances]:
        """
        Detectron2's sampling, then every sampled proposal gets ``gt_ids`` (R,): the ID target
        of its matched GT, or N for background proposals (and for images without GT).
        """
        for i, targets_per_image in enumerate(targets):
            if not targets_per_image.has("gt_ids"):
                raise ValueError(
                    f"IAIROIHeads: training targets of image {i} in the batch have no `gt_ids` "
                    "field (ID targets in 0..N-1 are required)"
                )
            gt_ids = targets_per_image.gt_ids
            if gt_ids.numel() and (gt_ids.min() < 0 or gt_ids.max() >= self.num_ids):
                raise ValueError(
                    f"IAIROIHeads: gt_ids of image {i} must lie in [0, {self.num_ids - 1}], "
                    f"got {gt_ids.tolist()}"
                )
        proposals = super().label_and_sample_proposals(proposals, targets)
        for proposals_per_image in proposals:
            gt_classes = proposals_per_image.gt_classes
            if proposals_per_image.has("gt_ids"):
                gt_ids = proposals_per_image.gt_ids.clone()
            else:  # image without GT: Detectron2 sets no gt_* field but gt_classes
                gt_ids = torch.full_like(gt_classes, self.num_ids)
            gt_ids[gt_classes == self.num_classes] = self.num_ids
            proposals_per_image.gt_ids = gt_ids
        return proposals

    def id_losses(
        self, id_logits: torch.Tensor, proposals: List[Instances]
    ) -> Dict[str, torch.Tensor]:
        """
        Args:
            id_logits: (R, N + 1) ID logits of all sampled proposals of the batch.
            proposals: sampled proposals with ``gt_ids`` (R_i,), N = background.

        Returns:
            {"loss_id": scalar}, already multiplied by the loss weight.
        """
        gt_ids = cat([p.gt_ids for p in proposals], dim=0)
        if self.id_loss == "softmax":
            loss = cross_entropy(id_logits, gt_ids, reduction="mean")
        else:
            # one-hot over the N foreground channels; background (index N) -> all zeros
            targets = F.one_hot(gt_ids, self.num_ids + 1)[:, : self.num_ids].to(id_logits.dtype)
            num_fg = max((gt_ids < self.num_ids).sum().item(), 1)
            loss = sigmoid_focal_loss(
                id_logits[:, : self.num_ids],
                targets,
                alpha=self.id_focal_alpha,
                gamma=self.id_focal_gamma,
                reduction="sum",
            ) / num_fg
        return {"loss_id": loss * self.id_loss_weight}

    def id_probabilities(self, id_logits: torch.Tensor) -> torch.Tensor:
        """
        Decode ID logits the way the ID loss trained them.

        Args:
            id_logits: (R, N + 1).
        Returns:
            (R, N + 1): softmax over N + 1 (cross-entropy), or sigmoid over the N foreground
            channels with a zero background column (focal: the background logit is never trained).
        """
        if self.id_loss == "softmax":
            return F.softmax(id_logits, dim=-1)
        probs = id_logits[:, : self.num_ids].sigmoid()
        return torch.cat([probs, probs.new_zeros(len(probs), 1)], dim=1)

    # ------------------------------------------------------------------ shared box/ID pass
    def _box_and_id_predictions(
        self, features: Dict[str, torch.Tensor], proposals: List[Instances]
    ) -> Tuple[Tuple[torch.Tensor, torch.Tensor], Optional[torch.Tensor]]:
        """
        Run the box head once and feed its feature to both predictors.

        Returns:
            predictions: (scores (R, K+1), deltas (R, K*4 or 4)) of the box predictor.
            id_logits: (R, N + 1), or None without an ID predictor.
        """
        features = [features[f] for f in self.box_in_features]
        box_features = self.box_pooler(features, [x.proposal_boxes for x in proposals])
        box_features = self.box_head(box_features)
        predictions = self.box_predictor(box_features)
        if self.id_predictor is None:
            return predictions, None
        return predictions, self.id_predictor(torch.flatten(box_features, start_dim=1))

    def _forward_box(self, features: Dict[str, torch.Tensor], proposals: List[Instances]):
        """
        Same contract as :meth:`StandardROIHeads._forward_box`; in training also returns
        ``loss_id``.
        """
        predictions, id_logits = self._box_and_id_predictions(features, proposals)
        if not self.training:
            pred_instances, _ = self.box_predictor.inference(predictions, proposals)
            return pred_instances
        losses = self.box_predictor.losses(predictions, proposals)
        if id_logits is not None:
            losses.update(self.id_losses(id_logits, proposals))
        # proposals is modified in-place below, so losses must be computed first.
        if self.train_on_pred_boxes:
            with torch.no_grad():
                pred_boxes = self.box_predictor.predict_boxes_for_gt_classes(predictions, proposals)
                for proposals_per_image, pred_boxes_per_image in zip(proposals, pred_boxes):
                    proposals_per_image.proposal_boxes = Boxes(pred_boxes_per_image)
        return losses

    # ------------------------------------------------------------------ online inference
    def inference_frame(
        self, features: Dict[str, torch.Tensor], proposals: List[Instances], first_frame: bool
    ) -> List[Instances]:
        """
        Per-frame IAI detections (eval mode only).

        Args:
            features: FPN features of B images, e.g. {"p2": (B, C, H/4, W/4), ...}.
            proposals: B Instances with ``proposal_boxes`` (image_size = network input size).
            first_frame: whether these are the first frames of their videos (selects the
                ranking weights).

        Returns:
            B Instances with M <= max_per_frame detections each, sorted by ``rank_scores`` desc:
                pred_boxes (Boxes, M), scores (M,) max foreground class prob s_cls,
                pred_classes (M,), class_probs (M, K), id_probs (M, N + 1) (see
                :meth:`id_probabilities`; absent without an ID predictor), rank_scores (M,),
                pred_masks (M, 1, Hm, Wm) mask probabilities.
        """
        if self.training:
            raise RuntimeError("IAIROIHeads.inference_frame must be called in eval mode")
        predictions, id_logits = self._box_and_id_predictions(features, proposals)
        boxes = self.box_predictor.predict_boxes(predictions, proposals)
        class_probs = self.box_predictor.predict_probs(predictions, proposals)
        if id_logits is None:
            id_probs = [None] * len(proposals)
        else:
            id_probs = self.id_probabilities(id_logits).split([len(p) for p in proposals])
        weights = self.first_frame_weights if first_frame else self.later_frame_weights
        instances = [
            select_frame_detections(
                b,
                c,
                p.image_size,
                num_classes=self.num_classes,
                cls_score_thresh=self.cls_score_thresh,
                nms_thresh=self.nms_thresh,
                max_per_frame=self.max_per_frame,
                id_probs=i,
                num_ids=self.num_ids,
                id_score_thresh=self.id_score_thresh,
                weights=weights,
            )
            for b, c, i, p in zip(boxes, class_probs, id_probs, proposals)
        ]
        return self._forward_mask(features, instances)
