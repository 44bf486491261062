"""Mask2Former's set loss: Hungarian matching per prediction, then class cross-entropy (a
down-weighted "no object" class), and mask sigmoid cross-entropy + Dice over uncertain points
(PointRend's importance sampling), for the final prediction and every auxiliary one."""
from typing import Dict, List

import torch
import torch.distributed as dist
import torch.nn.functional as F
from detectron2.projects.point_rend.point_features import (
    get_uncertain_point_coords_with_randomness,
    point_sample,
)
from detectron2.utils import comm

from .matcher import HungarianMatcher

__all__ = ["SetCriterion"]


def _uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """(R, 1, P) mask logits -> (R, 1, P): higher closer to the decision boundary."""
    return -logits.abs()


class SetCriterion:
    """
    Losses ``loss_ce``, ``loss_mask``, ``loss_dice`` of the final prediction and ``loss_*_{i}``
    of auxiliary prediction i (with ``deep_supervision``), each weighted as configured. Mask losses
    are normalised by the number of GT instances (averaged over processes, at least 1).
    """

    def __init__(self, *, num_classes: int, matcher: HungarianMatcher, class_weight: float, mask_weight: float,
                 dice_weight: float, no_object_weight: float, num_points: int, oversample_ratio: float,
                 importance_sample_ratio: float, deep_supervision: bool = True):
        self.num_classes, self.matcher = num_classes, matcher
        self.weights = {"loss_ce": class_weight, "loss_mask": mask_weight, "loss_dice": dice_weight}
        self.no_object_weight = no_object_weight
        self.num_points, self.oversample_ratio = num_points, oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.deep_supervision = deep_supervision

    def class_loss(self, logits: torch.Tensor, targets: List[Dict], indices) -> torch.Tensor:
        """Cross-entropy of (B, Q, K+1) logits: matched queries their GT class, the others K."""
        labels = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device)
        for b, (src, tgt) in enumerate(indices):
            labels[b, src.to(logits.device)] = targets[b]["labels"][tgt.to(logits.device)]
        weight = torch.ones(self.num_classes + 1, device=logits.device, dtype=logits.dtype)
        weight[-1] = self.no_object_weight
        return F.cross_entropy(logits.transpose(1, 2), labels, weight)

    def mask_losses(self, masks: torch.Tensor, targets: List[Dict], indices, num_masks: float):
        """Sigmoid CE and Dice of the matched (B, Q, h, w) mask logits over sampled points."""
        src = torch.cat([masks[b, s.to(masks.device)] for b, (s, _) in enumerate(indices)])
        tgt = torch.cat([targets[b]["masks"][t.to(masks.device)] for b, (_, t) in enumerate(indices)])
        if len(src) == 0:
            zero = masks.sum() * 0
            return zero, zero
        src, tgt = src[:, None], tgt[:, None].to(src.dtype)
        with torch.no_grad():
            coords = get_uncertain_point_coords_with_randomness(
                src, _uncertainty, self.num_points, self.oversample_ratio, self.importance_sample_ratio
            )
            point_labels = point_sample(tgt, coords, align_corners=False)[:, 0]
        point_logits = point_sample(src, coords, align_corners=False)[:, 0]
        loss_mask = F.binary_cross_entropy_with_logits(point_logits, point_labels, reduction="none").mean(1)
        probs = point_logits.sigmoid()
        dice = 1 - (2 * (probs * point_labels).sum(-1) + 1) / (probs.sum(-1) + point_labels.sum(-1) + 1)
        return loss_mask.sum() / num_masks, dice.sum() / num_masks

    def __call__(self, outputs: Dict, targets: List[Dict]) -> Dict[str, torch.Tensor]:
        """
        Args:
            outputs: the transformer decoder's dict (``pred_logits``, ``pred_masks``, ``aux_outputs``).
            targets: B dicts with ``labels`` (T,) and ``masks`` (T, H, W) float at the padded input size.
        """
        return self.losses_and_matching(outputs, targets)[0]

    def losses_and_matching(self, outputs: Dict, targets: List[Dict]):
        """
        The losses (see ``__call__``) and the final prediction's matching: B pairs (query indices,
        target indices), as :class:`HungarianMatcher` returns them (heads on the final queries,
        e.g. an ID head, take their targets from it).
        """
        num_masks = torch.tensor(float(sum(len(t["labels"]) for t in targets)), device=outputs["pred_logits"].device)
        if comm.get_world_size() > 1:
            dist.all_reduce(num_masks)
        num_masks = max(num_masks.item() / comm.get_world_size(), 1.0)
        losses, final_indices = {}, None
        predictions = [outputs] + (list(outputs["aux_outputs"]) if self.deep_supervision else [])
        for i, prediction in enumerate(predictions):
            suffix = "" if i == 0 else f"_{i - 1}"
            indices = self.matcher(prediction, targets)
            if i == 0:
                final_indices = indices
            loss_mask, loss_dice = self.mask_losses(prediction["pred_masks"], targets, indices, num_masks)
            raw = {"loss_ce": self.class_loss(prediction["pred_logits"], targets, indices),
                   "loss_mask": loss_mask, "loss_dice": loss_dice}
            losses.update({k + suffix: v * self.weights[k] for k, v in raw.items()})
        return losses, final_indices
