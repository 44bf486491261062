import math

import pytest
import torch

from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads import build_roi_heads
from detectron2.structures import BitMasks, Boxes, Instances, pairwise_iou
from detectron2.utils.events import EventStorage

from iai_d2.config import add_iai_config
from iai_d2.modeling.roi_heads import IAIROIHeads

IMG = 64
K = 3  # classes
N = 5  # ID channels
LEVELS = {"p2": 4, "p3": 8, "p4": 16, "p5": 32}


def make_cfg(**iai):
    cfg = get_cfg()
    add_iai_config(cfg)
    cfg.MODEL.MASK_ON = True
    cfg.MODEL.ROI_HEADS.NAME = "IAIROIHeads"
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = K
    cfg.MODEL.ROI_HEADS.IN_FEATURES = list(LEVELS)
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 32
    cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 2
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 64
    cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
    cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = 2
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 16
    cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION = 14
    cfg.MODEL.IAI.NUM_IDS = N
    for key, value in iai.items():
        setattr(cfg.MODEL.IAI, key, value)
    return cfg


def make_heads(cfg):
    torch.manual_seed(0)
    shapes = {k: ShapeSpec(channels=32, stride=s) for k, s in LEVELS.items()}
    return build_roi_heads(cfg, shapes)


def make_features(batch=1):
    return {k: torch.randn(batch, 32, IMG // s, IMG // s) for k, s in LEVELS.items()}


def make_proposals(boxes):
    inst = Instances((IMG, IMG))
    inst.proposal_boxes = Boxes(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.objectness_logits = torch.zeros(len(inst.proposal_boxes))
    return inst


def random_proposals(num, seed=1):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(num, 2, generator=g) * 40
    wh = torch.rand(num, 2, generator=g) * 20 + 4
    return make_proposals(torch.cat([xy, xy + wh], dim=1))


def make_targets(boxes, classes, ids, with_ids=True):
    inst = Instances((IMG, IMG))
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.long)
    masks = torch.zeros(len(classes), IMG, IMG, dtype=torch.bool)
    for m, (x0, y0, x1, y1) in zip(masks, boxes):
        m[int(y0) : int(y1), int(x0) : int(x1)] = True
    inst.gt_masks = BitMasks(masks)
    if with_ids:
        inst.gt_ids = torch.tensor(ids, dtype=torch.long)
    return inst


# ---------------------------------------------------------------- construction / training
def test_build_from_config():
    heads = make_heads(make_cfg())
    assert isinstance(heads, IAIROIHeads)
    assert heads.id_predictor.out_features == N + 1 and heads.id_predictor.in_features == 64
    assert heads.id_predictor.bias.abs().sum() == 0
    with pytest.raises(ValueError, match="ID_LOSS"):
        make_heads(make_cfg(ID_LOSS="hinge"))


def test_training_losses_and_gradients():
    heads = make_heads(make_cfg())
    heads.train()
    targets = [
        make_targets([[8, 8, 30, 30], [36, 30, 60, 58]], [0, 2], [0, N - 1]),
        make_targets([], [], []),  # image without instances
    ]
    proposals = [random_proposals(20, seed=1), random_proposals(20, seed=2)]
    with EventStorage():
        _, losses = heads(None, make_features(2), proposals, targets)
    assert {"loss_cls", "loss_box_reg", "loss_mask", "loss_id"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert heads.id_predictor.weight.grad is not None
    assert heads.id_predictor.weight.grad.abs().sum() > 0


def test_id_targets_of_sampled_proposals():
    heads = make_heads(make_cfg())
    heads.train()
    # the GT box is appended as a proposal; the far proposal can only be background
    targets = [make_targets([[4, 4, 24, 24]], [1], [2]), make_targets([], [], [])]
    proposals = [make_proposals([[5, 5, 24, 24], [40, 40, 60, 60]]), make_proposals([[0, 0, 9, 9]])]
    with EventStorage():
        sampled = heads.label_and_sample_proposals(proposals, targets)
    first = sampled[0]
    far = (first.proposal_boxes.tensor == torch.tensor([40.0, 40, 60, 60])).all(dim=1)
    assert far.sum() == 1
    assert first.gt_classes[far].item() == K and first.gt_ids[far].item() == N
    fg = first.gt_classes == 1
    assert fg.sum() == 2 and (first.gt_ids[fg] == 2).all()
    assert sampled[1].gt_ids.tolist() == [N]


def test_missing_or_invalid_gt_ids():
    heads = make_heads(make_cfg())
    heads.train()
    proposals = [random_proposals(8)]
    with EventStorage():
        with pytest.raises(ValueError, match="gt_ids"):
            no_ids = make_targets([[4, 4, 24, 24]], [1], [0], with_ids=False)
            heads(None, make_features(), proposals, [no_ids])
        with pytest.raises(ValueError, match="gt_ids"):
            heads(None, make_features(), proposals, [make_targets([[4, 4, 24, 24]], [1], [N])])


def _proposals_with_ids(gt_ids):
    p = make_proposals([[0, 0, 8, 8]] * len(gt_ids))
    p.gt_ids = torch.tensor(gt_ids)
    return p


def test_id_loss_values_by_hand():
    proposals = [_proposals_with_ids([0, N - 1, N, N])]
    zero_logits = torch.zeros(4, N + 1)
    # softmax: uniform over N + 1 -> log(N + 1) for every proposal
    softmax_heads = make_heads(make_cfg(ID_LOSS_WEIGHT=2.0))
    loss = softmax_heads.id_losses(zero_logits, proposals)["loss_id"]
    assert loss.item() == pytest.approx(2.0 * math.log(N + 1), rel=1e-5)
    # focal at p = 0.5 (alpha 0.25, gamma 2): positive 0.25*0.25*ln2, negative 0.75*0.25*ln2;
    # 2 fg proposals (1 positive + 4 negatives each) + 2 bg proposals (5 negatives) over 2 fg
    focal_heads = make_heads(make_cfg(ID_LOSS="focal"))
    loss = focal_heads.id_losses(zero_logits, proposals)["loss_id"]
    expected = (2 * (0.0625 + 4 * 0.1875) + 2 * 5 * 0.1875) * math.log(2) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # only background: normalised by 1
    loss = focal_heads.id_losses(zero_logits[:2], [_proposals_with_ids([N, N])])["loss_id"]
    assert loss.item() == pytest.approx(2 * 5 * 0.1875 * math.log(2), rel=1e-5)


def test_focal_training():
    heads = make_heads(make_cfg(ID_LOSS="focal"))
    heads.train()
    targets = [make_targets([[8, 8, 30, 30]], [0], [1])]
    with EventStorage():
        _, losses = heads(None, make_features(), [random_proposals(16)], targets)
    assert torch.isfinite(losses["loss_id"])
    losses["loss_id"].backward()
    assert heads.id_predictor.weight.grad[:N].abs().sum() > 0


# ---------------------------------------------------------------- inference
FIELDS = (
    "pred_boxes",
    "scores",
    "pred_classes",
    "class_probs",
    "id_probs",
    "rank_scores",
    "pred_masks",
)


def test_inference_frame_fields_nms_and_topk():
    cfg = make_cfg()
    cfg.MODEL.IAI.INFERENCE.CLS_SCORE_THRESH = 0.0
    cfg.MODEL.IAI.INFERENCE.ID_SCORE_THRESH = 0.0
    cfg.MODEL.IAI.INFERENCE.MAX_PER_FRAME = 6
    cfg.MODEL.IAI.INFERENCE.NMS_THRESH = 0.3
    heads = make_heads(cfg).eval()
    with torch.no_grad():
        (out,) = heads.inference_frame(make_features(), [random_proposals(60)], first_frame=False)
    assert all(out.has(f) for f in FIELDS)
    m = len(out)
    assert 0 < m <= 6
    assert out.class_probs.shape == (m, K) and out.id_probs.shape == (m, N + 1)
    assert out.pred_masks.shape == (m, 1, 28, 28)
    assert ((out.pred_masks >= 0) & (out.pred_masks <= 1)).all()
    assert torch.allclose(out.id_probs.sum(dim=1), torch.ones(m))
    assert torch.equal(out.scores, out.class_probs.max(dim=1).values)
    assert torch.equal(out.pred_classes, out.class_probs.argmax(dim=1))
    s_id = out.id_probs[:, :N].max(dim=1).values
    assert torch.allclose(out.rank_scores, 0.5 * out.scores + 1.0 * s_id)
    assert (out.rank_scores[:-1] >= out.rank_scores[1:]).all()
    iou = pairwise_iou(out.pred_boxes, out.pred_boxes)
    assert (iou.triu(diagonal=1) <= 0.3).all()  # class-agnostic: no pair above the threshold
    boxes = out.pred_boxes.tensor
    assert (boxes >= 0).all() and (boxes <= IMG).all()


def _fixed_predictions(monkeypatch, heads):
    """Two overlapping proposals: A = confident class 0 / weak ID, B = weak class 1 / strong ID."""
    cls_probs = torch.tensor([[0.9, 0.02, 0.03, 0.05], [0.1, 0.5, 0.2, 0.2]])
    id_probs = torch.tensor([[0.3, 0.1, 0.1, 0.1, 0.1, 0.3], [0.9, 0.02, 0.02, 0.02, 0.02, 0.02]])
    deltas = torch.zeros(2, 4 * K)
    monkeypatch.setattr(
        heads,
        "_box_and_id_predictions",
        lambda features, proposals: ((cls_probs.log(), deltas), id_probs.log()),
    )
    return make_proposals([[10, 10, 40, 40], [12, 12, 40, 40]])


def test_first_and_later_frame_weights_change_the_ranking(monkeypatch):
    heads = make_heads(make_cfg()).eval()
    proposals = _fixed_predictions(monkeypatch, heads)
    with torch.no_grad():
        (first,) = heads.inference_frame(make_features(), [proposals], first_frame=True)
        (later,) = heads.inference_frame(make_features(), [proposals], first_frame=False)
    # first frame (1, 0.5): A = 0.9 + 0.15 = 1.05 > B = 0.5 + 0.45 = 0.95 -> A survives NMS
    assert len(first) == 1 and first.pred_classes.tolist() == [0]
    assert first.rank_scores.item() == pytest.approx(1.05, rel=1e-5)
    # later frames (0.5, 1): A = 0.45 + 0.3 = 0.75 < B = 0.25 + 0.9 = 1.15 -> B survives NMS
    assert len(later) == 1 and later.pred_classes.tolist() == [1]
    assert later.rank_scores.item() == pytest.approx(1.15, rel=1e-5)
    assert later.scores.item() == pytest.approx(0.5, rel=1e-5)
    assert later.pred_boxes.tensor.tolist() == [[12.0, 12.0, 40.0, 40.0]]


def test_class_threshold_filters_before_nms(monkeypatch):
    heads = make_heads(make_cfg()).eval()
    heads.cls_score_thresh = 0.6  # B (0.5) is filtered, so A is kept on later frames
    proposals = _fixed_predictions(monkeypatch, heads)
    with torch.no_grad():
        (later,) = heads.inference_frame(make_features(), [proposals], first_frame=False)
    assert later.pred_classes.tolist() == [0]


@pytest.mark.parametrize("num_proposals", [0, 12])
def test_inference_frame_without_detections(num_proposals):
    cfg = make_cfg()
    cfg.MODEL.IAI.INFERENCE.CLS_SCORE_THRESH = 1.0  # nothing passes
    heads = make_heads(cfg).eval()
    with torch.no_grad():
        (out,) = heads.inference_frame(make_features(), [random_proposals(num_proposals)], True)
    assert len(out) == 0 and all(out.has(f) for f in FIELDS)
    assert out.pred_boxes.tensor.shape == (0, 4)
    assert out.class_probs.shape == (0, K) and out.id_probs.shape == (0, N + 1)
    assert out.pred_masks.shape == (0, 1, 28, 28)
    assert out.image_size == (IMG, IMG)


def test_focal_id_decoding_matches_its_loss():
    """Defect: the focal ID loss (background never trained) was decoded with a softmax."""
    heads = make_heads(make_cfg(ID_LOSS="focal"))
    prior = heads.id_predictor.bias.detach()
    torch.testing.assert_close(prior.sigmoid(), torch.full_like(prior, 0.01))
    logits = torch.tensor([[2.0, -1.0, 0.0] + [-3.0] * (N - 3) + [50.0]])
    probs = heads.id_probabilities(logits)
    torch.testing.assert_close(probs[0, :N], logits[0, :N].sigmoid())
    assert probs[0, N] == 0  # the untrained background logit plays no part
    softmax_heads = make_heads(make_cfg())
    torch.testing.assert_close(softmax_heads.id_probabilities(logits), logits.softmax(-1))


def test_without_id_predictor_detections_rank_by_class(monkeypatch):
    heads = make_heads(make_cfg(ID_DECODER="dense"))
    assert heads.id_predictor is None
    heads.train()
    targets = [make_targets([[8, 8, 30, 30]], [0], [1])]
    with EventStorage():
        _, losses = heads(None, make_features(), [random_proposals(16)], targets)
    assert "loss_id" not in losses
    heads.eval()
    out = heads.inference_frame(make_features(), [random_proposals(40)], first_frame=False)[0]
    assert not out.has("id_probs")
    torch.testing.assert_close(out.rank_scores, out.scores)
