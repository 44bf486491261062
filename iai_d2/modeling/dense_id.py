"""
Dense identity decoding from the association output (AOT-style): every position of the HAB output
is classified into the N+1 ID classes (memory slots 0..N-2, "new" N-1, background N). Training
supervises every pixel with the slot of the GT instance covering it; at inference a detection's ID
probabilities are the decoded probabilities averaged inside its mask. Optionally (AOT's decoder, one
step) the HAB output is upsampled to a finer backbone level and fused with its features, so that
identities are decoded on a finer grid than the association runs on.
"""
from typing import Optional


import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable

__all__ = ["DenseIDHead"]


class DenseIDHead(nn.Module):
    """
    Conv3x3 + ReLU on the HAB output map; with a skip level, 2x bilinear upsampling + a 1x1
    lateral conv of the skip features, Conv3x3 + ReLU; then Conv1x1 -> (B, N+1, h', w') ID logits
    at the output stride (the association stride, or half of it with a skip level).
    """

    @configurable
    def __init__(
        self,
        *,
        in_channels: int,
        num_ids: int,
        conv_dim: int,
        stride: int,
        skip_channels: Optional[int] = None,
    ):
        """
        Args:
            in_channels: HAB width C.
            num_ids: N; the head predicts N+1 classes.
            conv_dim: width of the hidden convs.
            stride: stride of the association level.
            skip_channels: channels of the skip level (stride / 2), or None for no skip.
        """
        super().__init__()
        self.num_ids = num_ids
        self.stride = stride if skip_channels is None else stride // 2
        self.conv = nn.Conv2d(in_channels, conv_dim, 3, padding=1)
        convs = [self.conv]
        if skip_channels is None:
            self.lateral = self.fuse = None
        else:
            self.lateral = nn.Conv2d(skip_channels, conv_dim, 1)
            self.fuse = nn.Conv2d(conv_dim, conv_dim, 3, padding=1)
            convs += [self.lateral, self.fuse]
        self.predictor = nn.Conv2d(conv_dim, num_ids + 1, 1)
        for conv in convs:
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        nn.init.normal_(self.predictor.weight, std=0.01)
        nn.init.zeros_(self.predictor.bias)

    @classmethod
    def from_config(cls, cfg, stride: int, skip_channels: Optional[int] = None):
        return {
            "in_channels": cfg.MODEL.IAI.ASSOCIATION.DIM,
            "num_ids": cfg.MODEL.IAI.NUM_IDS,
            "conv_dim": cfg.MODEL.IAI.DENSE_ID.CONV_DIM,
            "stride": stride,
            "skip_channels": skip_channels,
        }

    def forward(self, hab: torch.Tensor, skip: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Args:
            hab: (B, C, h, w) HAB output.
            skip: (B, C_skip, 2h, 2w) features of the skip level; required iff the head has one.
        Returns:
            (B, N+1, h', w') ID logits, h' = h (no skip) or 2h.
        """
        if (skip is None) != (self.lateral is None):
            raise ValueError("DenseIDHead: pass the skip-level features iff the head was built with a skip level")
        x = F.relu(self.conv(hab))
        if self.lateral is not None:
            x = self._upsample2x(x)[..., : skip.shape[-2], : skip.shape[-1]] + self.lateral(skip)
            x = F.relu(self.fuse(x))
        return self.predictor(x)

    @staticmethod
    def _upsample2x(x: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, C, 2h, 2w) bilinear, output j at input j / 2 (token i of a level
        sits at pixel s*i, so skip-level token 2i is association token i)."""
        h, w = x.shape[-2:]
        up = F.interpolate(
            F.pad(x, (0, 1, 0, 1), mode="replicate"), size=(2 * h + 1, 2 * w + 1), mode="bilinear", align_corners=True
        )
        return up[..., : 2 * h, : 2 * w]

    def upsample(self, logits: torch.Tensor) -> torch.Tensor:
        """
        (B, N+1, h, w) -> (B, N+1, h*s, w*s) at the padded image size (s: output stride), bilinear,
        with token i at pixel s*i (where the backbone feature sits; beyond the last token the logits
        are held constant).
        """
        s = self.stride
        h, w = logits.shape[-2:]
        up = F.interpolate(
            F.pad(logits, (0, 1, 0, 1), mode="replicate"), scale_factor=s, mode="bilinear", align_corners=False
        )
        return up[..., s // 2 : s // 2 + h * s, s // 2 : s // 2 + w * s]

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """
        Pixel-wise cross-entropy, foreground and background pixels weighted equally (each term is
        a mean over its pixels, so the few foreground pixels are not drowned).

        Args:
            logits: (B, N+1, h, w).
            labels: (B, h*s, w*s) long ID targets (slot, N-1 "new", N background).
        Returns:
            scalar.
        """
        ce = F.cross_entropy(self.upsample(logits), labels, reduction="none")
        fg = labels < self.num_ids
        loss_bg = ce[~fg].mean() if bool((~fg).any()) else ce.sum() * 0
        loss_fg = ce[fg].mean() if bool(fg.any()) else ce.sum() * 0
        return 0.5 * (loss_fg + loss_bg)

    def detection_probs(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """
        Args:
            logits: (1, N+1, h, w) of one frame.
            masks: (M, H, W) bool detection masks at the network input size (H <= h*s, W <= w*s,
                top-left aligned).
        Returns:
            (M, N+1) ID probabilities: the decoded probabilities averaged inside each mask
            (uniform for an empty mask).
        """
        H, W = masks.shape[-2:]
        probs = self.upsample(logits)[0, :, :H, :W].softmax(dim=0).flatten(1)  # (N+1, H*W)
        m = masks.flatten(1).to(probs.dtype)  # (M, H*W)
        area = m.sum(1, keepdim=True)
        mean = (m @ probs.T) / area.clamp(min=1)
        return torch.where(area > 0, mean, torch.full_like(mean, 1.0 / (self.num_ids + 1)))
