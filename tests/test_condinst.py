"""CondInst (projects/CondInst): FCOS head shapes, target assignment on hand-built boxes, the
dynamic mask head on a hand-built controller, a CPU training step, a short overfit and inference
outputs that Detectron2's COCOEvaluator accepts."""
import os
import sys

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Instances
from detectron2.utils.events import EventStorage

PROJECT = os.path.join(os.path.dirname(__file__), "..", "projects", "CondInst")
sys.path.insert(0, PROJECT)
from condinst import (  # noqa: E402
    CondInst,
    DynamicMaskHead,
    FCOSHead,
    add_condinst_config,
    aligned_bilinear,
    assign_fcos_targets,
    centerness_targets,
    compute_locations,
    level_size_ranges,
    mask_centroids,
)

CONFIGS = os.path.join(PROJECT, "configs")
TINY_CONFIG = os.path.join(CONFIGS, "condinst_tiny_frames.yaml")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_cfg(*opts):
    cfg = get_cfg()
    add_condinst_config(cfg)
    cfg.merge_from_file(TINY_CONFIG)
    cfg.merge_from_list(["MODEL.FPN.OUT_CHANNELS", "32", "MODEL.CONDINST.MASK_BRANCH.CHANNELS", "32", *opts])
    return cfg


# ------------------------------------------------------------------------------ FCOS head
def test_head_output_shapes_per_level():
    sizes = [(16, 20), (8, 10), (4, 5)]
    head = FCOSHead([ShapeSpec(channels=32, stride=s) for s in (8, 16, 32)], num_classes=5, num_convs=2,
                    norm="GN", prior_prob=0.01, num_params=169)
    feats = [torch.randn(2, 32, h, w) for h, w in sizes]
    logits, reg, ctr, params = head(feats)
    for (h, w), lo, r, c, p in zip(sizes, logits, reg, ctr, params):
        assert lo.shape == (2, 5, h, w)
        assert r.shape == (2, 4, h, w) and (r >= 0).all()
        assert c.shape == (2, 1, h, w)
        assert p.shape == (2, 169, h, w)
    # prior-probability bias: every class starts near 1% foreground
    assert abs(torch.sigmoid(logits[0]).mean().item() - 0.01) < 0.005


# ------------------------------------------------------------------------------ targets
def grid(h, w, stride):
    """Locations, strides and ranges of one level with range [-1, inf]."""
    locs = compute_locations(h, w, stride)
    n = len(locs)
    return locs, torch.full((n,), float(stride)), torch.tensor([[-1.0, float("inf")]]).expand(n, 2)


def positives(locs, matched, k=0):
    return {tuple(xy) for xy in locs[matched == k].tolist()}


def test_compute_locations_and_size_ranges():
    locs = compute_locations(2, 3, 8)
    assert locs.tolist() == [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]
    assert level_size_ranges([64, 128]) == [[-1, 64], [64, 128], [128, float("inf")]]


def test_centre_sampling_keeps_only_locations_within_the_radius_of_the_mask_centroid():
    locs, strides, ranges = grid(8, 8, 8)  # x, y in {4, 12, ..., 60}
    box = torch.tensor([[0.0, 0.0, 64.0, 64.0]])
    # radius 1.4 * 8 = 11.2 around (32, 32): x, y in {28, 36} (20 and 44 are 12 away)
    matched, _ = assign_fcos_targets(locs, strides, ranges, box, torch.tensor([[32.0, 32.0]]), 1.4)
    assert positives(locs, matched) == {(28, 28), (36, 28), (28, 36), (36, 36)}
    # the centre is the mask centroid, not the box centre: around (20, 44)
    matched, _ = assign_fcos_targets(locs, strides, ranges, box, torch.tensor([[20.0, 44.0]]), 1.4)
    assert positives(locs, matched) == {(12, 36), (20, 36), (28, 36), (12, 44), (20, 44), (28, 44),
                                        (12, 52), (20, 52), (28, 52)}
    # the sampling square is clipped to the box: (12, y) is within reach of x = 18 but outside the box
    box = torch.tensor([[16.0, 16.0, 48.0, 48.0]])
    matched, _ = assign_fcos_targets(locs, strides, ranges, box, torch.tensor([[18.0, 32.0]]), 3.0)
    pos = positives(locs, matched)
    assert pos and all(16 < x < 48 and 16 < y < 48 for x, y in pos)
    assert {x for x, _ in pos} == {20, 28, 36}
    # radius 0: every location inside the box
    matched, _ = assign_fcos_targets(locs, strides, ranges, box, torch.tensor([[18.0, 32.0]]), 0.0)
    assert len(positives(locs, matched)) == 16


def test_size_ranges_send_boxes_to_their_level():
    l0, l1 = compute_locations(16, 16, 8), compute_locations(8, 8, 16)
    locs = torch.cat([l0, l1])
    level = torch.cat([torch.zeros(len(l0)), torch.ones(len(l1))]).long()
    strides = torch.tensor([8.0, 16.0])[level]
    ranges = torch.tensor(level_size_ranges([32]))[level]  # [-1, 32], [32, inf]
    boxes = torch.tensor([[40.0, 40.0, 120.0, 124.0],  # 80 x 84 px: every max side > 32, level 1
                          [90.0, 8.0, 110.0, 28.0]])  # 20 x 20 px: every max side < 32, level 0
    matched, ltrb = assign_fcos_targets(locs, strides, ranges, boxes, (boxes[:, :2] + boxes[:, 2:]) / 2, 0.0)
    assert set(level[matched == 0].tolist()) == {1}
    assert set(level[matched == 1].tolist()) == {0}
    # every positive's max distance lies in its level's range; ltrb are the distances to the box
    pos = matched >= 0
    max_side = ltrb[pos].max(dim=1).values
    assert ((max_side >= ranges[pos, 0]) & (max_side <= ranges[pos, 1])).all()
    xy, b = locs[pos], boxes[matched[pos]]
    expected = torch.stack([xy[:, 0] - b[:, 0], xy[:, 1] - b[:, 1], b[:, 2] - xy[:, 0], b[:, 3] - xy[:, 1]], 1)
    assert torch.allclose(ltrb[pos], expected)
    assert (ltrb[~pos] == 0).all()


def test_a_location_inside_two_boxes_goes_to_the_smaller():
    locs, strides, ranges = grid(8, 8, 8)
    boxes = torch.tensor([[0.0, 0.0, 64.0, 64.0], [24.0, 24.0, 48.0, 48.0]])
    matched, ltrb = assign_fcos_targets(locs, strides, ranges, boxes, (boxes[:, :2] + boxes[:, 2:]) / 2, 0.0)
    small = {(x, y) for x in (28, 36, 44) for y in (28, 36, 44)}
    assert positives(locs, matched, 1) == small
    assert len(positives(locs, matched, 0)) == 64 - 9
    i = locs.tolist().index([28.0, 36.0])
    assert ltrb[i].tolist() == [4.0, 12.0, 20.0, 12.0]
    # same answer with the boxes in the other order
    matched2, _ = assign_fcos_targets(locs, strides, ranges, boxes.flip(0), (boxes[:, :2] + boxes[:, 2:]).flip(0) / 2, 0.0)
    assert positives(locs, matched2, 0) == small
    # no boxes: all background
    matched3, ltrb3 = assign_fcos_targets(locs, strides, ranges, boxes[:0], boxes[:0, :2], 1.5)
    assert (matched3 == -1).all() and (ltrb3 == 0).all()


def test_centerness_targets_and_mask_centroids():
    ctr = centerness_targets(torch.tensor([[4.0, 4.0, 4.0, 4.0], [2.0, 4.0, 8.0, 4.0]]))
    assert torch.allclose(ctr, torch.tensor([1.0, 0.5]))
    masks = torch.zeros(2, 20, 30, dtype=torch.bool)
    masks[0, 2:6, 10:20] = True  # centroid (15, 4)
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [10.0, 10.0, 20.0, 14.0]])
    assert torch.allclose(mask_centroids(masks, boxes), torch.tensor([[15.0, 4.0], [15.0, 12.0]]))  # empty: box centre


# ------------------------------------------------------------------------------ dynamic mask head
def pack(head, weights, biases):
    """Controller output (P,) from per-layer weights (out, in) and biases (out,)."""
    return torch.cat([w.flatten() for w in weights] + [b.flatten() for b in biases])


def selecting(head, in_channel, bias_in=0.0, bias_out=0.0):
    """Parameters whose head outputs input channel ``in_channel`` (+bias_in through the ReLUs)."""
    weights = [torch.zeros(cout, cin) for cin, cout in head.layer_dims]
    biases = [torch.zeros(cout) for _, cout in head.layer_dims]
    weights[0][0, in_channel] = 1.0
    biases[0][0] = bias_in
    for w in weights[1:]:
        w[0, 0] = 1.0
    biases[-1][0] = bias_out
    return pack(head, weights, biases)


def test_dynamic_mask_head_on_a_hand_built_controller():
    head = DynamicMaskHead(in_channels=8, channels=8, num_layers=3, feat_stride=8, out_stride=4)
    assert head.num_params == (10 * 8 + 8 * 8 + 8 * 1) + (8 + 8 + 1) == 169
    h, w = 6, 7
    feats = torch.rand(2, 8, h, w) + 0.1  # positive: the ReLUs pass them unchanged
    params = torch.stack([
        selecting(head, 2 + 3),  # image 0, feature channel 3
        selecting(head, 2 + 5),  # image 1, feature channel 5
        selecting(head, 0, bias_in=10.0, bias_out=-10.0),  # relative x coordinate
        selecting(head, 1, bias_in=10.0, bias_out=-10.0),  # relative y coordinate
    ])
    im_inds = torch.tensor([0, 1, 0, 1])
    locations = torch.tensor([[20.0, 12.0], [20.0, 12.0], [36.0, 20.0], [12.0, 44.0]])
    sizes = torch.tensor([64.0, 64.0, 32.0, 16.0])
    out = head.mask_logits(feats, im_inds, locations, sizes, params)
    assert out.shape == (4, 1, h, w)
    assert torch.allclose(out[0, 0], feats[0, 3], atol=1e-5)
    assert torch.allclose(out[1, 0], feats[1, 5], atol=1e-5)
    xs = torch.arange(w) * 8.0 + 4  # mask-feature cell centres in image pixels
    ys = torch.arange(h) * 8.0 + 4
    assert torch.allclose(out[2, 0], ((36.0 - xs) / 32.0).expand(h, w), atol=1e-5)
    assert torch.allclose(out[3, 0], ((44.0 - ys) / 16.0)[:, None].expand(h, w), atol=1e-5)
    # forward: logits at stride 4, upsampled to image pixels
    full = head(feats, im_inds, locations, sizes, params)
    assert full.shape == (4, 1, h * 8, w * 8)
    # a feature linear in the cell centres (x / 100) comes out linear in the pixel centres
    ramp = feats.clone()
    ramp[0, 3] = (xs / 100.0).expand(h, w)
    full = head(ramp, im_inds[:1], locations[:1], sizes[:1], params[:1])
    inner = torch.arange(8, (w - 1) * 8)  # away from the clamped borders
    assert torch.allclose(full[0, 0, :, inner], ((inner + 0.5) / 100.0).expand(h * 8, -1), atol=1e-5)
    assert head.mask_logits(feats, im_inds[:0], locations[:0], sizes[:0], params[:0]).shape == (0, 1, h, w)


def test_aligned_bilinear_keeps_cell_centres_and_composes():
    h, w = 3, 5
    ys, xs = compute_locations(h, w, 8)[:, 1].reshape(h, w), compute_locations(h, w, 8)[:, 0].reshape(h, w)
    x = torch.stack([xs, ys])[None]  # (1, 2, 3, 5): each cell's own centre, stride 8
    up4 = aligned_bilinear(x, 2)
    assert up4.shape == (1, 2, 6, 10)
    assert torch.allclose(up4[0, 0, 0, 2:8], torch.arange(2, 8) * 4.0 + 2)  # stride-4 centres
    up1 = aligned_bilinear(up4, 4)
    assert up1.shape == (1, 2, 24, 40)
    assert torch.allclose(up1[0, 0, 5, 8:32], torch.arange(8, 32) + 0.5)  # pixel centres
    assert torch.allclose(up1[0, 1, 8:16, 3], torch.arange(8, 16) + 0.5)


# ------------------------------------------------------------------------------ the model
def shapes_image(h, w, seed):
    """A Detectron2 training dict: a noisy background with 2-3 coloured shapes (masks, classes)."""
    g = torch.Generator().manual_seed(seed)
    img = torch.full((3, h, w), 90.0) + 10 * torch.randn(3, h, w, generator=g)
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    colours = {0: (230.0, 40.0, 40.0), 1: (40.0, 230.0, 40.0), 2: (40.0, 40.0, 230.0), 3: (230.0, 230.0, 40.0)}
    specs = [(0, 16, 14, 9), (2, 60, 40, 14), (3, 30, 44, 6)] if seed % 2 else [(1, 70, 16, 10), (0, 24, 40, 12)]
    masks, classes = [], []
    for cls, cx, cy, r in specs:
        if cls in (0, 3):  # disc
            m = (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r
        else:  # square
            m = ((xs - cx).abs() <= r) & ((ys - cy).abs() <= r)
        img[:, m] = torch.tensor(colours[cls])[:, None]
        masks.append(m)
        classes.append(cls)
    inst = Instances((h, w))
    inst.gt_masks = BitMasks(torch.stack(masks))
    inst.gt_boxes = inst.gt_masks.get_bounding_boxes()
    inst.gt_classes = torch.tensor(classes)
    return {"image": img.clamp(0, 255), "instances": inst, "height": h, "width": w}


def test_configs_build_the_model():
    # COCO: the paper's mask branch on P3 (stride 8); tiny: on P2 (stride 4) for ~10-60 px objects.
    for name, mask_stride in (("condinst_R50_1x.yaml", 8), ("condinst_tiny_frames.yaml", 4)):
        cfg = get_cfg()
        add_condinst_config(cfg)
        cfg.merge_from_file(os.path.join(CONFIGS, name))
        cfg.MODEL.DEVICE = "cpu"
        model = build_model(cfg)
        assert isinstance(model, CondInst)
        assert model.in_features == ["p3", "p4", "p5", "p6", "p7"]
        assert model.strides == [8, 16, 32, 64, 128]
        assert model.mask_branch.out_stride == model.mask_head.feat_stride == mask_stride, name
        assert model.mask_branch.out_channels == 8
        assert model.head.controller.out_channels == model.mask_head.num_params == 169


def test_tiny_config_mask_branch_on_p2_shapes():
    """FPN over res2-res5 emits P2-P7; FCOS runs on P3-P7 only, the mask branch on P2-P5 at
    stride 4, and the dynamic masks come out at the padded input size."""
    torch.manual_seed(0)
    model = build_model(tiny_cfg())
    model.eval()
    shapes = model.backbone.output_shape()
    assert {k: v.stride for k, v in shapes.items()} == {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64, "p7": 128}
    assert model.mask_branch.in_features == ["p2", "p3", "p4", "p5"]
    x = torch.randn(2, 3, 128, 160)
    with torch.no_grad():
        feats = model.backbone(x)
        assert feats["p2"].shape == (2, 32, 32, 40) and feats["p7"].shape == (2, 32, 1, 2)
        locations, logits, _, _, params, mask_feats, _ = model._head_outputs(feats)
        assert [tuple(lo.shape[-2:]) for lo in logits] == [(16, 20), (8, 10), (4, 5), (2, 3), (1, 2)]
        assert [len(loc) for loc in locations] == [320, 80, 20, 6, 2]
        assert mask_feats.shape == (2, 8, 32, 40)
        k = 3
        masks = model.mask_head(mask_feats, torch.tensor([0, 1, 1]), locations[0][:k],
                                torch.full((k,), 32.0), params[0][0].flatten(1).t()[:k])
    assert masks.shape == (k, 1, 128, 160)


def test_mask_branch_upsample_runs_the_branch_at_a_finer_stride():
    """MASK_BRANCH.UPSAMPLE 2 on P2: mask features at stride 2, dynamic masks still at the input
    size; a factor that does not divide the stride is a one-line config error."""
    model = build_model(tiny_cfg("MODEL.CONDINST.MASK_BRANCH.UPSAMPLE", "2", "MODEL.CONDINST.MASK_OUT_STRIDE", "2"))
    model.eval()
    assert model.mask_branch.out_stride == model.mask_head.feat_stride == 2
    with torch.no_grad():
        feats = model.backbone(torch.randn(1, 3, 128, 160))
        locations, _, _, _, params, mask_feats, _ = model._head_outputs(feats)
        assert mask_feats.shape == (1, 8, 64, 80)
        masks = model.mask_head(mask_feats, torch.tensor([0]), locations[0][:1], torch.full((1,), 32.0),
                                params[0][0].flatten(1).t()[:1])
    assert masks.shape == (1, 1, 128, 160)
    with pytest.raises(ValueError, match="MODEL.CONDINST.MASK_BRANCH.UPSAMPLE must be a divisor"):
        build_model(tiny_cfg("MODEL.CONDINST.MASK_BRANCH.UPSAMPLE", "3"))
    with pytest.raises(ValueError, match=r"MODEL.CONDINST.MASK_OUT_STRIDE=4 must divide the mask-branch stride 2 "
                                         r"\(stride of MASK_BRANCH.IN_FEATURES\[0\] / MASK_BRANCH.UPSAMPLE\)"):
        build_model(tiny_cfg("MODEL.CONDINST.MASK_BRANCH.UPSAMPLE", "2"))


def test_training_step_has_finite_losses_and_gradients_everywhere():
    torch.manual_seed(0)
    model = build_model(tiny_cfg())
    model.train()
    batch = [shapes_image(64, 96, 1), shapes_image(80, 96, 2)]
    with EventStorage():
        losses = model(batch)
    assert set(losses) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr", "loss_mask"}
    for name, value in losses.items():
        assert torch.isfinite(value) and value.item() > 0, name
    sum(losses.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} has no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
    for name in ("head.controller.weight", "mask_branch.out.weight", "head.bbox_pred.weight", "backbone.bottom_up.stem.conv1.weight"):
        assert dict(model.named_parameters())[name].grad.abs().sum() > 0, name


def test_training_step_without_instances():
    model = build_model(tiny_cfg())
    model.train()
    empty = shapes_image(64, 64, 1)
    empty["instances"] = empty["instances"][:0]
    with EventStorage():  # two images: GroupNorm(32) of a 1x1 P7 needs 2 values per group
        losses = model([empty, empty])
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()


@pytest.fixture(scope="module")
def overfit():
    """The tiny model (FPN 32) trained 60 iterations on two 64x96 images; losses per iteration."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model = build_model(tiny_cfg("MODEL.FCOS.SIZES_OF_INTEREST", "[16, 32, 64, 128]"))
    batch = [shapes_image(64, 96, 1), shapes_image(64, 96, 2)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    history = []
    model.train()
    with EventStorage():
        for _ in range(60):
            losses = model(batch)
            total = sum(losses.values())
            optimizer.zero_grad()
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            history.append({k: v.item() for k, v in losses.items()})
    model.eval()
    torch.set_num_threads(threads)
    return model, batch, history


def test_overfit_two_images_halves_the_loss(overfit):
    _, _, history = overfit
    totals = [sum(h.values()) for h in history]
    assert all(np.isfinite(totals))
    assert np.mean(totals[-5:]) < 0.5 * np.mean(totals[:3]), totals


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # NumPy 2 in Detectron2
def test_inference_outputs_valid_instances(overfit):
    model, batch, _ = overfit
    inputs = [{"image": b["image"], "height": 128, "width": 192} for b in batch]  # outputs at 2x
    with torch.no_grad():
        outputs = model(inputs)
    for out, b in zip(outputs, batch):
        inst = out["instances"]
        assert isinstance(inst, Instances) and inst.image_size == (128, 192)
        assert set(inst.get_fields()) == {"pred_boxes", "scores", "pred_classes", "pred_masks"}
        n = len(inst)
        assert 0 < n <= model.detections_per_image
        assert inst.pred_masks.dtype == torch.bool and inst.pred_masks.shape == (n, 128, 192)
        assert ((inst.scores >= 0) & (inst.scores <= 1)).all()
        assert (inst.scores[:-1] >= inst.scores[1:]).all()  # sorted, as after NMS
        assert ((inst.pred_classes >= 0) & (inst.pred_classes < 4)).all()
        boxes = inst.pred_boxes.tensor
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 192).all() and (boxes[:, 3] <= 128).all()
        assert (boxes[:, 2] > boxes[:, 0]).all()
        # every memorised object of >= 200 px is found: some detection's mask covers it well (IoU >
        # 0.5; measured >= 0.93 under three CPU-kernel settings). The 12-px disc (113 px) is left
        # out: found at IoU 0.92 natively but missed under ATEN_CPU_CAPABILITY=default, also after
        # 100 iterations, so finding it is floating-point luck, not a property.
        gt = torch.nn.functional.interpolate(b["instances"].gt_masks.tensor[:, None].float(), size=(128, 192))[:, 0] > 0.5
        large = b["instances"].gt_masks.tensor.flatten(1).sum(1) >= 200
        assert large.sum() >= 2
        pred = inst.pred_masks.float().flatten(1)
        inter = gt.float().flatten(1) @ pred.t()
        iou = inter / (gt.float().flatten(1).sum(1)[:, None] + pred.sum(1)[None] - inter)
        assert (iou.max(dim=1).values[large] > 0.5).all(), iou.max(dim=1).values
        # Detectron2's COCOEvaluator conversion (RLE masks, XYWH boxes)
        records = instances_to_coco_json(inst, img_id=0)
        assert len(records) == n and all("segmentation" in r and "bbox" in r for r in records)
    # no detections at all: still well-formed
    model.score_thresh = 1.1
    try:
        with torch.no_grad():
            inst = model(inputs)[0]["instances"]
    finally:
        model.score_thresh = 0.05
    assert len(inst) == 0 and inst.pred_masks.shape == (0, 128, 192) and inst.pred_masks.dtype == torch.bool
