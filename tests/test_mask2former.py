"""Mask2Former (projects/Mask2Former): the Hungarian matcher on hand-built costs, masked attention
on hand-built masks, the deformable attention against bilinear sampling by hand, query matching
on hand-built embeddings, a CPU training step, a one-image overfit and the query-matching video
model's outputs."""
import glob
import json
import os
import sys
import zipfile

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Instances
from detectron2.utils.events import EventStorage

PROJECT = os.path.join(os.path.dirname(__file__), "..", "projects", "Mask2Former")
sys.path.insert(0, PROJECT)
from mask2former import (  # noqa: E402
    AttentionLayer,
    HungarianMatcher,
    QueryMatchMask2Former,
    QueryTracks,
    add_mask2former_config,
    attention_mask_from_logits,
    ms_deform_attn_core,
    pairwise_dice_cost,
    pairwise_sigmoid_ce_cost,
)

CONFIGS = os.path.join(PROJECT, "configs")


def tiny_cfg(*opts):
    """The tiny config made smaller still (32 channels, 2 decoder layers) for unit tests."""
    cfg = get_cfg()
    add_mask2former_config(cfg)
    cfg.merge_from_file(os.path.join(CONFIGS, "mask2former_tiny_frames.yaml"))
    cfg.merge_from_list([
        "MODEL.MASK2FORMER.CONV_DIM", "32", "MODEL.MASK2FORMER.MASK_DIM", "32", "MODEL.MASK2FORMER.HIDDEN_DIM", "32",
        "MODEL.MASK2FORMER.DIM_FEEDFORWARD", "64", "MODEL.MASK2FORMER.DEC_DIM_FEEDFORWARD", "64",
        "MODEL.MASK2FORMER.ENCODER_LAYERS", "1", "MODEL.MASK2FORMER.DEC_LAYERS", "2",
        "MODEL.MASK2FORMER.TRAIN_NUM_POINTS", "1024", *opts,
    ])
    return cfg


def squares_image(h, w, seed):
    """A Detectron2 training dict: a noisy grey background with two coloured squares of classes 0 and 2."""
    g = torch.Generator().manual_seed(seed)
    img = torch.full((3, h, w), 100.0) + 8 * torch.randn(3, h, w, generator=g)
    masks = torch.zeros(2, h, w, dtype=torch.bool)
    masks[0, 8:28, 10:30] = True
    masks[1, 30:54, 50:80] = True
    img[:, masks[0]] = torch.tensor([230.0, 40.0, 40.0])[:, None]
    img[:, masks[1]] = torch.tensor([40.0, 40.0, 230.0])[:, None]
    inst = Instances((h, w))
    inst.gt_masks = BitMasks(masks)
    inst.gt_boxes = inst.gt_masks.get_bounding_boxes()
    inst.gt_classes = torch.tensor([0, 2])
    return {"image": img.clamp(0, 255), "instances": inst, "height": h, "width": w}


# ------------------------------------------------------------------------------ matcher
def test_pairwise_costs_on_hand_built_points():
    logits = torch.tensor([[10.0, 10.0, -10.0, -10.0], [-10.0, -10.0, 10.0, 10.0]])
    targets = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    ce, dice = pairwise_sigmoid_ce_cost(logits, targets), pairwise_dice_cost(logits, targets)
    assert ce.shape == dice.shape == (2, 2)
    # right masks: ~0 cost; swapped: CE ~10 per point, Dice ~1
    assert ce[0, 0] < 1e-3 and ce[1, 1] < 1e-3 and ce[0, 1] > 9 and ce[1, 0] > 9
    assert dice[0, 0] < 0.01 and dice[1, 1] < 0.01 and dice[0, 1] > 0.6 and dice[1, 0] > 0.6


def test_matcher_assigns_each_target_its_query():
    h, w = 16, 16
    gt_masks = torch.zeros(2, h, w)
    gt_masks[0, :, :8] = 1  # left half, class 1
    gt_masks[1, :, 8:] = 1  # right half, class 0
    gt_classes = torch.tensor([1, 0])
    # query 0: right half, class 0; query 1: nothing; query 2: left half, class 1
    masks = torch.full((3, h, w), -10.0)
    masks[0, :, 8:] = 10.0
    masks[2, :, :8] = 10.0
    logits = torch.tensor([[5.0, 0.0, 0.0], [0.0, 0.0, 5.0], [0.0, 5.0, 0.0]])  # 2 classes + no-object
    matcher = HungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=256)
    (rows, cols), (e_rows, e_cols) = matcher(
        {"pred_logits": logits[None].expand(2, -1, -1), "pred_masks": masks[None].expand(2, -1, -1, -1)},
        [{"labels": gt_classes, "masks": gt_masks},
         {"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, h, w)}],
    )
    assert dict(zip(cols.tolist(), rows.tolist())) == {0: 2, 1: 0}
    assert len(e_rows) == len(e_cols) == 0
    # the class cost alone decides when the masks are identical: the query of the right class wins
    same = torch.zeros(2, h, w)
    cost = matcher.cost_matrix(torch.tensor([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0]]), same, torch.tensor([1]), gt_masks[:1])
    assert cost[1, 0] < cost[0, 0] - 1.0


# ------------------------------------------------------------------------------ masked attention
def test_attention_mask_from_hand_built_masks():
    logits = torch.full((1, 3, 4, 4), -10.0)
    logits[0, 0, :2] = 10.0  # query 0: the top half
    logits[0, 1] = 10.0  # query 1: everything
    # query 2: empty -> attends everywhere
    blocked = attention_mask_from_logits(logits, (4, 4), num_heads=2)
    assert blocked.shape == (2, 3, 16) and blocked.dtype == torch.bool
    for head in range(2):
        assert blocked[head, 0, :8].logical_not().all() and blocked[head, 0, 8:].all()
        assert not blocked[head, 1].any() and not blocked[head, 2].any()


def test_masked_query_ignores_keys_outside_its_mask():
    torch.manual_seed(0)
    layer = AttentionLayer(dim=8, num_heads=2).eval()
    tgt, memory = torch.randn(1, 2, 8), torch.randn(1, 6, 8)
    logits = torch.full((1, 2, 1, 6), -10.0)
    logits[0, 0, 0, :3] = 10.0  # query 0 sees keys 0-2 only; query 1's mask is empty: all keys
    blocked = attention_mask_from_logits(logits, (1, 6), num_heads=2)
    changed = memory.clone()
    changed[0, 4] += 100.0  # a key outside query 0's mask
    with torch.no_grad():
        before, after = layer(tgt, memory, blocked), layer(tgt, changed, blocked)
    assert torch.isfinite(before).all()
    assert torch.allclose(before[0, 0], after[0, 0], atol=1e-5)  # zero weight on the excluded key
    assert (before[0, 1] - after[0, 1]).abs().max() > 1e-2  # the all-empty mask fell back to full attention


# ------------------------------------------------------------------------------ deformable attention
def _bilinear(value, x, y):
    """value (D, h, w) at pixel coordinates (x, y) (cell centres at i + 0.5), zero outside."""
    _, h, w = value.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = int(np.floor(px)), int(np.floor(py))
    out = torch.zeros(value.shape[0], dtype=torch.float64)
    for xi, yi in ((x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)):
        if 0 <= xi < w and 0 <= yi < h:
            out += (1 - abs(px - xi)) * (1 - abs(py - yi)) * value[:, yi, xi].double()
    return out


def test_deformable_attention_matches_direct_computation():
    g = torch.Generator().manual_seed(0)
    shapes = [(3, 4), (2, 2)]
    batch, queries, heads, dim, points = 1, 2, 2, 3, 2
    value = torch.randn(batch, sum(h * w for h, w in shapes), heads, dim, generator=g, dtype=torch.float64)
    # inside, on the border, and outside the map
    locations = torch.rand(batch, queries, heads, len(shapes), points, 2, generator=g, dtype=torch.float64) * 1.4 - 0.2
    weights = torch.rand(batch, queries, heads, len(shapes), points, generator=g, dtype=torch.float64)
    out = ms_deform_attn_core(value, shapes, locations, weights)
    assert out.shape == (batch, queries, heads * dim)
    levels = value[0].split([h * w for h, w in shapes])
    for q in range(queries):
        for m in range(heads):
            expected = torch.zeros(dim, dtype=torch.float64)
            for lvl, (h, w) in enumerate(shapes):
                v = levels[lvl][:, m].t().reshape(dim, h, w)
                for p in range(points):
                    x, y = locations[0, q, m, lvl, p].tolist()
                    expected += weights[0, q, m, lvl, p] * _bilinear(v, x, y)
            assert torch.allclose(out[0, q, m * dim : (m + 1) * dim], expected, atol=1e-9)


# ------------------------------------------------------------------------------ query matching
def test_track_ids_follow_the_embeddings_across_a_permutation():
    g = torch.Generator().manual_seed(0)
    base = torch.linalg.qr(torch.randn(8, 8, generator=g))[0][:4]  # 4 orthonormal embeddings
    tracks = QueryTracks()
    first = tracks.update(3.0 * base)
    assert first.tolist() == [0, 1, 2, 3]
    perm = torch.tensor([2, 0, 3, 1])
    noisy = base[perm] + 0.1 * torch.randn(4, 8, generator=g)  # permuted, rescaled, noisy
    assert tracks.update(0.5 * noisy).tolist() == perm.tolist()
    # a fifth detection starts a new track; the four known ones keep their ids
    extra = torch.cat([base[[1, 3]], torch.ones(1, 8), base[[0, 2]]])
    assert tracks.update(extra).tolist() == [1, 3, 4, 0, 2]
    assert len(tracks) == 5 and tracks.update(torch.zeros(0, 8)).tolist() == []


# ------------------------------------------------------------------------------ training
def test_configs_build_and_load_into_the_query_matching_model():
    for path in sorted(glob.glob(os.path.join(CONFIGS, "**", "*.yaml"), recursive=True)):
        cfg = get_cfg()
        add_mask2former_config(cfg)
        cfg.merge_from_file(path)
        assert cfg.MODEL.META_ARCHITECTURE in ("Mask2Former", "QueryMatchMask2Former", "IAIMask2Former"), path
    cfg = tiny_cfg()
    image_model = build_model(cfg)
    cfg.MODEL.META_ARCHITECTURE = "QueryMatchMask2Former"
    video_model = build_model(cfg)
    assert isinstance(video_model, QueryMatchMask2Former)
    # image checkpoints load unchanged
    assert video_model.load_state_dict(image_model.state_dict()) is not None


def test_training_step_gives_finite_losses_with_deep_supervision():
    torch.manual_seed(0)
    model = build_model(tiny_cfg())
    model.train()
    with EventStorage():
        losses = model([squares_image(64, 96, 1)])
    # final + 2 decoder layers + the initial prediction: 3 x 3 losses
    assert len(losses) == 9 and {"loss_ce", "loss_mask", "loss_dice", "loss_ce_0", "loss_dice_1"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.fixture(scope="module")
def overfit():
    """The unit-test model trained 25 iterations on one 64x96 image; total loss per iteration
    (from ~35 to ~8 at iteration 25 when written)."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model = build_model(tiny_cfg())
    batch = [squares_image(64, 96, 1)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    history = []
    model.train()
    with EventStorage():
        for _ in range(25):
            total = sum(model(batch).values())
            optimizer.zero_grad()
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            history.append(total.item())
    model.eval()
    torch.set_num_threads(threads)
    return model, batch, history


def test_overfit_one_image_halves_the_loss(overfit):
    _, _, history = overfit
    assert all(np.isfinite(history))
    assert np.mean(history[-5:]) < 0.5 * np.mean(history[:3]), history


def test_image_inference_outputs_valid_instances(overfit):
    model, batch, _ = overfit
    with torch.no_grad():
        inst = model([{"image": batch[0]["image"], "height": 128, "width": 192}])[0]["instances"]
    assert set(inst.get_fields()) == {"pred_boxes", "scores", "pred_classes", "pred_masks"}
    n = len(inst)
    assert 0 < n <= model.detections_per_image
    assert inst.pred_masks.dtype == torch.bool and inst.pred_masks.shape == (n, 128, 192)
    assert (inst.scores[:-1] >= inst.scores[1:]).all() and ((inst.scores >= 0) & (inst.scores <= 1)).all()


def test_query_matching_video_outputs(overfit):
    image_model, batch, _ = overfit
    model = build_model(tiny_cfg("MODEL.META_ARCHITECTURE", "QueryMatchMask2Former"))
    model.load_state_dict(image_model.state_dict())
    model.eval()
    image = batch[0]["image"]
    frames = [image, image.flip(-1), image]
    with torch.no_grad():
        out = model([{"video_id": 7, "length": 3, "height": 64, "width": 96, "frames": frames}])[0]
    assert (out["video_id"], out["length"]) == (7, 3)
    preds = out["predictions"]
    assert 0 < len(preds) <= model.video_topk
    for p in preds:
        assert 0 <= p["category_id"] < 4 and 0 < p["score"] <= 1
        assert len(p["segmentations"]) == 3
    # bounded state: Q tracks whatever the length
    state = model.new_video_state()
    with torch.no_grad():
        ids = [model.inference_frame(state, image, 64, 96).ID.tolist() for _ in range(4)]
    assert len(state) == model.transformer_decoder.query_feat.num_embeddings
    assert ids[0] == ids[3]  # the same frame again: every query keeps its track


# ------------------------------------------------------------------------------ end to end
def test_image_checkpoint_evaluates_on_videos_with_a_valid_submission(synthetic_vis_root, run_tool, e2e_settings,
                                                                       tmp_path):
    """train_net.py trains Mask2Former on frames (a few iterations), then ``--eval-only`` runs the
    query-matching model on the synthetic_vis_val videos with that image checkpoint."""
    from iai_d2.evaluation import validate_results

    script = os.path.join("..", "projects", "Mask2Former", "train_net.py")  # run_tool paths are under tools/
    image_dir, video_dir = tmp_path / "image", tmp_path / "video"
    proc = run_tool(
        script, "--config-file", os.path.join(CONFIGS, "mask2former_tiny_frames.yaml"), *e2e_settings.input_opts,
        "SOLVER.MAX_ITER", 3, "SOLVER.IMS_PER_BATCH", 2, "SOLVER.WARMUP_ITERS", 1, "SOLVER.STEPS", "(2,)",
        "DATASETS.TEST", "()", "OUTPUT_DIR", image_dir, datasets_root=synthetic_vis_root,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_tool(
        script, "--config-file", os.path.join(CONFIGS, "query_matching_tiny.yaml"), "--eval-only",
        *e2e_settings.input_opts, "MODEL.WEIGHTS", image_dir / "model_final.pth", "OUTPUT_DIR", video_dir,
        datasets_root=synthetic_vis_root,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with zipfile.ZipFile(video_dir / "inference" / "submission.zip") as zf:
        assert zf.namelist() == ["results.json"]
        results = json.loads(zf.read("results.json"))
    with open(synthetic_vis_root / "synthetic_vis" / "valid.json") as f:
        validate_results(results, json.load(f))  # raises on an invalid submission
    assert results == json.loads((video_dir / "inference" / "results.json").read_text())
    # a video model trains on images only: a video split as training set is one line
    proc = run_tool(
        script, "--config-file", os.path.join(CONFIGS, "query_matching_tiny.yaml"), *e2e_settings.input_opts,
        "DATASETS.TRAIN", "('synthetic_vis_train',)", "OUTPUT_DIR", tmp_path / "bad", datasets_root=synthetic_vis_root,
    )
    last_line = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and last_line.startswith("error: QueryMatchMask2Former trains on image"), last_line
