"""Config keys of Mask2Former (``MODEL.MASK2FORMER.*``), defaults of the paper's R50 instance model.

Usage::

    cfg = get_cfg()
    add_mask2former_config(cfg)
    cfg.merge_from_file("projects/Mask2Former/configs/mask2former_tiny_frames.yaml")
"""
from detectron2.config import CfgNode as CN

from iai_d2 import add_iai_config


def add_mask2former_config(cfg):
    """
    Add the Mask2Former keys to a Detectron2 config, in place. The iai_d2 keys are added first when
    missing: Mask2Former trains with iai_d2's trainer (``SOLVER.OPTIMIZER``,
    ``SOLVER.BACKBONE_MULTIPLIER``, the ``*_frames`` datasets), and the query-matching video model
    reads ``MODEL.IAI.INFERENCE.VIDEO_TOPK`` / ``VIDEO_SCORE_THRESH`` as every video model does;
    IAIMask2Former reads every ``MODEL.IAI`` key as IAIRCNN does.
    """
    if "IAI" not in cfg.MODEL:
        add_iai_config(cfg)
    _C = cfg
    _C.MODEL.MASK2FORMER = CN()
    m = _C.MODEL.MASK2FORMER
    m.NUM_CLASSES = 80
    # Inputs are padded to a multiple of this (the deformable encoder's coarsest level is /32).
    m.SIZE_DIVISIBILITY = 32

    # ---------------------------------------------------------------- pixel decoder
    m.PIXEL_DECODER_NAME = "MSDeformAttnPixelDecoder"
    m.IN_FEATURES = ["res2", "res3", "res4", "res5"]  # backbone levels; the finest gives mask features
    m.TRANSFORMER_IN_FEATURES = ["res3", "res4", "res5"]  # levels of the deformable encoder
    m.CONV_DIM = 256
    m.MASK_DIM = 256
    m.NORM = "GN"  # of the FPN step's convs
    m.ENCODER_LAYERS = 6
    m.DEFORM_POINTS = 4  # sampling points per head and level
    m.DIM_FEEDFORWARD = 1024  # encoder FFN
    m.NHEADS = 8  # encoder and decoder
    m.DROPOUT = 0.0
    # Sine positions of the pixel decoder's and transformer decoder's feature maps: row i at
    # (i + 0.5) / H (Deformable DETR's encoding, what the tiny configs were trained with), or with
    # False at (i + 1) / H, the reference Mask2Former's: Base-Mask2Former.yaml sets False, so that
    # checkpoints converted from the reference (convert_reference_checkpoint.py) see its positions.
    m.POSITION_AT_CELL_CENTRES = True

    # ---------------------------------------------------------------- transformer decoder
    m.HIDDEN_DIM = 256
    m.NUM_OBJECT_QUERIES = 100
    m.DEC_LAYERS = 9  # masked-attention layers (the paper's 9; 10 predictions with the initial one)
    m.DEC_DIM_FEEDFORWARD = 2048

    # ---------------------------------------------------------------- losses and matching
    m.DEEP_SUPERVISION = True  # losses on every intermediate prediction too
    m.CLASS_WEIGHT = 2.0
    m.MASK_WEIGHT = 5.0
    m.DICE_WEIGHT = 5.0
    m.NO_OBJECT_WEIGHT = 0.1
    m.TRAIN_NUM_POINTS = 112 * 112  # points of the mask losses and of the matcher's mask costs
    m.OVERSAMPLE_RATIO = 3.0
    m.IMPORTANCE_SAMPLE_RATIO = 0.75

    # ---------------------------------------------------------------- inference
    # Images: the top TEST.DETECTIONS_PER_IMAGE (query, class) pairs, score = class probability x
    # mean mask probability inside the binary mask.
    m.MASK_THRESHOLD = 0.5

    # ---------------------------------------------------------------- IAI + Mask2Former
    # IAIMask2Former, per frame at inference: the queries scoring at least this (best foreground
    # class probability x mean mask probability inside the mask), at most
    # MODEL.IAI.INFERENCE.MAX_PER_FRAME of them, score descending, go to ID assignment (most of the
    # Q queries are "no object"; MODEL.IAI.INFERENCE.BIRTH_SCORE_THRESH still gates new tracks).
    # Its masks are binarised at MODEL.IAI.INFERENCE.MASK_THRESH. With MODEL.IAI.ID_DECODER
    # "query", the ID head's cross-entropy is weighted by MODEL.IAI.ID_LOSS_WEIGHT.
    m.FRAME_SCORE_THRESH = 0.1
