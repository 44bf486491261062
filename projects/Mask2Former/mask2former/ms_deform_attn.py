"""Multi-scale deformable attention (Zhu et al., "Deformable DETR") in pure PyTorch: every query
samples a few points per head and level around its reference point (``F.grid_sample``, bilinear,
zero outside the map) and sums them with learned weights. No compiled op."""
import math
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MSDeformAttn", "ms_deform_attn_core"]


def ms_deform_attn_core(
    value: torch.Tensor,
    spatial_shapes: List[Tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """
    Args:
        value: (B, S, H, D) per head, the tokens of all levels flattened row-major, level after
            level (S = sum of h_l * w_l).
        spatial_shapes: L (h_l, w_l).
        sampling_locations: (B, Q, H, L, P, 2) (x, y) in [0, 1] of each level (0 and 1 are the
            outer edges of the map, as ``align_corners=False``).
        attention_weights: (B, Q, H, L, P), summing to 1 over (L, P) in MSDeformAttn.
    Returns:
        (B, Q, H * D).
    """
    batch, _, heads, dim = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    values = value.split([h * w for h, w in spatial_shapes], dim=1)
    grids = 2 * sampling_locations - 1  # grid_sample's [-1, 1]
    sampled = []
    for lvl, (h, w) in enumerate(spatial_shapes):
        # (B, S_l, H, D) -> (B*H, D, h, w)
        v = values[lvl].permute(0, 2, 3, 1).reshape(batch * heads, dim, h, w)
        # (B, Q, H, P, 2) -> (B*H, Q, P, 2)
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    # (B*H, D, Q, L*P) weighted by (B*H, 1, Q, L*P)
    sampled = torch.stack(sampled, dim=-2).flatten(-2)
    weights = attention_weights.transpose(1, 2).reshape(batch * heads, 1, queries, levels * points)
    out = (sampled * weights).sum(-1).view(batch, heads * dim, queries)
    return out.transpose(1, 2).contiguous()


class MSDeformAttn(nn.Module):
    """
    Deformable attention over L feature levels: per query, ``num_heads`` x L x ``num_points``
    sampling offsets (in units of each level's cells) around the query's reference point and
    their softmax weights, both linear in the query.
    """

    def __init__(self, d_model: int = 256, num_levels: int = 3, num_heads: int = 8, num_points: int = 4):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"MSDeformAttn: d_model {d_model} must be divisible by num_heads {num_heads}")
        self.d_model, self.num_levels, self.num_heads, self.num_points = d_model, num_levels, num_heads, num_points
        self.sampling_offsets = nn.Linear(d_model, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(d_model, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """Deformable DETR's initialisation: head h starts sampling along direction 2*pi*h/H,
        point p at distance p+1 cells; uniform attention."""
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        angles = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        grid = torch.stack([angles.cos(), angles.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(self.num_heads, 1, 1, 2).repeat(1, self.num_levels, self.num_points, 1)
        grid = grid * torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.constant_(self.value_proj.bias, 0.0)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.constant_(self.output_proj.bias, 0.0)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        value: torch.Tensor,
        spatial_shapes: List[Tuple[int, int]],
    ) -> torch.Tensor:
        """
        Args:
            query: (B, Q, C) (with positional embedding).
            reference_points: (B, Q, L, 2) (x, y) in [0, 1] per level.
            value: (B, S, C) the flattened tokens of the L levels.
            spatial_shapes: L (h_l, w_l).
        Returns:
            (B, Q, C).
        """
        batch, queries, _ = query.shape
        heads, levels, points = self.num_heads, self.num_levels, self.num_points
        v = self.value_proj(value).view(batch, value.shape[1], heads, self.d_model // heads)
        offsets = self.sampling_offsets(query).view(batch, queries, heads, levels, points, 2)
        weights = self.attention_weights(query).view(batch, queries, heads, levels * points)
        weights = weights.softmax(-1).view(batch, queries, heads, levels, points)
        # Offsets are in cells of each level: normalise by (w_l, h_l).
        normalizer = torch.tensor([[w, h] for h, w in spatial_shapes], dtype=query.dtype, device=query.device)
        locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        return self.output_proj(ms_deform_attn_core(v, spatial_shapes, locations, weights))
