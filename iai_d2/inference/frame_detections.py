"""Per-frame detection selection shared by the video models: thresholds, ranking score and
class-agnostic NMS on the box predictor's outputs of one image."""
from typing import Optional, Tuple

import torch
from detectron2.layers import nms
from detectron2.structures import Boxes, Instances

__all__ = ["select_frame_detections"]


def select_frame_detections(
    boxes: torch.Tensor,
    class_probs: torch.Tensor,
    image_size: Tuple[int, int],
    *,
    num_classes: int,
    cls_score_thresh: float,
    nms_thresh: float,
    max_per_frame: int,
    id_probs: Optional[torch.Tensor] = None,
    num_ids: int = 0,
    id_score_thresh: float = 0.0,
    weights: Tuple[float, float] = (1.0, 0.0),
) -> Instances:
    """
    Args:
        boxes: (R, K*4) class-specific or (R, 4) class-agnostic decoded boxes.
        class_probs: (R, K + 1) class probabilities (index K = background).
        image_size: (h, w) to clip boxes to.
        num_classes: K.
        cls_score_thresh: keep detections whose max foreground class probability s_cls exceeds it.
        nms_thresh: IoU threshold of the class-agnostic NMS.
        max_per_frame: detections kept after NMS.
        id_probs: (R, N + 1) ID probabilities, or None: then the ranking score is s_cls.
        num_ids: N (with id_probs).
        id_score_thresh: with id_probs, s_id (max over the N ID entries) must exceed it too.
        weights: (w_cls, w_id) of the ranking score w_cls * s_cls + w_id * s_id (with id_probs).
    Returns:
        Instances sorted by ranking score: pred_boxes, scores (s_cls), pred_classes,
        class_probs (M, K), rank_scores, and id_probs when given.
    """
    num_props = boxes.shape[0]
    fg_probs = class_probs[:, :num_classes]
    s_cls, classes = fg_probs.max(dim=1)

    boxes = boxes.view(num_props, boxes.shape[1] // 4, 4)
    if boxes.shape[1] > 1:
        boxes = boxes[torch.arange(num_props, device=boxes.device), classes]
    else:
        boxes = boxes[:, 0]
    boxes = Boxes(boxes)
    boxes.clip(image_size)

    valid = (s_cls > cls_score_thresh) & torch.isfinite(boxes.tensor).all(dim=1)
    if id_probs is None:
        rank_scores = s_cls
    else:
        s_id = id_probs[:, :num_ids].max(dim=1).values
        rank_scores = weights[0] * s_cls + weights[1] * s_id
        valid &= s_id > id_score_thresh
    keep = valid.nonzero().squeeze(1)
    keep = keep[nms(boxes.tensor[keep].float(), rank_scores[keep].float(), nms_thresh)]
    keep = keep[:max_per_frame]

    result = Instances(image_size)
    result.pred_boxes = boxes[keep]
    result.scores = s_cls[keep]
    result.pred_classes = classes[keep]
    result.class_probs = fg_probs[keep]
    result.rank_scores = rank_scores[keep]
    if id_probs is not None:
        result.id_probs = id_probs[keep]
    return result
