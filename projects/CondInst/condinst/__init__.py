"""CondInst (conditional convolutions for instance segmentation) on Detectron2: importing this
package registers the ``CondInst`` meta-architecture."""
from .config import add_condinst_config
from .dynamic_mask_head import DynamicMaskHead, dice_loss
from .fcos_head import FCOSHead
from .mask_branch import MaskBranch
from .meta_arch import CondInst
from .targets import assign_fcos_targets, centerness_targets, level_size_ranges, mask_centroids
from .utils import aligned_bilinear, compute_locations

__all__ = [
    "add_condinst_config",
    "CondInst",
    "DynamicMaskHead",
    "FCOSHead",
    "MaskBranch",
    "aligned_bilinear",
    "assign_fcos_targets",
    "centerness_targets",
    "compute_locations",
    "dice_loss",
    "level_size_ranges",
    "mask_centroids",
]
