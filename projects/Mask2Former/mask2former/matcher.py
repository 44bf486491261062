"""Hungarian matching of Mask2Former's queries to the ground-truth instances of an image: class,
mask (sigmoid cross-entropy) and Dice costs, the mask costs over randomly sampled points."""
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from detectron2.projects.point_rend.point_features import point_sample
from scipy.optimize import linear_sum_assignment

__all__ = ["HungarianMatcher", "pairwise_dice_cost", "pairwise_sigmoid_ce_cost"]


def pairwise_sigmoid_ce_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(Q, P) logits, (T, P) binary targets -> (Q, T) mean binary cross-entropy over the P points."""
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (pos @ targets.t() + neg @ (1 - targets).t()) / logits.shape[1]


def pairwise_dice_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(Q, P) logits, (T, P) binary targets -> (Q, T) 1 - soft Dice (smoothed by 1)."""
    probs = logits.sigmoid()
    numerator = 2 * probs @ targets.t()
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


class HungarianMatcher:
    """
    Per image, the one-to-one assignment of queries to GT instances minimising
    ``cost_class * (-p(class)) + cost_mask * sigmoid CE + cost_dice * Dice``, the mask costs over
    ``num_points`` points drawn uniformly (the same points for predictions and targets).
    """

    def __init__(self, cost_class: float, cost_mask: float, cost_dice: float, num_points: int):
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("HungarianMatcher: all costs are 0")
        self.cost_class, self.cost_mask, self.cost_dice = cost_class, cost_mask, cost_dice
        self.num_points = num_points

    def cost_matrix(self, logits: torch.Tensor, masks: torch.Tensor, gt_classes: torch.Tensor,
                    gt_masks: torch.Tensor) -> torch.Tensor:
        """
        Args:
            logits: (Q, K+1) class logits; masks: (Q, h, w) mask logits of one image.
            gt_classes: (T,); gt_masks: (T, H, W) binary (any resolution: sampled by coordinates).
        Returns:
            (Q, T) cost.
        """
        cost_class = -logits.softmax(-1)[:, gt_classes]
        coords = torch.rand(1, self.num_points, 2, device=masks.device)
        tgt = point_sample(gt_masks[:, None].to(masks.dtype), coords.expand(len(gt_masks), -1, -1),
                           align_corners=False)[:, 0]
        out = point_sample(masks[:, None], coords.expand(len(masks), -1, -1), align_corners=False)[:, 0]
        return (
            self.cost_class * cost_class
            + self.cost_mask * pairwise_sigmoid_ce_cost(out, tgt)
            + self.cost_dice * pairwise_dice_cost(out, tgt)
        )

    @torch.no_grad()
    def __call__(self, outputs: Dict[str, torch.Tensor], targets: List[Dict[str, torch.Tensor]]
                 ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """
        Args:
            outputs: ``pred_logits`` (B, Q, K+1), ``pred_masks`` (B, Q, h, w).
            targets: B dicts with ``labels`` (T,) and ``masks`` (T, H, W).
        Returns:
            B pairs (query indices, target indices), int64, of equal length min(Q, T).
        """
        indices = []
        for b, target in enumerate(targets):
            if len(target["labels"]) == 0:
                empty = torch.zeros(0, dtype=torch.int64)
                indices.append((empty, empty))
                continue
            cost = self.cost_matrix(
                outputs["pred_logits"][b].float(), outputs["pred_masks"][b].float(), target["labels"], target["masks"]
            )
            rows, cols = linear_sum_assignment(cost.cpu().numpy())
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices
