"""TrackCondInst: CondInst with a MaskTrack R-CNN-style tracking embedding (tracking by detection),
the "Track" baseline of the CondInst detector."""
from typing import Dict, List, Optional, Tuple

import torch
from condinst import CondInst
from condinst.fcos_head import _init_convs, _tower
from condinst.meta_arch import _flatten
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import ImageList, Instances
from torch import nn

from .matching import track_loss
from .video_model import References, TrackVideoModel, tracking_config

__all__ = ["TrackEmbedHead", "TrackCondInst"]


class TrackEmbedHead(nn.Module):
    """
    Tracking branch beside the FCOS head, shared over its FPN levels: ``num_convs`` x (Conv3x3 +
    NORM + ReLU) (the FCOS tower) -> Conv3x3 to ``embed_dim``: one tracking embedding per location.
    """

    def __init__(self, input_shape: List[ShapeSpec], num_convs: int, norm: str, embed_dim: int):
        """
        Args:
            input_shape: one ShapeSpec per level (all with the same channels).
            num_convs, norm: tower depth and normalisation ("GN" or "").
            embed_dim: D, the embedding width.
        """
        super().__init__()
        channels = {s.channels for s in input_shape}
        if len(channels) != 1:
            raise ValueError(f"Tracking branch needs FPN levels of one width, got {sorted(channels)}")
        c = channels.pop()
        self.tower = _tower(c, num_convs, norm)
        self.embed = nn.Conv2d(c, embed_dim, 3, padding=1)
        _init_convs(self)  # as the FCOS head: affinities start near 0 and grow gradually

    def forward(self, features: List[torch.Tensor]) -> List[torch.Tensor]:
        """
        Args:
            features: per level (N, C, Hl, Wl).
        Returns:
            per level (N, D, Hl, Wl) embeddings.
        """
        return [self.embed(self.tower(f)) for f in features]


def instance_embeddings(
    embeddings: torch.Tensor, matched: torch.Tensor, gt_ids: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    One image's reference embeddings: each GT instance's mean embedding over the locations FCOS
    assigns to it; instances with no positive location are left out.

    Args:
        embeddings: (L, D) embeddings of the image's locations.
        matched: (L,) index of the GT instance of each location, -1 for none.
        gt_ids: (G,) identities of the GT instances.
    Returns:
        (G', D) embeddings and (G',) gt_ids of the instances with positives.
    """
    pos = matched >= 0
    count = torch.bincount(matched[pos], minlength=len(gt_ids))
    sums = embeddings.new_zeros((len(gt_ids), embeddings.shape[1])).index_add(0, matched[pos], embeddings[pos])
    has = count > 0
    return sums[has] / count[has, None].to(sums.dtype), gt_ids[has]


@META_ARCH_REGISTRY.register()
class TrackCondInst(TrackVideoModel, CondInst):
    """
    Tracking by detection on CondInst: :class:`TrackEmbedHead` gives each FCOS location a
    tracking embedding, a detection's embedding is its location's. The pair training, matching
    (:class:`TrackMemory`) and video inference are :class:`TrackVideoModel`'s, shared with
    TrackRCNN; this class supplies CondInst's hooks.

    Training: CondInst's losses on every frame; the references of a frame are its GT instances'
    mean embeddings over their FCOS positive locations, and ``loss_track`` classifies every
    positive location of the key frame over [new, reference instances] (target: the reference
    with the location's instance's ``gt_ids``, else new), normalised by the number of positives.
    Inference: CondInst's detections (MODEL.FCOS.INFERENCE_TH_TEST, class-aware NMS), the top
    MODEL.TRACK_HEAD.INFERENCE.MAX_PER_FRAME, masks binarised at TRACK_HEAD.INFERENCE.MASK_THRESH.
    """

    @configurable
    def __init__(self, *, tracking: Dict, track_head: TrackEmbedHead, track_loss_weight: float,
                 max_per_frame: int, **kwargs):
        """
        Args:
            tracking: arguments of :meth:`TrackVideoModel._setup_tracking` (see ``tracking_config``).
            track_head: the tracking branch.
            track_loss_weight: multiplier of ``loss_track``.
            max_per_frame: detections kept per frame at inference.
            kwargs: arguments of :class:`CondInst`.
        """
        super().__init__(**kwargs)
        self._setup_tracking(**tracking)
        self.track_head = track_head
        self.track_loss_weight = track_loss_weight
        self.detections_per_image = max_per_frame

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)  # CondInst's modules first: their initialisation is CondInst's
        shapes = ret["backbone"].output_shape()
        head = cfg.MODEL.TRACK_HEAD
        return {
            **ret,
            "tracking": tracking_config(cfg, cfg.MODEL.FCOS.NUM_CLASSES),
            "track_head": TrackEmbedHead([shapes[f] for f in cfg.MODEL.FCOS.IN_FEATURES], head.NUM_CONVS,
                                         cfg.MODEL.FCOS.NORM, head.EMBED_DIM),
            "track_loss_weight": head.LOSS_WEIGHT,
            "max_per_frame": head.INFERENCE.MAX_PER_FRAME,
        }

    def _embeddings(self, features: Dict[str, torch.Tensor]) -> List[torch.Tensor]:
        """Per FCOS level (N, D, Hl, Wl) tracking embeddings."""
        return self.track_head([features[f] for f in self.in_features])

    # ------------------------------------------------------------------ detector hooks
    def _frame_losses(
        self,
        images: ImageList,
        features: Dict[str, torch.Tensor],
        targets: List[Instances],
        references: Optional[References],
        make_references: bool,
    ) -> Tuple[Dict[str, torch.Tensor], Optional[References]]:
        outputs = self._head_outputs(features)
        losses = self.losses(images, targets, *outputs)
        if references is None and not make_references:
            return losses, None
        matched = self.fcos_assignment(images, targets, outputs[0])[0]  # (N, L)
        embeddings = _flatten(self._embeddings(features))  # (N, L, D)
        if references is not None:
            keys = [(emb[m >= 0], g.gt_ids[m[m >= 0]]) for emb, m, g in zip(embeddings, matched, targets)]
            losses.update(track_loss(keys, references, self.track_loss_weight))
        next_references = None
        if make_references:
            next_references = [instance_embeddings(emb, m, g.gt_ids) for emb, m, g in zip(embeddings, matched, targets)]
        return losses, next_references

    def _frame_detections(
        self, images: ImageList, features: Dict[str, torch.Tensor], height: int, width: int
    ) -> Instances:
        outputs = self._head_outputs(features)
        result = self.inference(images, *outputs, embeddings=self._embeddings(features))[0]
        return self.postprocess(result, height, width)
