"""Config keys added by iai_d2 to Detectron2's default config.

Usage::

    cfg = get_cfg()
    add_iai_config(cfg)
    cfg.merge_from_file("configs/synthetic/iai_tiny.yaml")
"""

from detectron2.config import CfgNode as CN


def merge_overrides(cfg, opts):
    """``cfg.merge_from_list(opts)`` (command-line KEY VALUE pairs); a bad override (unknown key,
    odd number of items) is a one-line ValueError instead of yacs' KeyError / AssertionError."""
    try:
        cfg.merge_from_list(opts)
    except (KeyError, AssertionError) as e:
        raise ValueError(f"bad config override in {opts}: {' '.join(str(e).split())}") from None


def add_iai_config(cfg):
    """Add every iai_d2 key (with its default) to a Detectron2 config, in place."""
    _C = cfg

    # ---------------------------------------------------------------- model
    _C.MODEL.IAI = CN()
    # N: number of ID channels. Slots 0..N-2 hold tracked instances, N-1 means "new instance",
    # N is background. The ID bank sees N+1 channels, the ROI ID predictor outputs N+1 logits.
    _C.MODEL.IAI.NUM_IDS = 20
    # ID classification loss: "softmax" (cross-entropy over N+1, matches Mask R-CNN's classifier)
    # or "focal" (sigmoid focal over N channels, background = all-zero target; paper Tab. 7).
    _C.MODEL.IAI.ID_LOSS = "softmax"
    _C.MODEL.IAI.ID_LOSS_WEIGHT = 1.0
    _C.MODEL.IAI.ID_FOCAL_ALPHA = 0.25
    _C.MODEL.IAI.ID_FOCAL_GAMMA = 2.0
    # What happens to a new instance when all N-1 memory slots are taken:
    # "recycle" reuses the slot of the track unseen for the longest time (at least RECYCLE_AFTER
    # frames); the track keeps its output identity. "discard" drops it (paper behaviour).
    _C.MODEL.IAI.ON_FULL = "recycle"
    _C.MODEL.IAI.RECYCLE_AFTER = 30
    # Training slots: by default a clip's tracks get slots in order of first appearance (ties in
    # random order), the way inference allocates them (the released code uses the rank of the
    # annotation id, which inference cannot reproduce). True: distinct random slots in 0..N-2.
    _C.MODEL.IAI.RANDOM_SLOTS = False
    # Who decides identities at inference: "roi" (the ROI ID predictor beside the box predictor,
    # the paper's Mask R-CNN head) or "dense" (the dense ID decoder on the association output,
    # AOT-style; each detection takes the decoded ID probabilities averaged inside its mask, and
    # detections are ranked by class score).
    _C.MODEL.IAI.ID_DECODER = "roi"
    # Dense ID decoder: Conv3x3 + ReLU + Conv1x1 on the HAB output, trained with a pixel-wise
    # ID loss (every pixel -> slot / new / background, foreground and background balanced).
    # LOSS_WEIGHT > 0 with ID_DECODER "roi" trains it as an auxiliary loss only.
    _C.MODEL.IAI.DENSE_ID = CN()
    _C.MODEL.IAI.DENSE_ID.LOSS_WEIGHT = 0.0
    _C.MODEL.IAI.DENSE_ID.CONV_DIM = 128
    # A backbone level at half the association stride (e.g. "res3" with res4 association) whose
    # features the decoder fuses with the upsampled HAB output, so identities are decoded at that
    # finer stride; "" decodes at the association stride.
    _C.MODEL.IAI.DENSE_ID.SKIP_FEATURE = ""

    # Hybrid Association Block, applied to one backbone level before the FPN: res5 (stride 32,
    # the paper) or res4 (stride 16: a 4x finer token grid for small frames / small objects).
    _C.MODEL.IAI.ASSOCIATION = CN()
    _C.MODEL.IAI.ASSOCIATION.IN_FEATURE = "res5"
    # HAB width C. The encoder projection and the HAB output have C channels each; the
    # classification projector fills the rest of res5's channels (R50: 2048 - 2 * 256 = 1536).
    _C.MODEL.IAI.ASSOCIATION.DIM = 256
    _C.MODEL.IAI.ASSOCIATION.SELF_HEADS = 4  # heads of the spatial self-attention
    _C.MODEL.IAI.ASSOCIATION.ATT_HEADS = 2  # heads of the global / local memory attention
    _C.MODEL.IAI.ASSOCIATION.FFN_DIM = 1024
    _C.MODEL.IAI.ASSOCIATION.WINDOW = 15  # local attention window (odd), in tokens of the association grid
    _C.MODEL.IAI.ASSOCIATION.DROP_PATH = 0.1
    # Ablation switches (paper Tab. 5): local memory, global memory, classification projector.
    # With CLS_PROJECTOR off the projector's channels are filled with zeros, so the FPN input
    # keeps its shape and pretrained FPN weights still load.
    _C.MODEL.IAI.ASSOCIATION.LOCAL = True
    _C.MODEL.IAI.ASSOCIATION.GLOBAL = True
    _C.MODEL.IAI.ASSOCIATION.CLS_PROJECTOR = True
    # Sine position embedding on the self-attention's queries and keys (AOT): it makes the
    # self-attention position-dependent, and its output feeds the memory keys and queries.
    # False leaves position to what the CNN features carry. The embedding has no parameters:
    # checkpoints trained with it load either way, so keep the value they were trained with.
    _C.MODEL.IAI.ASSOCIATION.POSITION_EMBEDDING = True
    # One slope per ATT_HEADS (empty: off). Head h's global-memory logits are lowered by slope[h]
    # per token of distance between the memory token's grid cell and the query's (ALiBi in 2-D):
    # a relative position cue, so that two look-alikes are told apart by where each was stored
    # without the features carrying absolute position. E.g. [0.0, 0.5]: one head by appearance
    # only, one preferring nearby stored tokens. No parameters: checkpoints load either way.
    _C.MODEL.IAI.ASSOCIATION.GLOBAL_DISTANCE_SLOPES = []

    # Association memory of one video (or one training clip).
    _C.MODEL.IAI.MEMORY = CN()
    # A frame enters the global memory when this many frames passed since the last insertion,
    # or when it allocated a new ID (see NEW_ID_TRIGGER).
    _C.MODEL.IAI.MEMORY.GLOBAL_INTERVAL = 3
    # Bound on the global memory, in frames: the first frame is pinned, the newest
    # MAX_GLOBAL - 1 others are kept. Peak memory is then independent of video length.
    _C.MODEL.IAI.MEMORY.MAX_GLOBAL = 8
    # Which frame leaves a full global memory: "oldest" (after the pinned first frame), or
    # "keep_identities": the oldest whose every identity is painted in a newer stored frame, so
    # an identity's last stored view stays while it is hidden (the oldest when none qualifies).
    _C.MODEL.IAI.MEMORY.EVICTION = "oldest"
    # A frame with a birth joins the global memory, in training (a GT instance new to the
    # memory) and at inference (a new track) alike. The released code fires it only at test time
    # (spec quirk Q1), so its test-time memory differs from what training shows the head.
    _C.MODEL.IAI.MEMORY.NEW_ID_TRIGGER = True
    # Training writes GT masks into the memory; inference writes its own imperfect predictions.
    # Imitate them in training: drop each instance with this probability and shift it by up to
    # TRAIN_JITTER pixels.
    _C.MODEL.IAI.MEMORY.TRAIN_DROP_PROB = 0.0
    _C.MODEL.IAI.MEMORY.TRAIN_JITTER = 0

    # Per-frame post-processing at inference.
    _C.MODEL.IAI.INFERENCE = CN()
    _C.MODEL.IAI.INFERENCE.CLS_SCORE_THRESH = 0.05  # on the max foreground class probability
    _C.MODEL.IAI.INFERENCE.ID_SCORE_THRESH = 0.05  # on the max probability over the N ID entries
    # A detection starts a new track only with a class score >= this (weaker detections may
    # continue a track but never start one, so false positives do not fill the slots).
    _C.MODEL.IAI.INFERENCE.BIRTH_SCORE_THRESH = 0.3
    # Add MASK_IOU_WEIGHT * IoU(detection mask, the track's last mask) to the ID probability of
    # a live track's slot in the Hungarian matching (MaskTrack's spatial cue; 0 = IAI alone).
    # An inference option reported as its own benchmark row, not as IAI.
    _C.MODEL.IAI.INFERENCE.MASK_IOU_WEIGHT = 0.0
    # Subtract CLASS_PENALTY from a live track's slot score for a detection whose class differs
    # from the track's last class (MaskTrack's class-consistency cue; >= 1 forbids it; 0 = IAI
    # alone). An inference option reported as its own benchmark row, not as IAI.
    _C.MODEL.IAI.INFERENCE.CLASS_PENALTY = 0.0
    # Ranking score for class-agnostic NMS: w_cls * s_cls + w_id * s_id, (w_cls, w_id) per frame.
    # ID_SCORE_THRESH and the weights apply to the ROI ID decoder; the dense decoder ranks by s_cls.
    _C.MODEL.IAI.INFERENCE.FIRST_FRAME_WEIGHTS = (1.0, 0.5)
    _C.MODEL.IAI.INFERENCE.LATER_FRAME_WEIGHTS = (0.5, 1.0)
    _C.MODEL.IAI.INFERENCE.NMS_THRESH = 0.5
    _C.MODEL.IAI.INFERENCE.MAX_PER_FRAME = 10
    # A detection is dropped when less than this fraction of its mask survives de-overlapping.
    _C.MODEL.IAI.INFERENCE.MIN_MASK_KEEP = 0.1
    _C.MODEL.IAI.INFERENCE.MASK_THRESH = 0.5
    # Video-level output: top-k (track, class) pairs whose mean score exceeds the threshold.
    _C.MODEL.IAI.INFERENCE.VIDEO_TOPK = 10
    _C.MODEL.IAI.INFERENCE.VIDEO_SCORE_THRESH = 0.05

    # ---------------------------------------------------------------- input
    # Frames per training clip (T) and the largest gap between consecutive sampled frames.
    _C.INPUT.SAMPLING_FRAME_NUM = 5
    _C.INPUT.SAMPLING_FRAME_RANGE = 3
    # Shuffle the sampled frames instead of keeping temporal order (off: IAI trains in order).
    _C.INPUT.SAMPLING_FRAME_SHUFFLE = False
    # Probability that a training clip is built around a return: a track annotated at frame l,
    # absent for >= 1 frames and annotated again at r; the clip is frames up to l and from r
    # on (so the ID head learns to give back an identity the memory kept across a gap).
    _C.INPUT.SAMPLING_RETURN_PROB = 0.0
    # One flip / scale draw for the whole clip (True) or an independent draw per frame
    # (False; the released code's behaviour, spec quirk Q6).
    _C.INPUT.AUGMENT_BY_CLIP = True

    # ---------------------------------------------------------------- solver
    _C.SOLVER.OPTIMIZER = "ADAMW"  # "ADAMW" or "SGD"
    # Learning-rate multiplier for backbone.bottom_up (the pretrained ResNet).
    _C.SOLVER.BACKBONE_MULTIPLIER = 0.1
    # How the identity pathway starts on a trained image model (the modules IAI adds to it:
    # the association path, the ID bank, the ID decoder or head; the model's IDENTITY_MODULES).
    # Learning-rate multiplier for every other parameter, the image model's (on top of
    # BACKBONE_MULTIPLIER for the ResNet); 1.0 = one learning rate for all (the paper).
    _C.SOLVER.IMAGE_MODEL_MULTIPLIER = 1.0
    # Identity-only warm-up: for the first K iterations the image model's parameters have
    # learning rate 0 and only the identity pathway learns (from the ID loss and from the
    # detection losses that flow back through the fused features); 0 = off (the paper).
    _C.SOLVER.IDENTITY_WARMUP_ITERS = 0

    # ---------------------------------------------------------------- test
    # Show a per-frame progress bar during video inference.
    _C.TEST.PROGRESS_BAR = True
