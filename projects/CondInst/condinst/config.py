"""Config keys of CondInst (``MODEL.FCOS.*`` for the detector, ``MODEL.CONDINST.*`` for masks).

Usage::

    cfg = get_cfg()
    add_condinst_config(cfg)
    cfg.merge_from_file("projects/CondInst/configs/condinst_tiny_frames.yaml")
"""

from detectron2.config import CfgNode as CN

from iai_d2 import add_iai_config


def add_condinst_config(cfg):
    """
    Add the CondInst keys to a Detectron2 config, in place. The iai_d2 keys are added first when
    missing: CondInst trains with iai_d2's trainer, which reads ``SOLVER.OPTIMIZER``,
    ``SOLVER.BACKBONE_MULTIPLIER`` and registers the ``*_frames`` image datasets.
    """
    if "IAI" not in cfg.MODEL:
        add_iai_config(cfg)
    _C = cfg

    # ---------------------------------------------------------------- FCOS detector
    _C.MODEL.FCOS = CN()
    _C.MODEL.FCOS.NUM_CLASSES = 80
    # FPN levels the head runs on (strides are read from the backbone).
    _C.MODEL.FCOS.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    # Shared towers: NUM_CONVS x (Conv3x3 + NORM + ReLU), for classification and for boxes.
    _C.MODEL.FCOS.NUM_CONVS = 4
    _C.MODEL.FCOS.NORM = "GN"  # GroupNorm(32); "" for none
    _C.MODEL.FCOS.PRIOR_PROB = 0.01
    # Level i is responsible for objects with max(l, t, r, b) in [SOI[i-1], SOI[i]] (first level
    # from -1, last level to infinity): len(SIZES_OF_INTEREST) = number of levels - 1.
    _C.MODEL.FCOS.SIZES_OF_INTEREST = [64, 128, 256, 512]
    # Positive locations lie within CENTER_SAMPLING_RADIUS * stride of the mask centroid (and
    # inside the box); 0 = anywhere inside the box.
    _C.MODEL.FCOS.CENTER_SAMPLING_RADIUS = 1.5
    _C.MODEL.FCOS.LOSS_ALPHA = 0.25
    _C.MODEL.FCOS.LOSS_GAMMA = 2.0
    # Inference: classification probability threshold, per-level top-k before NMS, class-aware
    # NMS IoU (at most TEST.DETECTIONS_PER_IMAGE detections are kept).
    _C.MODEL.FCOS.INFERENCE_TH_TEST = 0.05
    _C.MODEL.FCOS.PRE_NMS_TOPK_TEST = 1000
    _C.MODEL.FCOS.NMS_TH_TEST = 0.6

    # ---------------------------------------------------------------- CondInst masks
    _C.MODEL.CONDINST = CN()
    # Positive locations per image whose masks enter the Dice loss (random sample when more).
    _C.MODEL.CONDINST.MAX_PROPOSALS_PER_IMAGE = 64
    _C.MODEL.CONDINST.MASK_OUT_STRIDE = 4
    _C.MODEL.CONDINST.MASK_LOSS_WEIGHT = 1.0
    _C.MODEL.CONDINST.MASK_THRESHOLD = 0.5

    # Dynamic mask head: NUM_LAYERS 1x1 convs of CHANNELS (last one: 1 output), whose weights
    # and biases are predicted per instance by the FCOS head's controller.
    _C.MODEL.CONDINST.MASK_HEAD = CN()
    _C.MODEL.CONDINST.MASK_HEAD.CHANNELS = 8
    _C.MODEL.CONDINST.MASK_HEAD.NUM_LAYERS = 3

    # Mask branch: IN_FEATURES refined to CHANNELS, upsampled to the first one and summed, then
    # NUM_CONVS convs and a 1x1 conv to OUT_CHANNELS.
    _C.MODEL.CONDINST.MASK_BRANCH = CN()
    _C.MODEL.CONDINST.MASK_BRANCH.IN_FEATURES = ["p3", "p4", "p5"]
    _C.MODEL.CONDINST.MASK_BRANCH.CHANNELS = 128
    _C.MODEL.CONDINST.MASK_BRANCH.NUM_CONVS = 4
    _C.MODEL.CONDINST.MASK_BRANCH.OUT_CHANNELS = 8
    _C.MODEL.CONDINST.MASK_BRANCH.NORM = "BN"
    # Upsampling factor (aligned bilinear) of the summed features before the convs: the mask
    # branch then runs at stride(IN_FEATURES[0]) / UPSAMPLE (MASK_OUT_STRIDE must divide it).
    _C.MODEL.CONDINST.MASK_BRANCH.UPSAMPLE = 1
