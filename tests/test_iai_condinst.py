"""IAI + CondInst (projects/CondInst, IAICondInst): one identity pathway with IAIRCNN, a training
step on hand-built clips (dense and FCOS ID decoders), a short overfit, online inference, and
train_net.py --eval-only writing a valid submission."""
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import Instances
from detectron2.utils.events import EventStorage

from iai_d2.evaluation import validate_results
from iai_d2.modeling import IAIRCNN, IAIVideoModel

from test_modeling_meta_arch import make_clip

PROJECT = os.path.join(os.path.dirname(__file__), "..", "projects", "CondInst")
sys.path.insert(0, PROJECT)
from condinst import IAICondInst, add_condinst_config  # noqa: E402

TINY = os.path.join(PROJECT, "configs", "iai_condinst_tiny.yaml")


def tiny_cfg(decoder="dense"):
    cfg = get_cfg()
    add_condinst_config(cfg)
    cfg.merge_from_file(TINY)
    cfg.MODEL.IAI.ID_DECODER = decoder
    cfg.MODEL.IAI.DENSE_ID.LOSS_WEIGHT = 1.0 if decoder == "dense" else 0.0
    return cfg


def build(decoder="dense", seed=0):
    torch.manual_seed(seed)
    return build_model(tiny_cfg(decoder))


def test_identity_pathway_is_shared_with_iai_rcnn():
    assert issubclass(IAICondInst, IAIVideoModel) and issubclass(IAIRCNN, IAIVideoModel)
    for name in ("forward", "forward_clips", "inference_frame", "new_video_state", "identify",
                 "teacher_forced_frame", "inference_video"):
        assert getattr(IAICondInst, name) is getattr(IAIRCNN, name) is getattr(IAIVideoModel, name), name


def test_image_model_weights_load_into_the_tiny_config():
    """condinst_tiny_frames.yaml's model_final.pth initialises iai_condinst_tiny.yaml (e.g. in
    benchmarks/occlusion_benchmark.py): same backbone levels (P2-P7), every CondInst parameter
    present with the same shape; only the association and ID modules are new."""
    image_cfg = get_cfg()
    add_condinst_config(image_cfg)
    image_cfg.merge_from_file(os.path.join(PROJECT, "configs", "condinst_tiny_frames.yaml"))
    image, video = build_model(image_cfg), build("dense")
    image_shapes = {k: (v.channels, v.stride) for k, v in image.backbone.output_shape().items()}
    assert image_shapes == {k: (v.channels, v.stride) for k, v in video.backbone.output_shape().items()}
    assert "p2" in image_shapes and video.mask_branch.out_stride == image.mask_branch.out_stride == 4
    video_state = video.state_dict()
    for name, value in image.state_dict().items():
        assert name in video_state, name
        assert video_state[name].shape == value.shape, name


def test_unknown_id_decoder_is_a_config_error():
    with pytest.raises(ValueError, match="ID_DECODER must be one of"):
        build_model(tiny_cfg("roi"))


@pytest.mark.parametrize("decoder", ["dense", "fcos"])
def test_training_step_gives_finite_losses_and_gradients_on_id_modules(decoder, one_torch_thread):
    model = build(decoder)
    model.train()
    clips = [make_clip(1, [[0, 1], [0, 1, 2], [1, 2]]), make_clip(2, [[0], [], [0, 1]])]
    with EventStorage(0):
        losses = model(clips)
    id_loss = "loss_id_dense" if decoder == "dense" else "loss_id_fcos"
    assert set(losses) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr", "loss_mask", id_loss}
    assert all(torch.isfinite(v) for v in losses.values()), losses
    model.zero_grad()
    sum(losses.values()).backward()
    association = model.backbone.association
    id_module = model.dense_id_head.predictor if decoder == "dense" else model.head.id_logits
    for name, param in [
        ("id_bank", association.id_bank.conv.weight),
        ("hab", association.hab.linear_v.weight),
        ("id decoder", id_module.weight),
        ("controller", model.head.controller.weight),
    ]:
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_loss_falls_when_memorising_one_clip(one_torch_thread):
    model = build("dense")
    model.train()
    torch.manual_seed(1)
    clip = make_clip(1, [[0, 1], [0, 1], [1, 2]], height=64, width=96)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    history = []
    with EventStorage(0):
        for _ in range(30):
            losses = model([clip])
            total = sum(losses.values())
            optimizer.zero_grad()
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            history.append((total.item(), losses["loss_id_dense"].item()))
    first, last = np.array(history[0]), np.median(history[-5:], axis=0)
    assert last[0] <= 0.5 * first[0], f"total loss {first[0]:.3f} -> {last[0]:.3f}"
    assert last[1] <= 0.5 * first[1], f"loss_id_dense {first[1]:.3f} -> {last[1]:.3f}"


@pytest.mark.parametrize("decoder", ["dense", "fcos"])
def test_online_inference_returns_tracked_instances(decoder, one_torch_thread):
    model = build(decoder)
    model.eval()
    model.score_thresh = 0.0  # untrained: keep detections ...
    model.birth_score = 0.0  # ... let them start tracks
    model.mask_threshold = 0.0  # ... and keep their (untrained) masks
    state = model.new_video_state()
    torch.manual_seed(2)
    seen = []
    for t in range(3):
        out = model.inference_frame(state, torch.randint(0, 255, (3, 64, 96), dtype=torch.uint8), 128, 192)
        assert isinstance(out, Instances) and out.image_size == (128, 192)
        assert out.pred_masks.shape[1:] == (128, 192) and out.pred_masks.dtype == torch.bool
        assert out.class_probs.shape == (len(out), 4)
        assert len(out) <= model.detections_per_image
        if len(out):
            assert int(out.pred_masks.sum(0).max()) <= 1  # de-overlapped
        assert len(set(out.ID.tolist())) == len(out)
        seen.append(out.ID.tolist())
    assert state.frame_idx == 3 and len(seen[0]) > 0
    # The diagnosis path: the ID decoder on given masks, against the memory before the frame.
    probs = model.identify(state, torch.ones(2, 64, 96, dtype=torch.bool))
    assert probs.shape == (2, model.num_ids + 1) and torch.isfinite(probs).all()


def run_train_net(*args, datasets_root, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", DETECTRON2_DATASETS=str(datasets_root))
    return subprocess.run(
        [sys.executable, os.path.join(PROJECT, "train_net.py"), "--config-file", TINY, *map(str, args)],
        env=env, cwd=os.path.join(PROJECT, "..", ".."), stdin=subprocess.DEVNULL, capture_output=True,
        text=True, timeout=timeout,
    )


def test_train_then_eval_only_writes_a_valid_submission(synthetic_vis_root, e2e_settings, tmp_path):
    opts = [*e2e_settings.input_opts, "SOLVER.MAX_ITER", 2, "SOLVER.WARMUP_ITERS", 1, "SOLVER.STEPS", "(100,)",
            "SOLVER.IMS_PER_BATCH", 1, "INPUT.SAMPLING_FRAME_NUM", 2, "TEST.EVAL_PERIOD", 0]
    train_out = tmp_path / "train"
    proc = run_train_net(*opts, "OUTPUT_DIR", train_out, datasets_root=synthetic_vis_root)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (train_out / "model_final.pth").is_file()
    out = tmp_path / "eval"
    proc = run_train_net("--eval-only", *opts, "MODEL.WEIGHTS", train_out / "model_final.pth", "OUTPUT_DIR", out,
                         datasets_root=synthetic_vis_root)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "copypaste: AP," in proc.stdout + proc.stderr  # scored against the val annotations
    with zipfile.ZipFile(out / "inference" / "submission.zip") as zf:
        assert zf.namelist() == ["results.json"]
        results = json.loads(zf.read("results.json"))
    with open(synthetic_vis_root / "synthetic_vis" / "valid.json") as f:
        gt = json.load(f)
    validate_results(results, gt)  # raises on any malformed entry
    assert {r["video_id"] for r in results} <= {v["id"] for v in gt["videos"]}
