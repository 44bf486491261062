"""FCOS head with CondInst's controller: per FPN level, classification logits, stride-normalised
ltrb box distances, centre-ness, and the parameters of each location's dynamic mask head."""

import math
from typing import List

import torch
from detectron2.layers import ShapeSpec
from torch import nn
from torch.nn import functional as F

__all__ = ["FCOSHead", "Scale"]


class Scale(nn.Module):
    """A learnable scalar multiplier (one per FPN level for the box regression)."""

    def __init__(self, init_value: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init_value)))

    def forward(self, x):
        return x * self.scale


def _tower(in_channels: int, num_convs: int, norm: str) -> nn.Sequential:
    """NUM_CONVS x (Conv3x3 + GroupNorm(32) + ReLU)."""
    layers = []
    for _ in range(num_convs):
        layers.append(nn.Conv2d(in_channels, in_channels, 3, padding=1, bias=not norm))
        if norm == "GN":
            layers.append(nn.GroupNorm(32, in_channels))
        elif norm:
            raise ValueError(f"MODEL.FCOS.NORM must be 'GN' or '', got {norm!r}")
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _init_convs(module: nn.Module) -> None:
    """FCOS's initialisation of every Conv2d in ``module``: weights N(0, 0.01), biases 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.01)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)


class FCOSHead(nn.Module):
    """
    Shared over levels: a classification tower -> ``cls_logits``; a box tower -> ``bbox_pred``
    (scaled per level, ReLU: distances in units of the level's stride), ``ctrness`` and
    ``controller`` (the dynamic mask-head parameters).
    """

    def __init__(self, input_shape: List[ShapeSpec], num_classes: int, num_convs: int, norm: str,
                 prior_prob: float, num_params: int, num_ids: int = 0):
        """
        Args:
            input_shape: one ShapeSpec per level (all with the same channels).
            num_params: parameters of one dynamic mask head (controller outputs).
            num_ids: > 0 adds IAI's ID branch on the classification tower (the paper's "2Conv":
                Conv3x3 + NORM + ReLU, then Conv3x3 to ``num_ids`` sigmoid logits: slots and "new").
        """
        super().__init__()
        channels = {s.channels for s in input_shape}
        if len(channels) != 1:
            raise ValueError(f"FCOS head needs FPN levels of one width, got {sorted(channels)}")
        c = channels.pop()
        self.num_classes = num_classes
        self.cls_tower = _tower(c, num_convs, norm)
        self.bbox_tower = _tower(c, num_convs, norm)
        self.cls_logits = nn.Conv2d(c, num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(c, 4, 3, padding=1)
        self.ctrness = nn.Conv2d(c, 1, 3, padding=1)
        self.controller = nn.Conv2d(c, num_params, 3, padding=1)
        self.scales = nn.ModuleList([Scale(1.0) for _ in input_shape])
        self.num_ids = num_ids
        if num_ids > 0:  # registered last: the other modules' initialisation is unchanged
            self.id_tower = _tower(c, 1, norm)
            self.id_logits = nn.Conv2d(c, num_ids, 3, padding=1)

        _init_convs(self)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))
        if num_ids > 0:
            nn.init.constant_(self.id_logits.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, features: List[torch.Tensor]):
        """
        Args:
            features: per level (N, C, Hl, Wl).
        Returns:
            four lists over levels: logits (N, K, Hl, Wl), bbox_reg (N, 4, Hl, Wl) >= 0 in
            strides, ctrness logits (N, 1, Hl, Wl), params (N, P, Hl, Wl); with an ID branch a
            fifth list, ID logits (N, num_ids, Hl, Wl).
        """
        logits, bbox_reg, ctrness, params, ids = [], [], [], [], []
        for level, feature in enumerate(features):
            cls_t = self.cls_tower(feature)
            box_t = self.bbox_tower(feature)
            logits.append(self.cls_logits(cls_t))
            bbox_reg.append(F.relu(self.scales[level](self.bbox_pred(box_t))))
            ctrness.append(self.ctrness(box_t))
            params.append(self.controller(box_t))
            if self.num_ids > 0:
                ids.append(self.id_logits(self.id_tower(cls_t)))
        if self.num_ids > 0:
            return logits, bbox_reg, ctrness, params, ids
        return logits, bbox_reg, ctrness, params
