"""The sine positional encoding of DETR / Mask2Former for feature maps."""
import math

import torch

__all__ = ["sine_position_embedding"]


def sine_position_embedding(
    x: torch.Tensor, num_feats: int, cell_centres: bool = True, temperature: float = 10000.0
) -> torch.Tensor:
    """
    Args:
        x: (B, C, H, W) a feature map (only its shape, device and dtype are used).
        num_feats: channels per axis; the embedding has 2 * num_feats channels (y first, then x).
        cell_centres: row i at (i + 0.5) / H (Deformable DETR's encoding); False: at (i + 1) / H,
            the reference Mask2Former's (its pixel decoder and transformer decoder both).
    Returns:
        (B, 2 * num_feats, H, W): sin / cos of the normalised row and column coordinates, scaled
        to (0, 2*pi], at geometric frequencies.
    """
    batch, _, h, w = x.shape
    eps, scale = 1e-6, 2 * math.pi
    y = torch.arange(1, h + 1, dtype=x.dtype, device=x.device)[:, None].expand(h, w)
    xx = torch.arange(1, w + 1, dtype=x.dtype, device=x.device)[None, :].expand(h, w)
    offset = 0.5 if cell_centres else 0.0
    y = (y - offset) / (h + eps) * scale
    xx = (xx - offset) / (w + eps) * scale
    dim_t = torch.arange(num_feats, dtype=x.dtype, device=x.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)
    pos_x, pos_y = xx[..., None] / dim_t, y[..., None] / dim_t
    pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=-1).flatten(-2)
    pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=-1).flatten(-2)
    pos = torch.cat((pos_y, pos_x), dim=-1).permute(2, 0, 1)
    return pos[None].expand(batch, -1, -1, -1)
