"""IAIMask2Former: Mask2Former turned into an online video instance segmenter with IAI's identity
pathway (:class:`iai_d2.modeling.IAIVideoModel`, shared with IAIRCNN and IAICondInst)."""
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import ImageList, Instances
from torch import nn

from iai_d2.inference.id_assignment import pairwise_mask_iou
from iai_d2.modeling import IAIVideoModel, video_config

from .meta_arch import Mask2Former

__all__ = ["IAIMask2Former", "query_id_targets"]


def query_id_targets(
    matching: Sequence[Tuple[torch.Tensor, torch.Tensor]], gt_ids: Sequence[torch.Tensor], num_queries: int,
    num_ids: int,
) -> torch.Tensor:
    """
    ID targets of every query from the matcher's assignment.

    Args:
        matching: B pairs (query indices, GT indices) of equal length (``HungarianMatcher``).
        gt_ids: B tensors (T_b,): each GT instance's ID target (memory slot 0..N-2 or N-1 "new").
        num_queries: Q; num_ids: N.
    Returns:
        (B, Q) long: a matched query takes its GT instance's ID target, the others N (background).
    """
    device = gt_ids[0].device if len(gt_ids) else None
    targets = torch.full((len(matching), num_queries), num_ids, dtype=torch.long, device=device)
    for b, ((queries, gts), ids) in enumerate(zip(matching, gt_ids)):
        targets[b, queries.to(ids.device)] = ids[gts.to(ids.device)]
    return targets


@META_ARCH_REGISTRY.register()
class IAIMask2Former(IAIVideoModel, Mask2Former):
    """
    Mask2Former on an :class:`iai_d2.modeling.IAIResNet` backbone (``build_iai_resnet_backbone``):
    one ResNet level is fused with the association memory before the pixel decoder, so the
    queries read temporally fused features. Training (clips), memory, ID targets, the dense ID
    decoder and loss, per-frame ID assignment and video inference are :class:`IAIVideoModel`'s;
    this class supplies Mask2Former's detector hooks.

    MODEL.IAI.ID_DECODER:
        "dense": the shared dense ID decoder on the association output (a detection's ID
            probabilities are the decoded probabilities averaged inside its mask).
        "query": a linear ID head on the final decoder queries (N+1 outputs: slots 0..N-2, "new",
            background), trained with cross-entropy (``loss_id_query``, weight
            MODEL.IAI.ID_LOSS_WEIGHT): the queries the matcher assigns to a GT instance take its
            ID target, the others background. A detection's ID probabilities are its query's softmax.
    Per frame at inference: every query scoring at least MODEL.MASK2FORMER.FRAME_SCORE_THRESH, at
    most MODEL.IAI.INFERENCE.MAX_PER_FRAME, score descending (see :meth:`Mask2Former.query_instances`).
    """

    ID_DECODERS = ("dense", "query")
    IDENTITY_MODULES = IAIVideoModel.IDENTITY_MODULES + ("id_head",)

    @configurable
    def __init__(self, *, video: Dict, id_head: nn.Module, id_loss_weight: float, max_per_frame: int,
                 frame_score_thresh: float, **kwargs):
        """
        Args:
            video: arguments of :meth:`IAIVideoModel._setup_video` (see ``video_config``).
            id_head: the query ID head (hidden_dim -> N+1), or None without the "query" decoder.
            id_loss_weight: weight of ``loss_id_query``.
            max_per_frame, frame_score_thresh: per-frame query selection at inference.
            kwargs: arguments of :class:`Mask2Former`.
        """
        super().__init__(**kwargs)
        self._setup_video(**video)
        self.id_head = id_head
        self.id_loss_weight = id_loss_weight
        self.max_per_frame = max_per_frame
        self.frame_score_thresh = frame_score_thresh

    @classmethod
    def from_config(cls, cfg):
        iai = cfg.MODEL.IAI
        if iai.ID_DECODER not in cls.ID_DECODERS:  # before building anything
            raise ValueError(
                f"MODEL.IAI.ID_DECODER must be one of {cls.ID_DECODERS} for IAIMask2Former, got {iai.ID_DECODER!r}"
            )
        if iai.ID_DECODER == "query" and iai.ID_LOSS != "softmax":
            raise ValueError(
                f"MODEL.IAI.ID_DECODER 'query' trains with MODEL.IAI.ID_LOSS 'softmax', got {iai.ID_LOSS!r}"
            )
        ret = super().from_config(cfg)
        backbone = ret["backbone"]
        m = cfg.MODEL.MASK2FORMER
        return {
            **ret,
            "video": video_config(cfg, backbone, m.NUM_CLASSES),
            "id_head": nn.Linear(m.HIDDEN_DIM, iai.NUM_IDS + 1) if iai.ID_DECODER == "query" else None,
            "id_loss_weight": iai.ID_LOSS_WEIGHT,
            "max_per_frame": iai.INFERENCE.MAX_PER_FRAME,
            "frame_score_thresh": m.FRAME_SCORE_THRESH,
        }

    # ------------------------------------------------------------------ detector hooks
    def _frame_detector_losses(
        self, images: ImageList, features: Dict[str, torch.Tensor], targets: List[Instances]
    ) -> Dict[str, torch.Tensor]:
        outputs = self.predict(features)
        losses, matching = self.criterion.losses_and_matching(outputs, self.set_targets(images, targets))
        if self.id_head is not None:
            logits = self.id_head(outputs["pred_embeds"])  # (B, Q, N+1)
            labels = query_id_targets(matching, [t.gt_ids for t in targets], logits.shape[1], self.num_ids)
            losses["loss_id_query"] = F.cross_entropy(logits.flatten(0, 1), labels.flatten()) * self.id_loss_weight
        return losses

    def _frame_detections(
        self, images: ImageList, features: Dict[str, torch.Tensor], first_frame: bool, height: int, width: int
    ) -> Instances:
        outputs = self.predict(features)
        detections = self.query_instances(outputs, 0, images.image_sizes[0], height, width)
        if self.id_head is not None:
            detections.id_probs = self.id_head(outputs["pred_embeds"][0]).softmax(-1)
        detections.remove("embeddings")
        detections = detections[detections.scores >= self.frame_score_thresh]
        order = detections.scores.argsort(descending=True)[: self.max_per_frame]
        return detections[order]

    def _detector_id_probs(self, frame: Dict, masks: torch.Tensor) -> torch.Tensor:
        """
        Each mask takes the ID probabilities of the query whose binary mask overlaps it most (mask
        IoU at the network input size); a mask no query overlaps is background (probability 1 on N).
        """
        outputs = self.predict(frame["features"])
        height, width = masks.shape[-2:]
        query_masks = self._mask_probs(outputs, 0, frame["images"].image_sizes[0], height, width) > self.mask_threshold
        iou, best = pairwise_mask_iou(masks, query_masks).max(1)  # over the Q queries
        probs = self.id_head(outputs["pred_embeds"][0]).softmax(-1)[best]
        background = F.one_hot(torch.full_like(best, self.num_ids), self.num_ids + 1).to(probs.dtype)
        return torch.where((iou > 0)[:, None], probs, background)
