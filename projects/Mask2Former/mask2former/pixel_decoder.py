"""Mask2Former's multi-scale pixel decoder: a deformable-attention transformer encoder over the
coarse backbone levels, then an FPN step up to the finest level for the per-pixel mask features."""
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.utils.registry import Registry
from torch import nn

from .ms_deform_attn import MSDeformAttn
from .position_encoding import sine_position_embedding

__all__ = ["PIXEL_DECODER_REGISTRY", "MSDeformAttnPixelDecoder", "build_pixel_decoder"]

PIXEL_DECODER_REGISTRY = Registry("MASK2FORMER_PIXEL_DECODER")
PIXEL_DECODER_REGISTRY.__doc__ = """Pixel decoders of Mask2Former: ``cls(cfg, input_shape)``, called
with the features, return (mask_features (B, C, H/4, W/4), the multi-scale features for the
transformer decoder, coarse to fine)."""


def build_pixel_decoder(cfg, input_shape: Dict[str, ShapeSpec]) -> nn.Module:
    """The pixel decoder named by ``MODEL.MASK2FORMER.PIXEL_DECODER_NAME``."""
    return PIXEL_DECODER_REGISTRY.get(cfg.MODEL.MASK2FORMER.PIXEL_DECODER_NAME)(cfg, input_shape)


class _EncoderLayer(nn.Module):
    """Deformable self-attention over all levels' tokens, then a feed-forward block (post-norm)."""

    def __init__(self, dim: int, ffn_dim: int, num_levels: int, num_heads: int, num_points: int, dropout: float):
        super().__init__()
        self.attn = MSDeformAttn(dim, num_levels, num_heads, num_points)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(ffn_dim, dim)
        )
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, src, pos, reference_points, spatial_shapes):
        src = self.norm1(src + self.dropout(self.attn(src + pos, reference_points, src, spatial_shapes)))
        return self.norm2(src + self.dropout(self.ffn(src)))


def encoder_reference_points(spatial_shapes: List[Tuple[int, int]], num_levels: int, device, dtype) -> torch.Tensor:
    """(S, L, 2): every token's cell centre (x, y) in [0, 1], repeated for the L levels."""
    points = []
    for h, w in spatial_shapes:
        y, x = torch.meshgrid(
            (torch.arange(h, dtype=dtype, device=device) + 0.5) / h,
            (torch.arange(w, dtype=dtype, device=device) + 0.5) / w,
            indexing="ij",
        )
        points.append(torch.stack((x.flatten(), y.flatten()), -1))
    return torch.cat(points)[:, None].expand(-1, num_levels, -1)


@PIXEL_DECODER_REGISTRY.register()
class MSDeformAttnPixelDecoder(nn.Module):
    """
    ``TRANSFORMER_IN_FEATURES`` (e.g. res3-res5) -> 1x1 conv + GN to CONV_DIM -> ENCODER_LAYERS
    deformable encoder layers (level embeddings + sine positions) -> one map per level; the
    finer ``IN_FEATURES`` (e.g. res2) join FPN-style (lateral 1x1 + upsampled coarser, 3x3);
    ``mask_features`` is a 1x1 conv of the finest map to MASK_DIM.
    """

    def __init__(self, cfg, input_shape: Dict[str, ShapeSpec]):
        super().__init__()
        m2f = cfg.MODEL.MASK2FORMER
        in_features = list(m2f.IN_FEATURES)
        missing = [f for f in in_features if f not in input_shape]
        if missing:
            raise ValueError(
                f"MODEL.MASK2FORMER.IN_FEATURES {missing} are not backbone outputs {sorted(input_shape)}"
            )
        # Fine to coarse.
        self.in_features = sorted(in_features, key=lambda f: input_shape[f].stride)
        self.transformer_in_features = sorted(m2f.TRANSFORMER_IN_FEATURES, key=lambda f: -input_shape[f].stride)
        if not set(self.transformer_in_features) <= set(self.in_features):
            raise ValueError("MODEL.MASK2FORMER.TRANSFORMER_IN_FEATURES must be a subset of IN_FEATURES")
        dim, norm = m2f.CONV_DIM, m2f.NORM
        self.num_levels = len(self.transformer_in_features)
        self.position_cell_centres = m2f.POSITION_AT_CELL_CENTRES
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(input_shape[f].channels, dim, 1), nn.GroupNorm(32, dim))
            for f in self.transformer_in_features
        )
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.constant_(proj[0].bias, 0)
        self.level_embed = nn.Parameter(torch.empty(self.num_levels, dim))
        nn.init.normal_(self.level_embed)
        self.encoder = nn.ModuleList(
            _EncoderLayer(dim, m2f.DIM_FEEDFORWARD, self.num_levels, m2f.NHEADS, m2f.DEFORM_POINTS, m2f.DROPOUT)
            for _ in range(m2f.ENCODER_LAYERS)
        )
        # FPN step for the levels finer than the transformer's, coarse to fine.
        self.fpn_features = [f for f in reversed(self.in_features) if f not in self.transformer_in_features]
        use_bias = norm == ""
        self.lateral_convs = nn.ModuleList()
        self.output_convs = nn.ModuleList()
        for f in self.fpn_features:
            self.lateral_convs.append(
                Conv2d(input_shape[f].channels, dim, 1, bias=use_bias, norm=get_norm(norm, dim))
            )
            self.output_convs.append(
                Conv2d(dim, dim, 3, padding=1, bias=use_bias, norm=get_norm(norm, dim), activation=F.relu)
            )
        self.mask_features = Conv2d(dim, m2f.MASK_DIM, 1)
        nn.init.kaiming_uniform_(self.mask_features.weight, a=1)
        nn.init.constant_(self.mask_features.bias, 0)
        self.num_feature_levels = min(self.num_levels, 3)  # for the transformer decoder
        self.mask_stride = input_shape[self.in_features[0]].stride

    def forward(self, features: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """
        Returns:
            mask_features (B, MASK_DIM, h0, w0) at the finest IN_FEATURES level, and the
            transformer decoder's inputs: the encoder outputs of the 3 coarsest levels (B, C, h, w),
            coarse to fine.
        """
        srcs, pos, shapes = [], [], []
        for lvl, f in enumerate(self.transformer_in_features):
            x = self.input_proj[lvl](features[f])
            shapes.append(tuple(x.shape[-2:]))
            embedding = sine_position_embedding(x, x.shape[1] // 2, self.position_cell_centres).flatten(2)
            embedding = embedding + self.level_embed[lvl][:, None]
            pos.append(embedding.transpose(1, 2))
            srcs.append(x.flatten(2).transpose(1, 2))
        src, pos = torch.cat(srcs, 1), torch.cat(pos, 1)
        ref = encoder_reference_points(shapes, self.num_levels, src.device, src.dtype)
        ref = ref[None].expand(src.shape[0], -1, -1, -1)
        for layer in self.encoder:
            src = layer(src, pos, ref, shapes)
        outs = [
            x.transpose(1, 2).reshape(src.shape[0], -1, h, w)
            for x, (h, w) in zip(src.split([h * w for h, w in shapes], 1), shapes)
        ]
        y = outs[-1]
        for f, lateral, output in zip(self.fpn_features, self.lateral_convs, self.output_convs):
            cur = lateral(features[f])
            y = output(cur + F.interpolate(y, size=cur.shape[-2:], mode="bilinear", align_corners=False))
        return self.mask_features(y), outs[: self.num_feature_levels]
