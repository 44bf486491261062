"""Config keys of the tracking-by-detection baseline (MaskTrack R-CNN-style TrackRCNN).

Usage::

    cfg = get_cfg()
    add_trackbaseline_config(cfg)
    cfg.merge_from_file("projects/TrackBaseline/configs/synthetic_tiny.yaml")  # or condinst_synthetic_tiny.yaml
"""

from condinst import add_condinst_config
from detectron2.config import CfgNode as CN

from iai_d2 import add_iai_config


def add_trackbaseline_config(cfg):
    """
    Add the TrackRCNN / TrackCondInst keys to a Detectron2 config, in place. The iai_d2 keys are
    added first when missing: the baseline shares IAI's clip sampling (``INPUT.SAMPLING_FRAME_*``),
    optimizer (``SOLVER.OPTIMIZER``, ``SOLVER.BACKBONE_MULTIPLIER``) and ``TEST.PROGRESS_BAR``;
    so are CondInst's (``MODEL.FCOS``, ``MODEL.CONDINST``), the detector of TrackCondInst.
    """
    if "IAI" not in cfg.MODEL:
        add_iai_config(cfg)
    if "FCOS" not in cfg.MODEL:
        add_condinst_config(cfg)
    _C = cfg

    _C.MODEL.TRACK_HEAD = CN()
    # Tracking head on the box-head feature: Linear(box_head_dim, FC_DIM) -> ReLU ->
    # Linear(FC_DIM, EMBED_DIM). A detection's affinity to a tracked instance is the dot product
    # of their embeddings; "new instance" is an extra option with affinity 0 (MaskTrack R-CNN).
    _C.MODEL.TRACK_HEAD.FC_DIM = 1024
    _C.MODEL.TRACK_HEAD.EMBED_DIM = 256
    # TrackCondInst's tracking branch on the FPN levels of the FCOS head: NUM_CONVS x (Conv3x3 +
    # MODEL.FCOS.NORM + ReLU) -> Conv3x3 to EMBED_DIM, one embedding per location (FC_DIM unused).
    _C.MODEL.TRACK_HEAD.NUM_CONVS = 2
    # Weight of loss_track, the cross-entropy over [new, reference instances] of the foreground
    # proposals (TrackCondInst: the FCOS positive locations) of each key frame.
    _C.MODEL.TRACK_HEAD.LOSS_WEIGHT = 1.0

    # Online inference, one frame at a time.
    _C.MODEL.TRACK_HEAD.INFERENCE = CN()
    # (a, b, g) of the matching score log p_embed + a * log(det score) + b * IoU + g * [same
    # class] (MaskTrack R-CNN's match_coeff), maximised by a unique assignment per frame.
    _C.MODEL.TRACK_HEAD.INFERENCE.MATCH_COEFFS = (1.0, 2.0, 10.0)
    # A track unseen for more than this many frames is forgotten (bounded memory on streams).
    _C.MODEL.TRACK_HEAD.INFERENCE.MAX_AGE = 30
    # Per-frame detections: max foreground class probability above SCORE_THRESH, class-agnostic
    # NMS, at most MAX_PER_FRAME, masks de-overlapped (a detection keeping less than
    # MIN_MASK_KEEP of its mask is dropped), masks binarised at MASK_THRESH. Same
    # post-processing as IAI, so the two differ only in how identities are assigned.
    # TrackCondInst keeps CondInst's detection (MODEL.FCOS.INFERENCE_TH_TEST, class-aware
    # NMS_TH_TEST), as IAICondInst does, and uses MAX_PER_FRAME, MIN_MASK_KEEP and MASK_THRESH.
    _C.MODEL.TRACK_HEAD.INFERENCE.SCORE_THRESH = 0.05
    _C.MODEL.TRACK_HEAD.INFERENCE.NMS_THRESH = 0.5
    _C.MODEL.TRACK_HEAD.INFERENCE.MAX_PER_FRAME = 10
    _C.MODEL.TRACK_HEAD.INFERENCE.MIN_MASK_KEEP = 0.1
    _C.MODEL.TRACK_HEAD.INFERENCE.MASK_THRESH = 0.5
    # Video-level output: top-k (track, class) pairs whose mean score exceeds the threshold.
    _C.MODEL.TRACK_HEAD.INFERENCE.VIDEO_TOPK = 10
    _C.MODEL.TRACK_HEAD.INFERENCE.VIDEO_SCORE_THRESH = 0.05
