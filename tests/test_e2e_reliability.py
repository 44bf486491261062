"""Reliability end to end: 1- vs 2-process (gloo) evaluation parity, the evaluation log (AP table, no
progress bars), SIGKILL mid-training then --resume, fixed-seed determinism, and an evaluation
package that loads without torch / Detectron2."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tail(text, lines=40):
    return "\n".join(text.splitlines()[-lines:])


def sorted_results(path):
    """results.json entries in a canonical order (ranks gather in shard order)."""
    with open(path) as f:
        results = json.load(f)
    return sorted(results, key=lambda r: (r["video_id"], r["category_id"], -r["score"], json.dumps(r)))


def copypaste_metrics(log):
    """{metric: value} from Detectron2's 'copypaste:' lines of a train_net log."""
    lines = re.findall(r"copypaste: (.*)", log)
    header = lines.index("AP,AP50,AP75,APs,APm,APl,AR1,AR10,AR100")
    return dict(zip(lines[header].split(","), map(float, lines[header + 1].split(","))))


def assert_same_results(a, b):
    """Same predictions: same videos, categories and masks; scores equal to 1e-5."""
    assert len(a) == len(b), (len(a), len(b))
    for x, y in zip(a, b):
        assert (x["video_id"], x["category_id"]) == (y["video_id"], y["category_id"])
        assert abs(x["score"] - y["score"]) < 1e-5
        assert x["segmentations"] == y["segmentations"]


def test_eval_only_two_processes_match_one_process(overfit_model, synthetic_vis_root, run_tool, e2e_settings,
                                                    tmp_path):
    runs = {}
    for gpus in (1, 2):
        out = tmp_path / f"eval{gpus}"
        proc = run_tool(
            "train_net.py", "--num-gpus", gpus, "--dist-url", "auto", "--config-file", e2e_settings.config,
            "--eval-only", *e2e_settings.input_opts, "MODEL.WEIGHTS", overfit_model.weights, "OUTPUT_DIR", out,
            datasets_root=synthetic_vis_root, timeout=420,
        )
        assert proc.returncode == 0, f"--eval-only with {gpus} process(es) failed:\n{tail(proc.stderr)}"
        runs[gpus] = (proc, sorted_results(out / "inference" / "results.json"))
    assert runs[1][1], "the overfit model predicted nothing on synthetic_vis_val"
    assert_same_results(runs[1][1], runs[2][1])
    ap1, ap2 = (copypaste_metrics(p.stdout + p.stderr) for p, _ in runs.values())
    assert ap1 == pytest.approx(ap2, abs=1e-6, nan_ok=True)

    # The project's log lines reach the console and log.txt: the AP table, the per-category table and
    # the written files; no carriage-return progress bars when the output is not a terminal.
    log = runs[1][0].stdout + runs[1][0].stderr
    assert re.search(r"\|\s*AP\s*\|\s*AP50\s*\|", log), tail(log)
    assert "Per-category segm AP" in log and "Wrote " in log and "submission.zip" in log, tail(log)
    assert "\r" not in log
    with open(tmp_path / "eval1" / "log.txt") as f:
        assert "Per-category segm AP" in f.read()


def test_sigkill_mid_training_then_resume(synthetic_vis_root, e2e_settings, tmp_path):
    """Kill -9 after a few checkpoints: --resume continues at the last checkpoint's iteration + 1,
    and temporary files of a save cut short are removed."""
    out = tmp_path / "run"
    tool = [sys.executable, os.path.join(e2e_settings.repo, "tools", "train_net.py"),
            "--config-file", e2e_settings.config]
    opts = [*e2e_settings.input_opts, "SOLVER.IMS_PER_BATCH", "1", "SOLVER.WARMUP_ITERS", "1",
            "SOLVER.STEPS", "(10000,)", "SOLVER.CHECKPOINT_PERIOD", "1", "DATASETS.TEST", "()", "SEED", "0",
            "OUTPUT_DIR", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1", DETECTRON2_DATASETS=str(synthetic_vis_root))
    proc = subprocess.Popen(tool + opts + ["SOLVER.MAX_ITER", "1000"], env=env, cwd=e2e_settings.repo,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not (out / "model_0000002.pth").exists():
            assert proc.poll() is None, "training exited before its third checkpoint"
            assert time.time() < deadline, "no third checkpoint after 300 s"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with open(out / "last_checkpoint") as f:
        last = f.read().strip()
    saved = int(re.fullmatch(r"model_(\d+)\.pth", last).group(1))
    assert saved >= 2
    (out / ".tmp_model_0000999.pthx1y2").write_bytes(b"half a checkpoint")  # a save cut short

    resumed = subprocess.run(tool + ["--resume"] + opts + ["SOLVER.MAX_ITER", str(saved + 3)], env=env,
                             cwd=e2e_settings.repo, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             timeout=300)
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, tail(log)
    assert f"Starting training from iteration {saved + 1}" in log, tail(log)
    import torch

    final = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    assert final["iteration"] == saved + 2
    assert [n for n in os.listdir(out) if n.startswith(".tmp") or ".partial" in n] == []


def _three_iteration_losses(tmp_path, e2e_settings, name):
    import torch
    from detectron2.config import get_cfg
    from detectron2.utils.env import seed_all_rng

    from iai_d2 import add_iai_config
    from iai_d2.engine import IAITrainer

    cfg = get_cfg()
    add_iai_config(cfg)
    cfg.merge_from_file(e2e_settings.config)
    cfg.merge_from_list(e2e_settings.input_opts)
    cfg.merge_from_list([
        "DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", "()", "SOLVER.MAX_ITER", "3",
        "SOLVER.IMS_PER_BATCH", "1", "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "(100,)",
        "SOLVER.CHECKPOINT_PERIOD", "100", "SEED", "7", "OUTPUT_DIR", str(tmp_path),
    ])
    seed_all_rng(cfg.SEED)  # what default_setup does in tools/train_net.py
    torch.manual_seed(cfg.SEED)
    trainer = IAITrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    history = trainer.storage.histories()
    return {k: [v for v, _ in history[k].values()] for k in history if k.startswith("loss_") or k == "total_loss"}


def test_fixed_seed_gives_identical_first_losses(tmp_path, e2e_settings):
    import uuid

    from iai_d2.data import SYNTHETIC_CATEGORIES, generate_synthetic_vis
    from iai_d2.data.datasets.ytvis import register_ytvis_instances, ytvis_category_metadata

    data = tmp_path / "data"
    generate_synthetic_vis(str(data), num_videos=2, num_frames=6, height=e2e_settings.height,
                           width=e2e_settings.width, seed=5, num_val_videos=1)
    name = f"determinism_{uuid.uuid4().hex[:8]}"
    register_ytvis_instances(name, ytvis_category_metadata(SYNTHETIC_CATEGORIES), str(data / "train.json"),
                             str(data / "train" / "JPEGImages"))
    first = _three_iteration_losses(tmp_path / "a", e2e_settings, name)
    second = _three_iteration_losses(tmp_path / "b", e2e_settings, name)
    assert len(first["total_loss"]) == 3
    assert first == second


def test_evaluation_cli_loads_without_torch(tmp_path):
    """``python -m iai_d2.evaluation`` imports neither torch nor Detectron2 and scores a split."""
    gt = {"videos": [{"id": 1, "height": 4, "width": 4, "length": 1, "file_names": ["a.jpg"]}],
          "categories": [{"id": 1, "name": "thing"}],
          "annotations": [{"id": 1, "video_id": 1, "category_id": 1, "iscrowd": 0,
                           "segmentations": [{"size": [4, 4], "counts": [0, 16]}], "areas": [16]}]}
    results = [{"video_id": 1, "category_id": 1, "score": 0.5,
                "segmentations": [{"size": [4, 4], "counts": [0, 16]}]}]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(results))
    code = ("import runpy, sys; sys.argv = ['x', '--gt', sys.argv[1], '--results', sys.argv[2]]\n"
            "try:\n    runpy.run_module('iai_d2.evaluation', run_name='__main__')\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "print('heavy:', sorted(m for m in ('torch', 'detectron2') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "gt.json"), str(tmp_path / "res.json")],
                          cwd=os.path.join(os.path.dirname(__file__), ".."), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == "heavy: []", proc.stdout
    assert json.loads(lines[-2])["AP"] == pytest.approx(100.0)
