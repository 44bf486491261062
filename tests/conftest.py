import os

import pytest

os.environ.setdefault("DETECTRON2_DATASETS", os.path.join(os.path.dirname(__file__), "..", "datasets"))


@pytest.fixture(autouse=True)
def _limit_threads():
    """Two cores in CI: keep torch from oversubscribing when tests run model code."""
    import torch

    torch.set_num_threads(2)
    yield


@pytest.fixture
def one_torch_thread():
    """One torch thread: training is deterministic and does not thrash when subprocesses share
    the two cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# End-to-end fixtures (tests/test_e2e_*.py): scripts run as subprocesses, a synthetic dataset
# root for the built-in synthetic_vis_{train,val} names, and one tiny model overfitted on two
# synthetic videos, trained once per session and reused by the inference tests.
# ---------------------------------------------------------------------------------------------
REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
TINY_CONFIG = os.path.join(REPO_ROOT, "configs", "synthetic", "iai_tiny.yaml")
# Frame size of every e2e video, and the config overrides that keep the tiny model at that scale.
E2E_HEIGHT, E2E_WIDTH = 96, 128
E2E_INPUT_OPTS = [
    "MODEL.DEVICE", "cpu",
    "INPUT.MIN_SIZE_TRAIN", f"({E2E_HEIGHT},)", "INPUT.MAX_SIZE_TRAIN", str(E2E_WIDTH),
    "INPUT.MIN_SIZE_TEST", str(E2E_HEIGHT), "INPUT.MAX_SIZE_TEST", str(E2E_WIDTH),
    "DATALOADER.NUM_WORKERS", "0", "TEST.PROGRESS_BAR", "False",
]
# Training data of the overfit model: with seed 30, train video 1 holds one object and train
# video 2 three tracks (one only briefly visible).
OVERFIT_SEED, OVERFIT_FRAMES, OVERFIT_ITERS = 30, 8, 120


@pytest.fixture(scope="session")
def e2e_settings():
    """Constants shared by the e2e tests: repo, config, input_opts (list), height, width,
    overfit_frames, overfit_iters."""
    from types import SimpleNamespace

    return SimpleNamespace(
        repo=REPO_ROOT, config=TINY_CONFIG, input_opts=list(E2E_INPUT_OPTS), height=E2E_HEIGHT,
        width=E2E_WIDTH, overfit_frames=OVERFIT_FRAMES, overfit_iters=OVERFIT_ITERS,
    )


@pytest.fixture(scope="session")
def run_tool():
    """
    ``run_tool(script, *args, datasets_root=None, timeout=300)``: run ``tools/<script>`` with this
    interpreter from the repository root (stdin closed, one torch thread per process, optional
    ``DETECTRON2_DATASETS``) and return the CompletedProcess (text stdout / stderr).
    """
    import subprocess
    import sys

    def run(script, *args, datasets_root=None, timeout=300):
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        if datasets_root is not None:
            env["DETECTRON2_DATASETS"] = str(datasets_root)
        return subprocess.run(
            [sys.executable, os.path.join(REPO_ROOT, "tools", script), *map(str, args)],
            env=env, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=timeout,
        )

    return run


def _tail(text, lines=40):
    """The last ``lines`` lines of a subprocess output, for assertion messages."""
    return "\n".join(text.splitlines()[-lines:])


@pytest.fixture(scope="session")
def synthetic_vis_root(tmp_path_factory, run_tool):
    """A ``$DETECTRON2_DATASETS`` root holding a small synthetic_vis (2 train, 4 annotated val
    videos of 6 frames at 96x128), written by tools/make_synthetic_vis.py."""
    root = tmp_path_factory.mktemp("d2_datasets")
    out = root / "synthetic_vis"
    proc = run_tool(
        "make_synthetic_vis.py", "--out", out, "--videos", 2, "--val-videos", 4, "--frames", 6,
        "--height", E2E_HEIGHT, "--width", E2E_WIDTH, "--seed", 1, timeout=120,
    )
    assert proc.returncode == 0, _tail(proc.stderr)
    for name in ("train.json", "valid.json"):
        assert (out / name).is_file(), f"make_synthetic_vis.py wrote no {name}"
    return root


@pytest.fixture(scope="session")
def overfit_model(tmp_path_factory):
    """
    The tiny config (iai_tiny.yaml) trained with IAITrainer for OVERFIT_ITERS iterations on a
    2-video synthetic set registered under a unique name. Metrics are written every iteration.

    Returns a SimpleNamespace: cfg (frozen, MODEL.WEIGHTS = model_final.pth), weights,
    output_dir, dataset_name, train_json, image_root.
    """
    import uuid
    from types import SimpleNamespace

    import torch
    from detectron2.config import get_cfg
    from detectron2.engine import default_writers, hooks
    from detectron2.utils.env import seed_all_rng

    from iai_d2 import add_iai_config
    from iai_d2.data import SYNTHETIC_CATEGORIES, generate_synthetic_vis
    from iai_d2.data.datasets.ytvis import register_ytvis_instances, ytvis_category_metadata
    from iai_d2.engine import IAITrainer

    class EveryIterationTrainer(IAITrainer):
        """IAITrainer whose metric writers (metrics.json, log, TensorBoard) run every iteration."""

        def build_writers(self):
            return []  # the default writer hook (period 20) gets none ...

        def build_hooks(self):  # ... and the default writers run every iteration instead
            writers = default_writers(self.cfg.OUTPUT_DIR, self.max_iter)
            return super().build_hooks() + [hooks.PeriodicWriter(writers, period=1)]

    root = tmp_path_factory.mktemp("overfit")
    data_dir = root / "data"
    train_json, _ = generate_synthetic_vis(
        str(data_dir), num_videos=2, num_frames=OVERFIT_FRAMES, height=E2E_HEIGHT, width=E2E_WIDTH,
        seed=OVERFIT_SEED, num_val_videos=1,
    )
    image_root = str(data_dir / "train" / "JPEGImages")
    name = f"e2e_overfit_{uuid.uuid4().hex[:8]}"
    register_ytvis_instances(name, ytvis_category_metadata(SYNTHETIC_CATEGORIES), train_json, image_root)

    cfg = get_cfg()
    add_iai_config(cfg)
    cfg.merge_from_file(TINY_CONFIG)
    cfg.merge_from_list(E2E_INPUT_OPTS)
    cfg.merge_from_list([
        "DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", f"('{name}',)",
        "SOLVER.MAX_ITER", str(OVERFIT_ITERS), "SOLVER.STEPS", f"({OVERFIT_ITERS * 4 // 5},)",
        "SOLVER.WARMUP_ITERS", "10",
        "SOLVER.CHECKPOINT_PERIOD", "100000", "SEED", "0", "OUTPUT_DIR", str(root / "train"),
    ])
    cfg.freeze()

    # One thread: the run is deterministic, and it stays fast when other processes share the
    # two cores (two-thread torch processes competing for two cores slow down ~10x).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seed_all_rng(cfg.SEED)
        torch.manual_seed(cfg.SEED)
        trainer = EveryIterationTrainer(cfg)
        trainer.resume_or_load(resume=False)
        trainer.train()
    finally:
        torch.set_num_threads(threads)

    weights = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    test_cfg = cfg.clone()
    test_cfg.defrost()
    test_cfg.MODEL.WEIGHTS = weights
    test_cfg.freeze()
    return SimpleNamespace(
        cfg=test_cfg, weights=weights, output_dir=cfg.OUTPUT_DIR, dataset_name=name,
        train_json=train_json, image_root=image_root,
    )
