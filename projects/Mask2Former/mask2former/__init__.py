"""Mask2Former instance segmentation on Detectron2 (pure PyTorch), the query-matching (MinVIS)
video baseline and IAI + Mask2Former: importing this package registers the ``Mask2Former``,
``QueryMatchMask2Former`` and ``IAIMask2Former`` meta-architectures, the
``MSDeformAttnPixelDecoder`` and (through iai_d2) the IAI backbones; ``convert_reference_state_dict``
renames the reference implementation's checkpoints to this port."""
from .checkpoint_conversion import convert_reference_state_dict, load_reference_checkpoint
from .config import add_mask2former_config
from .criterion import SetCriterion
from .iai_meta_arch import IAIMask2Former, query_id_targets
from .matcher import HungarianMatcher, pairwise_dice_cost, pairwise_sigmoid_ce_cost
from .meta_arch import Mask2Former
from .ms_deform_attn import MSDeformAttn, ms_deform_attn_core
from .pixel_decoder import PIXEL_DECODER_REGISTRY, MSDeformAttnPixelDecoder, build_pixel_decoder
from .position_encoding import sine_position_embedding
from .query_matching import QueryMatchMask2Former, QueryTracks
from .transformer_decoder import AttentionLayer, MaskedTransformerDecoder, attention_mask_from_logits

__all__ = [
    "add_mask2former_config",
    "attention_mask_from_logits",
    "AttentionLayer",
    "build_pixel_decoder",
    "convert_reference_state_dict",
    "HungarianMatcher",
    "IAIMask2Former",
    "load_reference_checkpoint",
    "Mask2Former",
    "MaskedTransformerDecoder",
    "MSDeformAttn",
    "MSDeformAttnPixelDecoder",
    "ms_deform_attn_core",
    "pairwise_dice_cost",
    "pairwise_sigmoid_ce_cost",
    "PIXEL_DECODER_REGISTRY",
    "QueryMatchMask2Former",
    "query_id_targets",
    "QueryTracks",
    "SetCriterion",
    "sine_position_embedding",
]
