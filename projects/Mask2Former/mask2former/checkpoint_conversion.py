"""
Checkpoints of the reference Mask2Former (facebookresearch/Mask2Former, e.g. the COCO instance
model ``maskformer2_R50_bs16_50ep/model_final_3c8ec9.pkl``) renamed to this port's modules.

Reference name (``MaskFormer`` meta-architecture)          -> this port (``Mask2Former``)
  backbone.* (Detectron2's ResNet, the same module)         -> backbone.*
  sem_seg_head.pixel_decoder.                               -> pixel_decoder.
    input_proj.{l}.{0 conv, 1 GN}                           -> input_proj.{l}.{0, 1}
    transformer.level_embed (L, C)                          -> level_embed
    transformer.encoder.layers.{i}.self_attn.*              -> encoder.{i}.attn.* (sampling_offsets,
                                                               attention_weights, value_proj, output_proj)
    transformer.encoder.layers.{i}.{norm1, norm2}           -> encoder.{i}.{norm1, norm2}
    transformer.encoder.layers.{i}.{linear1, linear2}       -> encoder.{i}.ffn.{0, 3}
    adapter_{k} / layer_{k} (k = 1 the finest of n)         -> lateral_convs.{n-k} / output_convs.{n-k}
    mask_features                                           -> mask_features
  sem_seg_head.predictor.                                   -> transformer_decoder.
    transformer_cross_attention_layers.{i}.multihead_attn.* -> cross_attention.{i}.attn.*
    transformer_self_attention_layers.{i}.self_attn.*       -> self_attention.{i}.attn.*
    transformer_{cross,self}_attention_layers.{i}.norm      -> {cross,self}_attention.{i}.norm
    transformer_ffn_layers.{i}.{linear1, linear2, norm}     -> ffn.{i}.{ffn.0, ffn.3, norm}
    mask_embed.layers.{j}                                   -> mask_embed.{2j}
    decoder_norm, query_feat, query_embed, level_embed,
    class_embed                                             -> the same names

Every tensor keeps its layout: both sides pack attention's q/k/v projections in
``nn.MultiheadAttention``'s ``in_proj_weight`` (3C, C); both order the pixel decoder's levels
(``input_proj``, ``level_embed``, the deformable attention's per-level offsets and weights) and the
transformer decoder's levels coarse to fine (res5 first); the class head has K + 1 rows, the last
"no object". Only the FPN convs are renumbered (the reference numbers them fine to coarse, this port
coarse to fine; one of each for R50). Skipped: ``criterion.empty_weight`` (the loss's class weights,
rebuilt from ``MODEL.MASK2FORMER.NO_OBJECT_WEIGHT``) and ``pixel_mean`` / ``pixel_std`` (from the
config), which this port does not store.
"""
import pickle
import re
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = [
    "CLASS_HEAD_KEYS",
    "convert_reference_state_dict",
    "load_reference_checkpoint",
    "REFERENCE_SKIPPED_KEYS",
    "rename_reference_keys",
]

REFERENCE_SKIPPED_KEYS = ("criterion.empty_weight", "pixel_mean", "pixel_std")
CLASS_HEAD_KEYS = ("transformer_decoder.class_embed.weight", "transformer_decoder.class_embed.bias")

_PIXEL = r"sem_seg_head\.pixel_decoder\."
_ENCODER = _PIXEL + r"transformer\.encoder\.layers\.(\d+)\."
_PREDICTOR = r"sem_seg_head\.predictor\."
_PARAM = r"(weight|bias)"
_ATTN_PARAM = r"(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)"
_DEFORM_ATTN = r"(sampling_offsets|attention_weights|value_proj|output_proj)"
_CONV_PARAM = r"(weight|bias|norm\.weight|norm\.bias)"

# (reference name regex, this port's name as a ``re`` template), tried in order.
_RENAMES = [
    (r"backbone\.(.+)", r"backbone.\1"),
    (_PIXEL + r"input_proj\.(\d+)\.([01])\." + _PARAM, r"pixel_decoder.input_proj.\1.\2.\3"),
    (_PIXEL + r"transformer\.level_embed", "pixel_decoder.level_embed"),
    (_ENCODER + r"self_attn\." + _DEFORM_ATTN + r"\." + _PARAM, r"pixel_decoder.encoder.\1.attn.\2.\3"),
    (_ENCODER + r"(norm1|norm2)\." + _PARAM, r"pixel_decoder.encoder.\1.\2.\3"),
    (_ENCODER + r"linear1\." + _PARAM, r"pixel_decoder.encoder.\1.ffn.0.\2"),
    (_ENCODER + r"linear2\." + _PARAM, r"pixel_decoder.encoder.\1.ffn.3.\2"),
    (_PIXEL + r"mask_features\." + _PARAM, r"pixel_decoder.mask_features.\1"),
    (_PREDICTOR + r"transformer_cross_attention_layers\.(\d+)\.multihead_attn\." + _ATTN_PARAM,
     r"transformer_decoder.cross_attention.\1.attn.\2"),
    (_PREDICTOR + r"transformer_self_attention_layers\.(\d+)\.self_attn\." + _ATTN_PARAM,
     r"transformer_decoder.self_attention.\1.attn.\2"),
    (_PREDICTOR + r"transformer_(cross|self)_attention_layers\.(\d+)\.norm\." + _PARAM,
     r"transformer_decoder.\1_attention.\2.norm.\3"),
    (_PREDICTOR + r"transformer_ffn_layers\.(\d+)\.linear1\." + _PARAM, r"transformer_decoder.ffn.\1.ffn.0.\2"),
    (_PREDICTOR + r"transformer_ffn_layers\.(\d+)\.linear2\." + _PARAM, r"transformer_decoder.ffn.\1.ffn.3.\2"),
    (_PREDICTOR + r"transformer_ffn_layers\.(\d+)\.norm\." + _PARAM, r"transformer_decoder.ffn.\1.norm.\2"),
    (_PREDICTOR + r"(decoder_norm|class_embed)\." + _PARAM, r"transformer_decoder.\1.\2"),
    (_PREDICTOR + r"(query_feat|query_embed|level_embed)\.weight", r"transformer_decoder.\1.weight"),
]
# Renumbered: the mask MLP's Linear j is module 2j of this port's Sequential (ReLUs between);
# the FPN convs adapter_k / layer_k (k = 1 the finest of n) are this port's index n - k (coarsest first).
_MASK_EMBED = _PREDICTOR + r"mask_embed\.layers\.(\d+)\." + _PARAM
_FPN_CONV = _PIXEL + r"(adapter|layer)_(\d+)\." + _CONV_PARAM
_FPN_NAMES = {"adapter": "lateral_convs", "layer": "output_convs"}


def _rename(name: str, num_fpn_levels: int) -> Optional[str]:
    """This port's name of reference key ``name``, None if it has none."""
    for pattern, template in _RENAMES:
        match = re.fullmatch(pattern, name)
        if match:
            return match.expand(template)
    match = re.fullmatch(_MASK_EMBED, name)
    if match:
        return f"transformer_decoder.mask_embed.{2 * int(match[1])}.{match[2]}"
    match = re.fullmatch(_FPN_CONV, name)
    if match:
        return f"pixel_decoder.{_FPN_NAMES[match[1]]}.{num_fpn_levels - int(match[2])}.{match[3]}"
    return None


def _as_tensor(value) -> torch.Tensor:
    """A tensor of a numpy array (copied: contiguous, 0-d stays 0-d) or of a tensor (as it is)."""
    return torch.from_numpy(np.array(value)) if isinstance(value, np.ndarray) else torch.as_tensor(value)


def _class_rows(weight: torch.Tensor, bias: torch.Tensor, keep_classes: Sequence[int]):
    """The class head with only the rows ``keep_classes`` (in that order) and the no-object row."""
    num_classes = weight.shape[0] - 1
    bad = [c for c in keep_classes if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"keep_classes {bad} are not classes of the reference checkpoint (0..{num_classes - 1})")
    rows = torch.tensor(list(keep_classes) + [num_classes])
    return weight[rows].clone(), bias[rows].clone()


def rename_reference_keys(reference: Mapping[str, object]) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """
    Every reference key under this port's name (values as tensors, layouts unchanged), without
    the skipped non-parameters; and the reference keys that have no counterpart here.
    """
    num_fpn_levels = sum(bool(re.fullmatch(_PIXEL + r"adapter_\d+\.weight", k)) for k in reference)
    converted, unknown = {}, []
    for name, value in reference.items():
        if name in REFERENCE_SKIPPED_KEYS:
            continue
        target = _rename(name, num_fpn_levels)
        if target is None:
            unknown.append(name)
        else:
            converted[target] = _as_tensor(value)
    return converted, unknown


def _listing(items: Sequence[str], most: int = 12) -> str:
    """The first ``most`` items, comma-separated, and how many there are in all beyond that."""
    shown = ", ".join(items[:most])
    return shown if len(items) <= most else f"{shown}, ... ({len(items)} in all)"


def convert_reference_state_dict(
    reference: Mapping[str, object],
    model_state: Mapping[str, torch.Tensor],
    keep_classes: Optional[Sequence[int]] = None,
) -> Dict[str, torch.Tensor]:
    """
    Args:
        reference: a reference Mask2Former state dict (name -> numpy array or tensor), e.g. the
            ``"model"`` of an official checkpoint.
        model_state: the state dict (or just name -> tensor of the right shape) of this port's
            model to load into, e.g. ``build_model(cfg).state_dict()``.
        keep_classes: reference class indices whose class-head rows become the model's classes,
            in this order (the no-object row is always kept, last). Without it the class head is
            kept whole when the model has the reference's K + 1 classes, and left out when it
            does not, so that loading initialises it anew (fine-tuning on another dataset).
    Returns:
        ``{name: tensor}`` with exactly ``model_state``'s names and shapes (less the class head
        when it is left out).
    Raises:
        ValueError (one line) naming every reference key with no counterpart here, every model
        key left without a value, and every shape that differs.
    """
    converted, unknown = rename_reference_keys(reference)
    weight_key, bias_key = CLASS_HEAD_KEYS
    new_class_head = False
    if weight_key in converted and bias_key in converted and weight_key in model_state:
        if keep_classes is not None:
            converted[weight_key], converted[bias_key] = _class_rows(converted[weight_key], converted[bias_key],
                                                                     keep_classes)
        elif (converted[weight_key].shape[0] != model_state[weight_key].shape[0]
              and converted[weight_key].shape[1:] == model_state[weight_key].shape[1:]):
            del converted[weight_key], converted[bias_key]  # initialised anew when loaded
            new_class_head = True

    missing = [k for k in model_state if k not in converted and not (new_class_head and k in CLASS_HEAD_KEYS)]
    extra = [k for k in converted if k not in model_state]
    shapes = [
        f"{k} {tuple(converted[k].shape)} vs {tuple(model_state[k].shape)}"
        for k in converted if k in model_state and converted[k].shape != model_state[k].shape
    ]
    problems = [
        f"{what}: {_listing(keys)}"
        for what, keys in (
            ("reference keys with no counterpart in this port", unknown),
            ("converted keys the model does not have", extra),
            ("model keys without a value in the reference checkpoint", missing),
            ("shapes differ (reference vs model)", shapes),
        )
        if keys
    ]
    if problems:
        raise ValueError("cannot convert the reference Mask2Former checkpoint: " + "; ".join(problems))
    return converted


def load_reference_checkpoint(path: str) -> Dict[str, object]:
    """
    The state dict of a reference checkpoint, read as Detectron2's DetectionCheckpointer reads
    it: a ``.pkl`` is a pickle (latin1) whose ``"model"`` holds numpy arrays (the model zoo's
    format), anything else a ``torch.load`` file with the state dict in ``"model"`` (a
    checkpoint the reference's trainer wrote) or at its top level.
    """
    try:
        if path.endswith(".pkl"):
            with open(path, "rb") as f:
                data = pickle.load(f, encoding="latin1")
        else:
            data = torch.load(path, map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, EOFError, RuntimeError) as e:
        raise ValueError(f"{path} is not a readable checkpoint ({type(e).__name__}: {e})") from None
    if isinstance(data, dict) and "blobs" in data:
        raise ValueError(f"{path} is a Caffe2 / Detectron checkpoint (it has 'blobs'), not a Mask2Former one")
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a {type(data).__name__}, not a checkpoint dict")
    state = data.get("model", data)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: 'model' is a {type(state).__name__}, not a state dict")
    return state
