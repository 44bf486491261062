"""IAI modeling: importing this module registers the backbone, ROI heads and meta-architecture."""
from .backbone import IAIFPN, build_iai_resnet_fpn_backbone
from .meta_arch import IAIRCNN, VideoState
from .roi_heads import IAIROIHeads

__all__ = ["IAIFPN", "build_iai_resnet_fpn_backbone", "IAIRCNN", "VideoState", "IAIROIHeads"]
