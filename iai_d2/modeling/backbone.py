"""
IAI backbones: a ResNet whose association level (res5 as in the paper, or res3 / res4 for a finer
token grid; MODEL.IAI.ASSOCIATION.IN_FEATURE) is fused with the Hybrid Association Block before
the neck (the FPN of :class:`IAIFPN`, or the head's own, e.g. Mask2Former's pixel decoder, after
:class:`IAIResNet`):

    resX' = concat[encoder_projector(resX) (C), HAB output (C), cls_projector(resX) (resX_ch - 2C)]

resX' has resX's channel count, so the neck (and every head after it) keeps its shape and COCO
image-model checkpoints load unchanged; the new modules live under `backbone.association.*`.
The HAB output map is also returned under the key "association" (the dense ID decoder reads it).
"""

from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool, LastLevelP6P7
from detectron2.modeling.backbone.resnet import build_resnet_backbone

from .association import HybridAssociationBlock, tokens_to_map
from .identification import IDBank
from .memory import AssociationMemory

__all__ = [
    "AssociationLevel",
    "IAIAssociation",
    "IAIFPN",
    "IAIResNet",
    "build_iai_resnet_backbone",
    "build_iai_resnet_fpn_backbone",
    "build_iai_retinanet_resnet_fpn_backbone",
]


class IAIAssociation(nn.Module):
    """The association path on one backbone level: projectors, HAB and ID bank."""

    @configurable
    def __init__(
        self,
        *,
        in_channels: int,
        stride: int,
        num_ids: int,
        hab: HybridAssociationBlock,
        use_cls_projector: bool = True,
    ):
        """
        Args:
            in_channels: channels of the association level.
            stride: stride of the association level (the ID bank's stride).
            num_ids: N (MODEL.IAI.NUM_IDS).
            hab: the block, of width C.
            use_cls_projector: False fills the classification projector's channels with zeros.
        """
        super().__init__()
        dim = hab.dim
        cls_channels = in_channels - 2 * dim
        if cls_channels <= 0:
            raise ValueError(
                f"the association path needs more channels than 2 * MODEL.IAI.ASSOCIATION.DIM, got "
                f"{in_channels} channels and DIM={dim}; lower DIM"
            )
        self.in_channels = in_channels
        self.cls_channels = cls_channels
        self.encoder_projector = nn.Conv2d(in_channels, dim, 1)
        self.cls_projector = nn.Conv2d(in_channels, cls_channels, 1) if use_cls_projector else None
        self.hab = hab
        self.id_bank = IDBank(num_ids, dim, stride)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        return {
            "in_channels": input_shape.channels,
            "stride": input_shape.stride,
            "num_ids": cfg.MODEL.IAI.NUM_IDS,
            "hab": HybridAssociationBlock(cfg),
            "use_cls_projector": cfg.MODEL.IAI.ASSOCIATION.CLS_PROJECTOR,
        }

    def forward(
        self, feature: torch.Tensor, memory: AssociationMemory
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            feature: (B, in_ch, h, w) association-level features of one frame per stream.
            memory: empty -> reference pass (Y = 0), else match against the memory.
        Returns:
            fused: (B, in_ch, h, w) = concat[projection (C), HAB output (C), cls projection].
            hab: (B, C, h, w) the HAB output.
        """
        B, _, h, w = feature.shape
        x = self.encoder_projector(feature)
        tokens = x.flatten(2).permute(2, 0, 1)
        if memory.is_empty:
            out = memory.reference(tokens, (h, w))
        else:
            out = memory.match(tokens, (h, w))
        hab = tokens_to_map(out, (h, w))
        if self.cls_projector is not None:
            cls = self.cls_projector(feature)
        else:
            cls = feature.new_zeros(B, self.cls_channels, h, w)
        return torch.cat([x, hab, cls], dim=1), hab


class AssociationLevel:
    """
    The association half of an IAI backbone, shared by :class:`IAIFPN` and :class:`IAIResNet`:
    one bottom-up level fused with the association memory (``new_memory`` / ``associate`` /
    ``remember``). The backbone owns ``bottom_up`` and calls :meth:`_setup_association` after
    its ``nn.Module`` initialisation; ``top_down`` (the backbone's own) maps the associated
    bottom-up features to its outputs.

    Per-frame use by a video model:
        feats = backbone.bottom_up(images)                     # once for all frames
        memory = backbone.new_memory()
        for each frame batch:  out = backbone.top_down(backbone.associate(frame_feats, memory))
                               ... heads -> Y
                               backbone.remember(memory, Y, new_ids)
    """

    def _setup_association(
        self,
        association: IAIAssociation,
        association_feature: str,
        global_interval: int,
        max_global: int,
        eviction: str = "oldest",
    ) -> None:
        """
        Args:
            association: the association path, built for ``association_feature``'s shape.
            association_feature: the bottom-up output it fuses (e.g. "res5").
            global_interval, max_global, eviction: memory settings (MODEL.IAI.MEMORY.*).
        """
        shape = self.bottom_up.output_shape()[association_feature]
        if association.in_channels != shape.channels or association.id_bank.stride != shape.stride:
            raise ValueError(
                f"association path built for {association.in_channels} channels / stride "
                f"{association.id_bank.stride}, but {association_feature} has {shape.channels} / "
                f"{shape.stride}"
            )
        self.association = association
        self.association_feature = association_feature
        self.global_interval = global_interval
        self.max_global = max_global
        self.eviction = eviction

    def new_memory(self) -> AssociationMemory:
        """An empty association memory for a new video (or a new batch of clips)."""
        return AssociationMemory(
            self.association.hab, self.association.id_bank, self.global_interval, self.max_global, self.eviction
        )

    def associate(
        self, features: Dict[str, torch.Tensor], memory: AssociationMemory
    ) -> Dict[str, torch.Tensor]:
        """
        Args:
            features: bottom-up features of one frame per stream (res2..res5, (B, C_l, H_l, W_l)).
            memory: the streams' memory; empty -> reference pass.
        Returns:
            a copy of `features` whose association level is replaced by its fused version (same
            shape), plus "association": the HAB output (B, C, h, w).
        """
        name = self.association_feature
        out = dict(features)
        out[name], out["association"] = self.association(features[name], memory)
        return out

    def remember(self, memory: AssociationMemory, Y: torch.Tensor, new_ids: bool) -> None:
        """
        Write the frame associated last into the memory with its ID mask.

        Args:
            memory: the memory passed to the last `associate` call.
            Y: (B, N+1, Hp, Wp) one-hot ID mask at the padded image size.
            new_ids: the frame allocated new IDs (may add it to the global memory).
                Ignored for the first frame, which always enters the global memory.
        """
        if memory.is_empty:
            memory.reset_memory(Y)
        else:
            memory.update(Y, new_ids)

    def _check_input_size(self, x: torch.Tensor) -> None:
        """Single-frame input (B, 3, Hp, Wp) must be padded to ``size_divisibility``."""
        s = self.size_divisibility
        if x.shape[-2] % s or x.shape[-1] % s:
            raise ValueError(
                f"{type(self).__name__} input of size {tuple(x.shape[-2:])} is not a multiple of the "
                f"res5 stride {s}: pad images with size_divisibility = backbone.size_divisibility"
            )


class IAIFPN(AssociationLevel, FPN):
    """
    Detectron2 FPN with the association path on one of its inputs (:class:`AssociationLevel`).
    Same attribute names as FPN (bottom_up, fpn_lateral*, fpn_output*, top_block), plus
    `association`; ``top_down`` is the FPN's lateral / top-down path.
    """

    def __init__(
        self,
        bottom_up,
        in_features,
        out_channels,
        association: IAIAssociation,
        association_feature: str,
        norm="",
        top_block=None,
        fuse_type="sum",
        global_interval: int = 3,
        max_global: int = 8,
        eviction: str = "oldest",
    ):
        """
        Args:
            bottom_up, in_features, out_channels, norm, top_block, fuse_type: as for FPN.
            association: the association path.
            association_feature: the input it fuses (one of in_features, e.g. "res5").
            global_interval, max_global, eviction: memory settings (MODEL.IAI.MEMORY.*).
        """
        super().__init__(bottom_up, in_features, out_channels, norm, top_block, fuse_type)
        if association_feature not in self.in_features:
            raise ValueError(
                f"MODEL.IAI.ASSOCIATION.IN_FEATURE={association_feature} must be one of "
                f"MODEL.FPN.IN_FEATURES={list(self.in_features)}"
            )
        self._setup_association(association, association_feature, global_interval, max_global, eviction)

    def top_down(self, features: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """
        FPN lateral / top-down path and top block on given bottom-up features (no bottom_up call).

        Returns:
            {"p2": (B, out_ch, H/4, W/4), ..., "p6": ...}
        """
        prev = self.lateral_convs[0](features[self.in_features[-1]])
        results = [self.output_convs[0](prev)]
        for name, lateral_conv, output_conv in zip(
            self.in_features[-2::-1], self.lateral_convs[1:], self.output_convs[1:]
        ):
            prev = lateral_conv(features[name]) + F.interpolate(
                prev, scale_factor=2.0, mode="nearest"
            )
            if self._fuse_type == "avg":
                prev = prev / 2
            results.insert(0, output_conv(prev))
        if self.top_block is not None:
            if self.top_block.in_feature in features:
                top_in = features[self.top_block.in_feature]
            else:
                top_in = results[self._out_features.index(self.top_block.in_feature)]
            results.extend(self.top_block(top_in))
        return dict(zip(self._out_features, results))

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """
        Single-frame use: bottom_up -> associate (fresh memory, reference pass) -> top_down.

        Args:
            x: (B, 3, Hp, Wp) with Hp, Wp multiples of the res5 stride.
        """
        self._check_input_size(x)
        return self.top_down(self.associate(self.bottom_up(x), self.new_memory()))


class IAIResNet(AssociationLevel, Backbone):
    """
    A plain ResNet (res2..res5, no FPN) with the association path on one of its outputs, for
    heads with their own multi-scale neck (Mask2Former's pixel decoder). ``top_down`` is the
    identity: the outputs are the bottom-up features with the association level replaced by its
    fused map (same shape, so the heads of an image model keep their shapes). An image model's
    checkpoint on the plain ResNet (keys ``backbone.stem.*``, ``backbone.res2.*``, ...) loads: its
    ResNet keys are moved under ``bottom_up`` on loading.
    """

    def __init__(self, bottom_up: Backbone, association: IAIAssociation, association_feature: str,
                 global_interval: int = 3, max_global: int = 8, eviction: str = "oldest"):
        """
        Args:
            bottom_up: the ResNet.
            association, association_feature, global_interval, max_global, eviction: see
                :meth:`AssociationLevel._setup_association`.
        """
        super().__init__()
        self.bottom_up = bottom_up
        self._setup_association(association, association_feature, global_interval, max_global, eviction)
        self._out_features = list(bottom_up.output_shape())
        self.register_load_state_dict_pre_hook(_nest_plain_resnet_keys)

    @property
    def size_divisibility(self) -> int:
        return max(shape.stride for shape in self.bottom_up.output_shape().values())

    def output_shape(self) -> Dict[str, ShapeSpec]:
        """The ResNet's outputs (the fused level keeps its shape) and "association" (the HAB output)."""
        shapes = dict(self.bottom_up.output_shape())
        stride = shapes[self.association_feature].stride
        shapes["association"] = ShapeSpec(channels=self.association.hab.dim, stride=stride)
        return shapes

    def top_down(self, features: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """The identity: the associated bottom-up features are the outputs."""
        return features

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """
        Single-frame use: bottom_up -> associate (fresh memory, reference pass).

        Args:
            x: (B, 3, Hp, Wp) with Hp, Wp multiples of the res5 stride.
        Returns:
            {"res2": ..., "res5": ..., "association": (B, C, h, w)} (see :meth:`output_shape`).
        """
        self._check_input_size(x)
        return self.associate(self.bottom_up(x), self.new_memory())


def _nest_plain_resnet_keys(module: IAIResNet, state_dict, prefix: str, *args) -> None:
    """Load pre-hook of :class:`IAIResNet`: keys of a plain ResNet backbone (``prefix + "res2..."``)
    become ``prefix + "bottom_up.res2..."``, in place."""
    own = tuple(prefix + name + "." for name, _ in module.named_children())
    for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(own)]:
        state_dict[prefix + "bottom_up." + key[len(prefix):]] = state_dict.pop(key)


def _resnet_and_association(cfg, input_shape: ShapeSpec) -> Tuple[Backbone, IAIAssociation]:
    """The ResNet and the association path on its output MODEL.IAI.ASSOCIATION.IN_FEATURE."""
    bottom_up = build_resnet_backbone(cfg, input_shape)
    name = cfg.MODEL.IAI.ASSOCIATION.IN_FEATURE
    if name not in bottom_up.output_shape():
        raise ValueError(
            f"MODEL.IAI.ASSOCIATION.IN_FEATURE={name} is not a backbone output "
            f"{sorted(bottom_up.output_shape())}; add it to MODEL.RESNETS.OUT_FEATURES"
        )
    return bottom_up, IAIAssociation(cfg, bottom_up.output_shape()[name])


def _build_iai_fpn(cfg, input_shape: ShapeSpec, top_block_fn) -> IAIFPN:
    """
    ResNet + IAIFPN with the association path on MODEL.IAI.ASSOCIATION.IN_FEATURE;
    ``top_block_fn(bottom_up)`` builds the FPN top block.
    """
    bottom_up, association = _resnet_and_association(cfg, input_shape)
    return IAIFPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        association=association,
        association_feature=cfg.MODEL.IAI.ASSOCIATION.IN_FEATURE,
        norm=cfg.MODEL.FPN.NORM,
        top_block=top_block_fn(bottom_up),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
        global_interval=cfg.MODEL.IAI.MEMORY.GLOBAL_INTERVAL,
        max_global=cfg.MODEL.IAI.MEMORY.MAX_GLOBAL,
        eviction=cfg.MODEL.IAI.MEMORY.EVICTION,
    )


@BACKBONE_REGISTRY.register()
def build_iai_resnet_backbone(cfg, input_shape: ShapeSpec):
    """ResNet + the association path on ASSOCIATION.IN_FEATURE, no FPN (:class:`IAIResNet`)."""
    bottom_up, association = _resnet_and_association(cfg, input_shape)
    return IAIResNet(
        bottom_up,
        association,
        cfg.MODEL.IAI.ASSOCIATION.IN_FEATURE,
        global_interval=cfg.MODEL.IAI.MEMORY.GLOBAL_INTERVAL,
        max_global=cfg.MODEL.IAI.MEMORY.MAX_GLOBAL,
        eviction=cfg.MODEL.IAI.MEMORY.EVICTION,
    )


@BACKBONE_REGISTRY.register()
def build_iai_resnet_fpn_backbone(cfg, input_shape: ShapeSpec):
    """ResNet + IAIFPN (FPN with the association path on ASSOCIATION.IN_FEATURE, P6 by max-pooling)."""
    return _build_iai_fpn(cfg, input_shape, lambda bottom_up: LastLevelMaxPool())


@BACKBONE_REGISTRY.register()
def build_iai_retinanet_resnet_fpn_backbone(cfg, input_shape: ShapeSpec):
    """
    ResNet + IAIFPN with RetinaNet's P6/P7 top block (two stride-2 3x3 convs on res5, as
    Detectron2's ``build_retinanet_resnet_fpn_backbone``): the P3-P7 backbone of FCOS / CondInst.
    res5 is the top block's input whether or not it is the association level (the fused res5 when
    it is).
    """
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    return _build_iai_fpn(
        cfg,
        input_shape,
        lambda bottom_up: LastLevelP6P7(bottom_up.output_shape()["res5"].channels, out_channels),
    )
