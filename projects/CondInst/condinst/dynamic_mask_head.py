"""CondInst's dynamic mask head: per instance, a few 1x1 convs whose weights come from the
controller, run on the mask-branch features plus relative coordinates; and the Dice loss."""

from typing import List, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .utils import aligned_bilinear, compute_locations

__all__ = ["DynamicMaskHead", "dice_loss"]


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """
    Args:
        logits, targets: (K, ...) mask logits and {0, 1} targets.
    Returns:
        (K,) 1 - 2 |p t| / (|p|^2 + |t|^2), p = sigmoid(logits).
    """
    p = logits.sigmoid().flatten(1)
    t = targets.float().flatten(1)
    inter = (p * t).sum(dim=1)
    union = (p * p).sum(dim=1) + (t * t).sum(dim=1)
    return 1.0 - 2.0 * inter / (union + eps)


class DynamicMaskHead(nn.Module):
    """
    ``num_layers`` dynamic 1x1 convs (ReLU between them): (2 + in_channels) -> channels -> ...
    -> 1. Input channels 0, 1 are the relative coordinates ``(instance location - pixel location)
    / size_of_interest`` (x, y), the rest the mask-branch features. No parameters of its own:
    the controller predicts ``num_params`` numbers per instance, laid out as all layers' weights
    (row-major (out, in)) followed by all layers' biases.
    """

    def __init__(self, in_channels: int, channels: int, num_layers: int, feat_stride: int,
                 out_stride: int):
        """
        Args:
            in_channels: mask-branch channels; feat_stride: mask-branch stride (8);
            out_stride: stride of the mask logits (4), upsampled to 1 by ``forward``.
        """
        super().__init__()
        if num_layers < 1:
            raise ValueError("the dynamic mask head needs at least one layer")
        if feat_stride % out_stride:
            raise ValueError(f"MODEL.CONDINST.MASK_OUT_STRIDE={out_stride} must divide the mask-branch stride "
                             f"{feat_stride} (stride of MASK_BRANCH.IN_FEATURES[0] / MASK_BRANCH.UPSAMPLE)")
        self.in_channels, self.channels, self.num_layers = in_channels, channels, num_layers
        self.feat_stride, self.out_stride = feat_stride, out_stride
        dims = [in_channels + 2] + [channels] * (num_layers - 1) + [1]
        self.layer_dims: List[Tuple[int, int]] = list(zip(dims[:-1], dims[1:]))  # (in, out)
        self.weight_nums = [cin * cout for cin, cout in self.layer_dims]
        self.bias_nums = [cout for _, cout in self.layer_dims]
        self.num_params = sum(self.weight_nums) + sum(self.bias_nums)

    def parse_params(self, params: torch.Tensor):
        """(K, num_params) -> per layer weights (K * out, in, 1, 1) and biases (K * out,)."""
        k = params.shape[0]
        splits = torch.split(params, self.weight_nums + self.bias_nums, dim=1)
        weights, biases = splits[: self.num_layers], splits[self.num_layers:]
        weights = [w.reshape(k * cout, cin, 1, 1) for w, (cin, cout) in zip(weights, self.layer_dims)]
        biases = [b.reshape(k * cout) for b, (_, cout) in zip(biases, self.layer_dims)]
        return weights, biases

    def relative_coords(self, locations: torch.Tensor, sizes: torch.Tensor, height: int, width: int):
        """
        Args:
            locations: (K, 2) instance locations (x, y) in image pixels; sizes: (K,) normalisers.
        Returns:
            (K, 2, height, width): (instance - pixel location) / size at the mask-feature cells.
        """
        grid = compute_locations(height, width, self.feat_stride, device=locations.device)  # (HW, 2)
        rel = (locations[:, None, :] - grid[None]) / sizes.to(grid.dtype)[:, None, None]
        return rel.permute(0, 2, 1).reshape(-1, 2, height, width)

    def mask_logits(self, mask_feats: torch.Tensor, im_inds: torch.Tensor, locations: torch.Tensor,
                    sizes: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """
        Args:
            mask_feats: (N, C, H, W) mask-branch output; im_inds: (K,) image of each instance;
            locations: (K, 2); sizes: (K,); params: (K, num_params).
        Returns:
            (K, 1, H, W) mask logits at the mask-branch stride.
        """
        k = params.shape[0]
        h, w = mask_feats.shape[-2:]
        if k == 0:
            return mask_feats.new_zeros((0, 1, h, w))
        x = torch.cat((self.relative_coords(locations, sizes, h, w), mask_feats[im_inds]), dim=1)
        x = x.reshape(1, -1, h, w)
        weights, biases = self.parse_params(params)
        for i, (weight, bias) in enumerate(zip(weights, biases)):
            x = F.conv2d(x, weight, bias, groups=k)
            if i < self.num_layers - 1:
                x = F.relu(x)
        return x.reshape(k, 1, h, w)

    def forward(self, mask_feats, im_inds, locations, sizes, params):
        """
        Same arguments as ``mask_logits``. Returns (K, 1, H * feat_stride, W * feat_stride): the
        logits at ``out_stride`` upsampled (aligned) to image pixels (of the padded batch).
        """
        logits = self.mask_logits(mask_feats, im_inds, locations, sizes, params)
        logits = aligned_bilinear(logits, self.feat_stride // self.out_stride)  # stride out_stride
        return aligned_bilinear(logits, self.out_stride)  # stride 1
