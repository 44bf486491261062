"""Mask2Former's transformer decoder: learnable queries refined layer by layer, each layer
cross-attending to one feature level (round robin, coarse to fine) with *masked attention* (only
inside the mask the previous prediction gives the query), then self-attention and a FFN; every
layer's prediction (classes, masks, query embeddings) is returned for deep supervision."""
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .position_encoding import sine_position_embedding

__all__ = ["AttentionLayer", "MaskedTransformerDecoder", "attention_mask_from_logits"]


def attention_mask_from_logits(mask_logits: torch.Tensor, size, num_heads: int) -> torch.Tensor:
    """
    The masked-attention mask of Mask2Former.

    Args:
        mask_logits: (B, Q, H, W) mask logits of the previous prediction.
        size: (h, w) of the attended feature level.
        num_heads: attention heads.
    Returns:
        (B * num_heads, Q, h * w) bool, True where a query may NOT attend: outside its mask
        (sigmoid < 0.5 after bilinear resizing). A query whose mask is empty at this level attends
        everywhere (an all-masked row would give NaN).
    """
    resized = F.interpolate(mask_logits, size=size, mode="bilinear", align_corners=False)
    blocked = resized.sigmoid().flatten(2) < 0.5
    blocked = blocked & ~blocked.all(-1, keepdim=True)
    return blocked.repeat_interleave(num_heads, dim=0).detach()


class AttentionLayer(nn.Module):
    """Queries attend to a memory (keys with positions) under an optional mask, post-norm: the
    masked cross-attention to a feature level, and with the queries as memory, self-attention."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: Optional[torch.Tensor] = None,
        pos: Optional[torch.Tensor] = None,
        query_pos: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """tgt (B, Q, C), memory (B, S, C), memory_mask (B * heads, Q, S) bool (True = blocked)."""
        q = tgt if query_pos is None else tgt + query_pos
        k = memory if pos is None else memory + pos
        out = self.attn(q, k, memory, attn_mask=memory_mask, need_weights=False)[0]
        return self.norm(tgt + self.dropout(out))


class FFNLayer(nn.Module):
    def __init__(self, dim: int, ffn_dim: int, dropout: float = 0.0):
        super().__init__()
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(ffn_dim, dim)
        )
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tgt: torch.Tensor) -> torch.Tensor:
        return self.norm(tgt + self.dropout(self.ffn(tgt)))


class MLP(nn.Sequential):
    """Linear layers with ReLU between them."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int):
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        layers = []
        for i in range(num_layers):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < num_layers - 1:
                layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class MaskedTransformerDecoder(nn.Module):
    """
    ``num_queries`` learnable queries (features + positions), ``dec_layers`` layers of
    [masked cross-attention to level l % L, self-attention, FFN]; before the first layer and after
    each, a shared head predicts class logits (K+1, last = no object), mask logits (the dot
    product of an MLP of the normed query with the mask features) and the normed query, whose
    mask sets the next layer's attention mask. ``position_cell_centres``: the feature maps' sine
    positions (see :func:`sine_position_embedding`).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        hidden_dim: int,
        num_queries: int,
        num_heads: int,
        dim_feedforward: int,
        dec_layers: int,
        mask_dim: int,
        num_feature_levels: int = 3,
        position_cell_centres: bool = True,
    ):
        super().__init__()
        self.position_cell_centres = position_cell_centres
        self.num_heads, self.num_layers, self.num_feature_levels = num_heads, dec_layers, num_feature_levels
        self.cross_attention = nn.ModuleList(AttentionLayer(hidden_dim, num_heads) for _ in range(dec_layers))
        self.self_attention = nn.ModuleList(AttentionLayer(hidden_dim, num_heads) for _ in range(dec_layers))
        self.ffn = nn.ModuleList(FFNLayer(hidden_dim, dim_feedforward) for _ in range(dec_layers))
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(num_feature_levels, hidden_dim)
        self.input_proj = nn.ModuleList(
            nn.Conv2d(in_channels, hidden_dim, 1) if in_channels != hidden_dim else nn.Identity()
            for _ in range(num_feature_levels)
        )
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    def forward(self, features: List[torch.Tensor], mask_features: torch.Tensor) -> Dict:
        """
        Args:
            features: the pixel decoder's multi-scale maps (B, C, h_l, w_l), coarse to fine.
            mask_features: (B, mask_dim, H, W).
        Returns:
            dict with the last prediction ``pred_logits`` (B, Q, K+1), ``pred_masks`` (B, Q, H, W),
            ``pred_embeds`` (B, Q, hidden_dim) and ``aux_outputs``: the earlier predictions (same
            keys, first = from the learnable queries alone).
        """
        if len(features) != self.num_feature_levels:
            raise ValueError(f"MaskedTransformerDecoder expects {self.num_feature_levels} levels, got {len(features)}")
        srcs, pos, sizes = [], [], []
        for lvl, x in enumerate(features):
            sizes.append(tuple(x.shape[-2:]))
            embedding = sine_position_embedding(x, self.query_feat.weight.shape[1] // 2, self.position_cell_centres)
            pos.append(embedding.flatten(2).transpose(1, 2))
            srcs.append((self.input_proj[lvl](x).flatten(2) + self.level_embed.weight[lvl][:, None]).transpose(1, 2))
        batch = mask_features.shape[0]
        query_pos = self.query_embed.weight[None].expand(batch, -1, -1)
        output = self.query_feat.weight[None].expand(batch, -1, -1)

        predictions = [self._predict(output, mask_features)]
        for i in range(self.num_layers):
            lvl = i % self.num_feature_levels
            attn_mask = attention_mask_from_logits(predictions[-1]["pred_masks"], sizes[lvl], self.num_heads)
            output = self.cross_attention[i](output, srcs[lvl], attn_mask, pos[lvl], query_pos)
            output = self.self_attention[i](output, output, pos=query_pos, query_pos=query_pos)
            output = self.ffn[i](output)
            predictions.append(self._predict(output, mask_features))
        return {**predictions[-1], "aux_outputs": predictions[:-1]}

    def _predict(self, output: torch.Tensor, mask_features: torch.Tensor) -> Dict[str, torch.Tensor]:
        embeds = self.decoder_norm(output)
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_embed(embeds), mask_features)
        return {"pred_logits": self.class_embed(embeds), "pred_masks": masks, "pred_embeds": embeds}
