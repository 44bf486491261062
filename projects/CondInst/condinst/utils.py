"""Small tensor helpers shared by the CondInst modules."""

import torch
import torch.nn.functional as F

__all__ = ["aligned_bilinear", "compute_locations"]


def compute_locations(height: int, width: int, stride: int, device=None) -> torch.Tensor:
    """
    Image coordinates of the cells of a feature map: cell (i, j) sits at
    ``(j * stride + stride // 2, i * stride + stride // 2)``.

    Returns:
        Tensor (height * width, 2): (x, y) per cell, row-major.
    """
    xs = torch.arange(0, width * stride, step=stride, dtype=torch.float32, device=device)
    ys = torch.arange(0, height * stride, step=stride, dtype=torch.float32, device=device)
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((x.reshape(-1), y.reshape(-1)), dim=1) + stride // 2


def aligned_bilinear(tensor: torch.Tensor, factor: int) -> torch.Tensor:
    """
    Bilinear upsampling by an integer ``factor`` that keeps ``compute_locations`` aligned: cell i
    of stride s covers pixels [i * s, (i + 1) * s) and its value sits at the centre
    ``i * s + s / 2``, so a map that is linear in the cell centres stays linear in the output
    pixel centres (``k + 0.5`` at stride 1); chaining (8 -> 4 -> 1) keeps the alignment.
    (AdelaiDet's corner-padded version shifts by ``factor // 2`` output cells per call, which
    does not compose.) Borders are clamped.

    Args:
        tensor: (N, C, H, W).
    Returns:
        (N, C, H * factor, W * factor).
    """
    assert tensor.dim() == 4 and factor >= 1 and int(factor) == factor
    factor = int(factor)
    if factor == 1:
        return tensor
    h, w = tensor.shape[2:]
    return F.interpolate(tensor, size=(h * factor, w * factor), mode="bilinear", align_corners=False)
