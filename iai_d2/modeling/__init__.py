"""IAI modeling: importing this module registers the backbones, ROI heads and meta-architecture."""
from .backbone import (
    IAIFPN,
    IAIResNet,
    build_iai_resnet_backbone,
    build_iai_resnet_fpn_backbone,
    build_iai_retinanet_resnet_fpn_backbone,
)
from .meta_arch import IAIRCNN
from .online import OnlineVideoModel, online_config
from .roi_heads import IAIROIHeads
from .video_model import IAIVideoModel, VideoState, video_config

__all__ = [
    "IAIFPN",
    "IAIResNet",
    "build_iai_resnet_backbone",
    "build_iai_resnet_fpn_backbone",
    "build_iai_retinanet_resnet_fpn_backbone",
    "IAIRCNN",
    "IAIVideoModel",
    "OnlineVideoModel",
    "online_config",
    "VideoState",
    "video_config",
    "IAIROIHeads",
]
