"""End-to-end training: the tiny config overfits two synthetic videos, 2-process CPU (gloo) training
through tools/train_net.py, resuming from a checkpoint, the identity-pathway learning rates
(SOLVER.IDENTITY_WARMUP_ITERS, SOLVER.IMAGE_MODEL_MULTIPLIER) and tools/visualize_clips.py."""
import json
import math
import os
import uuid

import cv2
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.engine import HookBase

from iai_d2 import add_iai_config
from iai_d2.data import SYNTHETIC_CATEGORIES, generate_synthetic_vis
from iai_d2.data.datasets.ytvis import register_ytvis_instances, ytvis_category_metadata
from iai_d2.engine import IAITrainer, build_iai_optimizer, identity_parameter_names


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tail(text, lines=40):
    return "\n".join(text.splitlines()[-lines:])


def temp_files(directory):
    """Leftovers of interrupted atomic writes (tempfile names used by the library)."""
    return [n for n in os.listdir(directory) if n.startswith(".tmp") or ".partial" in n]


def read_metrics(output_dir):
    with open(os.path.join(output_dir, "metrics.json")) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_tiny_config_overfits_two_videos(overfit_model, e2e_settings):
    records = read_metrics(overfit_model.output_dir)
    losses = sorted((r["iteration"], r["total_loss"]) for r in records if "total_loss" in r)
    # The trainer fixture writes metrics every iteration: one total_loss per iteration.
    assert [it for it, _ in losses] == list(range(e2e_settings.overfit_iters)), losses[:3]
    assert all(math.isfinite(v) for _, v in losses)
    first = sum(v for _, v in losses[:5]) / 5
    last = sum(v for _, v in losses[-5:]) / 5
    assert last <= 0.5 * first, (
        f"total_loss fell only from {first:.3f} (first 5 iterations) to {last:.3f} (last 5)"
    )

    out = overfit_model.output_dir
    assert os.path.isfile(overfit_model.weights)
    with open(os.path.join(out, "last_checkpoint")) as f:
        assert f.read().strip() == "model_final.pth"
    with open(os.path.join(out, "loss_curve.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert temp_files(out) == []
    # The final evaluation (DATASETS.TEST = the two training videos) is logged to metrics.json.
    final = [r for r in records if "segm/AP" in r]
    assert final, "no segm/AP in metrics.json: the final evaluation did not run"
    ap = final[-1]["segm/AP"]
    assert math.isfinite(ap) and 10.0 <= ap <= 100.0, f"AP on the memorised training videos: {ap}"


def test_train_net_two_processes_on_cpu(synthetic_vis_root, run_tool, e2e_settings, tmp_path):
    out = tmp_path / "ddp"
    proc = run_tool(
        "train_net.py", "--num-gpus", 2, "--dist-url", "auto", "--config-file", e2e_settings.config,
        *e2e_settings.input_opts,
        "SOLVER.IMS_PER_BATCH", 2, "SOLVER.MAX_ITER", 2, "SOLVER.STEPS", "(100,)",
        "SOLVER.WARMUP_ITERS", 1, "SOLVER.CHECKPOINT_PERIOD", 100, "OUTPUT_DIR", out,
        datasets_root=synthetic_vis_root, timeout=420,
    )
    assert proc.returncode == 0, f"train_net.py --num-gpus 2 failed:\n{tail(proc.stderr)}"
    final = out / "model_final.pth"
    assert final.is_file(), f"no model_final.pth in {sorted(os.listdir(out))}"
    checkpoint = torch.load(final, map_location="cpu", weights_only=False)
    assert checkpoint["iteration"] == 1
    assert any(k.startswith("backbone.association.") for k in checkpoint["model"])
    assert not any(k.startswith("module.") for k in checkpoint["model"]), "DDP wrapper leaked into keys"
    with open(out / "log.txt") as f:
        log = f.read()
    assert "World size: 2" in log
    # The final evaluation gathers the predictions of both ranks and scores synthetic_vis_val.
    assert "copypaste: AP," in log
    assert (out / "inference" / "submission.zip").is_file()
    assert temp_files(out) == []

    # The 2-process checkpoint loads completely in one process and evaluates there. (Its predictions
    # are not compared with the 2-process run's: a 2-iteration model's masks and scores sit at
    # thresholds where floating-point noise flips them; test_e2e_reliability compares 1- and
    # 2-process --eval-only of one trained model.)
    single = run_tool(
        "train_net.py", "--config-file", e2e_settings.config, "--eval-only", *e2e_settings.input_opts,
        "MODEL.WEIGHTS", final, "OUTPUT_DIR", tmp_path / "single", datasets_root=synthetic_vis_root, timeout=300,
    )
    assert single.returncode == 0, f"1-process --eval-only of the 2-process checkpoint failed:\n{tail(single.stderr)}"
    log = single.stdout + single.stderr
    assert "not found in the checkpoint" not in log and "not used by the model" not in log, tail(log)
    assert "copypaste: AP," in log
    with open(tmp_path / "single" / "inference" / "results.json") as f:
        assert isinstance(json.load(f), list)


def _tiny_train_cfg(tmp_path, e2e_settings, max_iter, output_dir, extra=()):
    data = tmp_path / "data"
    if not (data / "train.json").is_file():
        generate_synthetic_vis(str(data), num_videos=1, num_frames=4, height=e2e_settings.height,
                               width=e2e_settings.width, seed=3, num_val_videos=1)
    name = f"e2e_resume_{uuid.uuid4().hex[:8]}"
    register_ytvis_instances(name, ytvis_category_metadata(SYNTHETIC_CATEGORIES),
                             str(data / "train.json"), str(data / "train" / "JPEGImages"))
    cfg = get_cfg()
    add_iai_config(cfg)
    cfg.merge_from_file(e2e_settings.config)
    cfg.merge_from_list(e2e_settings.input_opts)
    cfg.merge_from_list([
        "DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", "()", "SOLVER.MAX_ITER", str(max_iter),
        "SOLVER.STEPS", "(100,)", "SOLVER.WARMUP_ITERS", "1", "SOLVER.CHECKPOINT_PERIOD", "2",
        "SOLVER.IMS_PER_BATCH", "1", "OUTPUT_DIR", str(output_dir), *extra,
    ])
    cfg.freeze()
    return cfg


def test_resume_restores_iteration(tmp_path, e2e_settings):
    out = tmp_path / "run"
    trainer = IAITrainer(_tiny_train_cfg(tmp_path, e2e_settings, 4, out))
    trainer.resume_or_load(resume=False)
    assert trainer.start_iter == 0
    trainer.train()
    names = set(os.listdir(out))
    assert {"model_0000001.pth", "model_0000003.pth", "model_final.pth", "last_checkpoint"} <= names, names
    assert temp_files(out) == []
    with open(out / "last_checkpoint") as f:
        assert f.read().strip() == "model_final.pth"
    saved = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)["iteration"]
    assert saved == 3

    resumed = IAITrainer(_tiny_train_cfg(tmp_path, e2e_settings, 6, out))
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == saved + 1
    assert resumed.scheduler.last_epoch == saved + 1  # the LR schedule continues too
    first_weight = next(iter(resumed.model.state_dict().values()))
    assert torch.equal(first_weight, next(iter(trainer.model.state_dict().values())))
    resumed.train()
    final = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    assert final["iteration"] == 5
    assert "model_0000005.pth" in os.listdir(out)
    assert temp_files(out) == []


def test_identity_warmup_trains_only_the_identity_pathway(tmp_path, e2e_settings):
    """SOLVER.IDENTITY_WARMUP_ITERS 2: iterations 0-1 leave every image-model parameter as it was
    and move the identity pathway's; iteration 2 moves the image model too."""
    cfg = _tiny_train_cfg(tmp_path, e2e_settings, 3, tmp_path / "warmup",
                          ["SOLVER.IDENTITY_WARMUP_ITERS", "2", "SOLVER.CHECKPOINT_PERIOD", "100"])
    trainer = IAITrainer(cfg)
    trainer.resume_or_load(resume=False)
    identity = identity_parameter_names(trainer.model)
    assert any(n.startswith("backbone.association.hab.") for n in identity)
    assert any(n.startswith("dense_id_head.") for n in identity)
    assert not any(n.startswith(("backbone.bottom_up.", "roi_heads.box_predictor.")) for n in identity)

    def snapshot():
        return {n: p.detach().clone() for n, p in trainer.model.named_parameters()}

    states = {"start": snapshot()}

    class Snapshot(HookBase):
        def after_step(self):
            states[self.trainer.iter] = snapshot()

    trainer.register_hooks([Snapshot()])
    trainer.train()

    def moved(a, b, names):
        return {n for n in names if not torch.equal(states[a][n], states[b][n])}

    image = set(states["start"]) - identity
    assert moved("start", 1, image) == set()
    assert moved("start", 1, identity), "the identity pathway did not train during the warm-up"
    assert len(moved(1, 2, image)) > len(image) // 2, "the image model did not train after the warm-up"


def test_image_model_multiplier_scales_all_but_the_identity_pathway(tmp_path, e2e_settings):
    cfg = _tiny_train_cfg(tmp_path, e2e_settings, 1, tmp_path / "mult", [
        "SOLVER.IMAGE_MODEL_MULTIPLIER", "0.1", "SOLVER.BACKBONE_MULTIPLIER", "0.5", "SOLVER.BASE_LR", "0.01",
    ])
    model = IAITrainer.build_model(cfg)
    lr_of = {p: group["lr"] for group in build_iai_optimizer(cfg, model).param_groups for p in group["params"]}
    identity = identity_parameter_names(model)
    for name, p in model.named_parameters():
        expected = 0.01 * (0.5 if name.startswith("backbone.bottom_up.") else 1.0) * (1.0 if name in identity else 0.1)
        assert lr_of[p] == pytest.approx(expected), name
    with pytest.raises(ValueError, match="Linear has none"):
        identity_parameter_names(torch.nn.Linear(2, 2))


def test_visualize_clips_writes_pngs(synthetic_vis_root, run_tool, e2e_settings, tmp_path):
    out = tmp_path / "clips"
    proc = run_tool(
        "visualize_clips.py", "--config-file", e2e_settings.config, "--num-clips", 2,
        "--output", out, *e2e_settings.input_opts, datasets_root=synthetic_vis_root, timeout=180,
    )
    assert proc.returncode == 0, tail(proc.stderr)
    for i in range(2):
        image = cv2.imread(str(out / f"clip_{i}.png"))
        assert image is not None, f"clip_{i}.png missing or unreadable in {sorted(os.listdir(out))}"
        # One panel per clip frame, side by side.
        assert image.shape[1] > image.shape[0] > 0
