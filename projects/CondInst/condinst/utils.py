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
    Bilinear upsampling by an integer ``factor`` that keeps ``compute_locations`` aligned: input
    cell i (centre at ``i * s + s // 2``) lands on output cell ``i * factor + factor // 2``.

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
    tensor = F.pad(tensor, pad=(0, 1, 0, 1), mode="replicate")
    oh, ow = factor * h + 1, factor * w + 1
    tensor = F.interpolate(tensor, size=(oh, ow), mode="bilinear", align_corners=True)
    tensor = F.pad(tensor, pad=(factor // 2, 0, factor // 2, 0), mode="replicate")
    return tensor[:, :, : oh - 1, : ow - 1]
