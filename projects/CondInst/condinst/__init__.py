"""CondInst (conditional convolutions for instance segmentation) on Detectron2: importing this
package registers the ``CondInst`` and ``IAICondInst`` meta-architectures (and, through iai_d2,
the IAI backbones)."""
from .config import add_condinst_config
from .dynamic_mask_head import DynamicMaskHead, dice_loss
from .fcos_head import FCOSHead
from .iai_meta_arch import IAICondInst
from .mask_branch import MaskBranch
from .meta_arch import CondInst
from .targets import assign_fcos_targets, centerness_targets, level_size_ranges, mask_centroids
from .utils import aligned_bilinear, compute_locations

__all__ = [
    "add_condinst_config",
    "CondInst",
    "DynamicMaskHead",
    "FCOSHead",
    "IAICondInst",
    "MaskBranch",
    "aligned_bilinear",
    "assign_fcos_targets",
    "centerness_targets",
    "compute_locations",
    "dice_loss",
    "level_size_ranges",
    "mask_centroids",
]
