"""CondInst's mask branch: a shared, instance-agnostic feature map for the dynamic mask heads."""

from typing import Dict, List

import fvcore.nn.weight_init as weight_init
import torch
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from torch import nn
from torch.nn import functional as F

from .utils import aligned_bilinear

__all__ = ["MaskBranch"]


class MaskBranch(nn.Module):
    """
    Each of ``in_features`` (e.g. P3, P4, P5) -> Conv3x3 + norm + ReLU to ``channels``; the coarser
    ones are upsampled (aligned) to the first and summed; then ``num_convs`` x (Conv3x3 + norm +
    ReLU) and a 1x1 conv to ``out_channels`` (8). With ``upsample`` > 1 the sum is upsampled
    (aligned) by that factor before the convs. Output stride = stride of the first feature /
    ``upsample``.
    """

    def __init__(self, input_shape: Dict[str, ShapeSpec], in_features: List[str], channels: int,
                 num_convs: int, out_channels: int, norm: str, upsample: int = 1):
        super().__init__()
        self.in_features = list(in_features)
        self.out_channels = out_channels
        first_stride = input_shape[self.in_features[0]].stride
        if upsample < 1 or first_stride % upsample:
            raise ValueError(f"MODEL.CONDINST.MASK_BRANCH.UPSAMPLE must be a divisor >= 1 of the stride "
                             f"{first_stride} of {self.in_features[0]}, got {upsample}")
        self.upsample = upsample
        self.out_stride = first_stride // upsample

        def conv3x3(cin):
            return Conv2d(cin, channels, 3, padding=1, bias=not norm, norm=get_norm(norm, channels),
                          activation=F.relu)

        self.refine = nn.ModuleList([conv3x3(input_shape[f].channels) for f in self.in_features])
        self.tower = nn.Sequential(*[conv3x3(channels) for _ in range(num_convs)])
        self.out = nn.Conv2d(channels, out_channels, 1)
        for module in list(self.refine) + list(self.tower) + [self.out]:
            weight_init.c2_msra_fill(module)

    def forward(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """
        Args:
            features: backbone outputs, at least ``in_features`` (N, C, Hl, Wl).
        Returns:
            (N, out_channels, H, W) at ``out_stride``.
        """
        x = None
        for i, name in enumerate(self.in_features):
            y = self.refine[i](features[name])
            if x is None:
                x = y
                continue
            factor = x.shape[-2] // y.shape[-2]
            y = aligned_bilinear(y, factor)[:, :, : x.shape[-2], : x.shape[-1]]
            x = x + y
        if self.upsample > 1:
            x = aligned_bilinear(x, self.upsample)
        return self.out(self.tower(x))
