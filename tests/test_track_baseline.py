"""Tracking-by-detection baseline (projects/TrackBaseline): matching on hand-built embeddings, a CPU
training step, memorising one clip, train_net.py training + --eval-only submission, streaming; and
CondInst Track (TrackCondInst): reference embeddings, a training step, online and video inference."""
import json
import os
import subprocess
import sys
import uuid
import zipfile

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from iai_d2.data import SYNTHETIC_CATEGORIES, YTVISClipDatasetMapper, generate_synthetic_vis
from iai_d2.data.datasets.ytvis import load_ytvis_json, register_ytvis_instances, ytvis_category_metadata
from iai_d2.evaluation import validate_results
from iai_d2.predictor import VideoPredictor

PROJECT = os.path.join(os.path.dirname(__file__), "..", "projects", "TrackBaseline")
sys.path.insert(0, PROJECT)
from track_baseline import (  # noqa: E402
    TrackCondInst,
    TrackMemory,
    TrackRCNN,
    TrackVideoModel,
    add_trackbaseline_config,
    affinity_logits,
    assign_tracks,
)
from track_baseline.condinst_track import instance_embeddings  # noqa: E402

from test_modeling_meta_arch import make_clip  # noqa: E402

TINY_CONFIG = os.path.join(PROJECT, "configs", "synthetic_tiny.yaml")
CONDINST_TINY_CONFIG = os.path.join(PROJECT, "configs", "condinst_synthetic_tiny.yaml")
COEFFS = (1.0, 2.0, 10.0)


def unit(*values):
    """A (D,) embedding of norm 10: dot products of 100 (same) vs 0 (orthogonal) are decisive."""
    v = torch.tensor(values, dtype=torch.float32)
    return 10 * v / v.norm()


def frame(embeddings, boxes, classes, scores=None):
    """Detections of one frame as the arguments of TrackMemory.update."""
    n = len(embeddings)
    return dict(
        embeddings=torch.stack(embeddings) if n else torch.zeros((0, 3)),
        scores=torch.full((n,), 0.9) if scores is None else torch.tensor(scores),
        boxes=torch.tensor(boxes, dtype=torch.float32).reshape(n, 4),
        classes=torch.tensor(classes, dtype=torch.long),
    )


LEFT, RIGHT = [0.0, 0.0, 10.0, 10.0], [50.0, 0.0, 60.0, 10.0]


# ------------------------------------------------------------------------------ matching
def test_affinity_logits_have_a_zero_new_column():
    logits = affinity_logits(torch.randn(3, 4), torch.randn(2, 4))
    assert logits.shape == (3, 3)
    assert torch.equal(logits[:, 0], torch.zeros(3))


def test_embeddings_continue_tracks_and_start_new_ones():
    memory = TrackMemory(COEFFS, max_age=5)
    a, b, c = unit(1, 0, 0), unit(0, 1, 0), unit(0, 0, 1)
    assert memory.update(**frame([a, b], [LEFT, RIGHT], [0, 0]), frame_idx=0).tolist() == [0, 1]
    # Same boxes and class for both: the embeddings alone decide; c matches no track -> new.
    ids = memory.update(**frame([b, c, a], [LEFT, LEFT, LEFT], [0, 0, 0]), frame_idx=1)
    assert ids.tolist() == [1, 2, 0]
    assert len(memory) == 3


def test_iou_and_class_terms_break_embedding_ties():
    memory = TrackMemory(COEFFS, max_age=5)
    e = unit(1, 1, 0)
    memory.update(**frame([e, e], [LEFT, RIGHT], [0, 1]), frame_idx=0)
    # Identical embeddings for both tracks: box overlap picks the track ...
    assert memory.update(**frame([e], [RIGHT], [1]), frame_idx=1).tolist() == [1]
    assert memory.update(**frame([e], [LEFT], [0]), frame_idx=2).tolist() == [0]
    # ... without overlap the class does (track 1 moves far away), and the class term outweighs
    # the IoU term (g = 10 > b = 2): a class-0 detection on track 1's box continues track 0.
    far = [[100.0, 100.0, 110.0, 110.0]]
    assert memory.update(**frame([e], far, [1]), frame_idx=3).tolist() == [1]
    assert memory.update(**frame([e], far, [0]), frame_idx=4).tolist() == [0]


def test_each_track_is_taken_at_most_once():
    memory = TrackMemory(COEFFS, max_age=5)
    a = unit(1, 0, 0)
    memory.update(**frame([a], [LEFT], [0]), frame_idx=0)
    # Two detections both look like track 0: the overlapping one keeps it, the other is new.
    ids = memory.update(**frame([a, a], [RIGHT, LEFT], [0, 0], scores=[0.9, 0.3]), frame_idx=1)
    assert ids.tolist() == [1, 0]
    scores = torch.tensor([[0.0, 5.0, 4.0], [0.0, 5.0, -1.0], [0.0, -9.0, -9.0]])  # column 0 = new
    match = assign_tracks(scores)
    assert sorted(match[match >= 0].tolist()) == [0, 1] and match[2] == -1
    assert assign_tracks(torch.zeros((2, 1))).tolist() == [-1, -1]  # no track yet: all new


def test_tracks_unseen_longer_than_max_age_are_forgotten():
    memory = TrackMemory(COEFFS, max_age=2)
    a = unit(1, 0, 0)
    memory.update(**frame([a], [LEFT], [0]), frame_idx=0)
    assert memory.update(**frame([a], [LEFT], [0]), frame_idx=2).tolist() == [0]
    empty = frame([], [], [])
    for t in (3, 4, 5):
        assert memory.update(**empty, frame_idx=t).tolist() == []
    assert len(memory) == 0
    assert memory.update(**frame([a], [LEFT], [0]), frame_idx=6).tolist() == [1]


# ------------------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def tiny_clip_data(tmp_path_factory):
    """A registered 2-video synthetic split at 96x128 and the tiny config pointing at it."""
    root = tmp_path_factory.mktemp("track_baseline")
    train_json, _ = generate_synthetic_vis(
        str(root), num_videos=2, num_frames=6, height=96, width=128, seed=4, num_val_videos=1
    )
    name = f"track_baseline_{uuid.uuid4().hex[:8]}"
    image_root = str(root / "train" / "JPEGImages")
    register_ytvis_instances(name, ytvis_category_metadata(SYNTHETIC_CATEGORIES), train_json, image_root)
    cfg = get_cfg()
    add_trackbaseline_config(cfg)
    cfg.merge_from_file(TINY_CONFIG)
    cfg.merge_from_list([
        "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "128", "INPUT.RANDOM_FLIP", "none",
        "DATASETS.TRAIN", f"('{name}',)", "DATALOADER.NUM_WORKERS", "0",
    ])
    return cfg, load_ytvis_json(train_json, image_root, name)


def one_clip(cfg, records, seed=0):
    """A training pair (2 frames) of the first video with instances, as the clip mapper makes it."""
    np.random.seed(seed)
    record = next(r for r in records if any(r["annotations"]))
    return YTVISClipDatasetMapper(cfg, is_train=True)(record)


def test_training_step_on_cpu_gives_finite_losses(tiny_clip_data, one_torch_thread):
    cfg, records = tiny_clip_data
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    with EventStorage():
        losses = model([one_clip(cfg, records, seed=s) for s in (0, 1)])
    expected = {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_mask", "loss_track"}
    assert set(losses) == expected
    assert all(bool(torch.isfinite(v)) for v in losses.values()), losses
    sum(losses.values()).backward()
    grads = [p.grad for p in model.roi_heads.track_head.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)


def test_loss_falls_when_memorising_one_clip(tiny_clip_data, one_torch_thread):
    cfg, records = tiny_clip_data
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    clip = one_clip(cfg, records)
    assert all(len(i) > 0 for i in clip["instances"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)
    history = []
    with EventStorage():
        for _ in range(40):
            losses = model([clip])
            total = sum(losses.values())
            optimizer.zero_grad()
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE)
            optimizer.step()
            history.append((total.item(), losses["loss_track"].item()))
    # First iteration (the initialisation) vs the median of the last 10 (robust to AdamW spikes).
    first, last = np.array(history[0]), np.median(history[-10:], axis=0)
    assert last[0] <= 0.6 * first[0], f"total loss {first[0]:.3f} -> {last[0]:.3f}"
    assert last[1] <= 0.4 * first[1], f"loss_track {first[1]:.3f} -> {last[1]:.3f}"


# ------------------------------------------------------------------------------ train_net + eval
def run_train_net(*args, datasets_root, timeout=300):
    """projects/TrackBaseline/train_net.py with the tiny config, from the repository root."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", DETECTRON2_DATASETS=str(datasets_root))
    script = os.path.join(PROJECT, "train_net.py")
    return subprocess.run(
        [sys.executable, script, "--config-file", TINY_CONFIG, *map(str, args)],
        env=env, cwd=os.path.join(PROJECT, "..", ".."), stdin=subprocess.DEVNULL, capture_output=True,
        text=True, timeout=timeout,
    )


@pytest.fixture(scope="module")
def trained_baseline(synthetic_vis_root, e2e_settings, tmp_path_factory):
    """train_net.py for 2 iterations on the e2e synthetic_vis root: (output dir, its opts)."""
    out = tmp_path_factory.mktemp("trackbaseline_run")
    opts = [*e2e_settings.input_opts, "SOLVER.MAX_ITER", 2, "SOLVER.WARMUP_ITERS", 1]
    opts += ["SOLVER.STEPS", "(100,)"]
    proc = run_train_net(*opts, "OUTPUT_DIR", out, datasets_root=synthetic_vis_root)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (out / "model_final.pth").is_file()
    return out, opts


def test_eval_only_writes_a_valid_submission(trained_baseline, synthetic_vis_root, tmp_path):
    train_out, opts = trained_baseline
    out = tmp_path / "eval"
    proc = run_train_net(
        "--eval-only", *opts, "MODEL.WEIGHTS", train_out / "model_final.pth", "OUTPUT_DIR", out,
        datasets_root=synthetic_vis_root,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "copypaste: AP," in proc.stdout + proc.stderr  # scored against the val annotations
    with zipfile.ZipFile(out / "inference" / "submission.zip") as zf:
        assert zf.namelist() == ["results.json"]
        results = json.loads(zf.read("results.json"))
    with open(synthetic_vis_root / "synthetic_vis" / "valid.json") as f:
        gt = json.load(f)
    validate_results(results, gt)  # raises on any malformed entry
    assert {r["video_id"] for r in results} <= {v["id"] for v in gt["videos"]}


def test_analyze_tracking_runs_on_the_baseline(trained_baseline, synthetic_vis_root, run_tool, tmp_path):
    """tools/analyze_tracking.py takes a TrackBaseline config (the same three identity rows)."""
    train_out, opts = trained_baseline
    proc = run_tool("analyze_tracking.py", "--config-file", TINY_CONFIG, "--output", tmp_path, *opts,
                    "MODEL.WEIGHTS", train_out / "model_final.pth", datasets_root=synthetic_vis_root)
    assert proc.returncode == 0, proc.stderr[-4000:]
    table = (tmp_path / "diagnosis.md").read_text()
    assert all(name in table for name in ("model IDs", "IoU-linked", "oracle"))
    proc = run_tool("analyze_tracking.py", "--config-file", TINY_CONFIG, "--output", tmp_path,
                    "MODEL.NO_SUCH_KEY", 1, datasets_root=synthetic_vis_root, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: bad config override") and "MODEL.NO_SUCH_KEY" in last, last


def test_video_predictor_streams_with_unique_ids(trained_baseline, e2e_settings):
    train_out, opts = trained_baseline
    cfg = get_cfg()
    add_trackbaseline_config(cfg)
    cfg.merge_from_file(TINY_CONFIG)
    cfg.merge_from_list([str(o) for o in opts] + ["MODEL.WEIGHTS", str(train_out / "model_final.pth")])
    predictor = VideoPredictor(cfg)
    rng = np.random.RandomState(0)
    frames = [rng.randint(0, 255, (e2e_settings.height, e2e_settings.width, 3), dtype=np.uint8)] * 3
    predictor.reset()
    outputs = [predictor(f) for f in frames]
    for inst in outputs:
        assert inst.pred_masks.shape[1:] == (e2e_settings.height, e2e_settings.width)
        assert inst.pred_masks.dtype == torch.bool
        assert len(set(inst.ID.tolist())) == len(inst)
        assert inst.class_probs.shape == (len(inst), cfg.MODEL.ROI_HEADS.NUM_CLASSES)
    predictor.reset()
    first = predictor(frames[0])
    assert sorted(first.ID.tolist()) == list(range(len(first)))  # a new video numbers from 0


# ------------------------------------------------------------------------------ CondInst Track
def condinst_track(seed=0):
    cfg = get_cfg()
    add_trackbaseline_config(cfg)
    cfg.merge_from_file(CONDINST_TINY_CONFIG)
    torch.manual_seed(seed)
    return build_model(cfg)


def test_condinst_track_shares_the_video_logic_with_track_rcnn():
    assert issubclass(TrackCondInst, TrackVideoModel) and issubclass(TrackRCNN, TrackVideoModel)
    for name in ("forward", "forward_clips", "new_video_state", "inference_frame", "inference_video"):
        assert getattr(TrackCondInst, name) is getattr(TrackRCNN, name) is getattr(TrackVideoModel, name), name


def test_reference_embedding_is_the_mean_over_an_instance_positive_locations():
    embeddings = torch.tensor([[9.0, 9.0], [1.0, 2.0], [3.0, 4.0], [5.0, 0.0], [9.0, 9.0]])
    matched = torch.tensor([-1, 0, 0, 2, -1])  # instance 1 (id 8) has no positive location
    emb, ids = instance_embeddings(embeddings, matched, torch.tensor([7, 8, 9]))
    assert torch.equal(emb, torch.tensor([[2.0, 3.0], [5.0, 0.0]])) and ids.tolist() == [7, 9]


def test_condinst_track_training_step_gives_finite_losses_and_track_gradients(one_torch_thread):
    model = condinst_track()
    model.train()
    # Pairs (reference, key): a new instance (2) in the key frame, one that left (1).
    clips = [make_clip(1, [[0, 1], [0, 2]]), make_clip(2, [[3], [3, 1]])]
    with EventStorage(0) as storage:
        losses = model(clips)
        accuracy = storage.latest()["track_head/accuracy"][0]
    assert set(losses) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr", "loss_mask", "loss_track"}
    assert all(bool(torch.isfinite(v)) for v in losses.values()), losses
    assert losses["loss_track"].item() > 0 and 0.0 <= accuracy <= 1.0
    sum(losses.values()).backward()
    grads = [p.grad for p in model.track_head.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert float(model.track_head.embed.weight.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="SAMPLING_FRAME_NUM >= 2"):
        model([make_clip(1, [[0]])])


def test_condinst_track_keeps_identities_online_and_writes_video_predictions(one_torch_thread):
    model = condinst_track()
    model.eval()
    model.score_thresh = 0.0  # untrained: FCOS probabilities sit at the 0.01 prior ...
    model.video_score_thresh = 0.0  # ... and so do the video-level track scores
    model.progress_bar = False
    image = make_clip(1, [[0, 1, 2]])["image"][0]
    state = model.new_video_state()
    outputs = [model.inference_frame(state, image, 96, 128) for _ in range(3)]
    first = outputs[0]
    assert len(first) >= 2 and sorted(first.ID.tolist()) == list(range(len(first)))
    for out in outputs:
        assert out.pred_masks.shape == (len(out), 96, 128) and out.pred_masks.dtype == torch.bool
        assert int(out.pred_masks.sum(0).max()) <= 1  # de-overlapped
        assert out.class_probs.shape == (len(out), 4) and out.embeddings.shape == (len(out), 128)
        assert len(out) <= model.detections_per_image
        # The same frame again: the same detections continue their tracks.
        assert out.ID.tolist() == first.ID.tolist()
    assert state.frame_idx == 3 and len(state.tracks) == len(first)
    video = model.inference_video({"frames": [image] * 3, "video_id": 5, "length": 3, "height": 96, "width": 128})
    assert video["video_id"] == 5 and video["length"] == 3 and len(video["predictions"]) >= 1
    for pred in video["predictions"]:
        assert 0 <= pred["category_id"] < 4 and len(pred["segmentations"]) == 3
