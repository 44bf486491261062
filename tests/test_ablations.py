"""Ablation configs (configs/synthetic/ablations/) and the TrackBaseline config train a few
iterations and evaluate; benchmarks/occlusion_benchmark.py --quick runs end to end over two seeds
and resumes; the paired t-interval of its report."""
import glob
import json
import os
import subprocess
import sys
import uuid

import pytest
from detectron2.config import get_cfg

from iai_d2 import add_iai_config
from iai_d2.data import SYNTHETIC_CATEGORIES
from iai_d2.data.datasets.ytvis import register_ytvis_instances, ytvis_category_metadata

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
TINY_CONFIG = os.path.join(REPO, "configs", "synthetic", "iai_tiny.yaml")
ABLATIONS = sorted(glob.glob(os.path.join(REPO, "configs", "synthetic", "ablations", "*.yaml")))
TRACK_CONFIG = os.path.join(REPO, "projects", "TrackBaseline", "configs", "synthetic_tiny.yaml")
BENCHMARK = os.path.join(REPO, "benchmarks", "occlusion_benchmark.py")
sys.path.insert(0, os.path.join(REPO, "projects", "TrackBaseline"))
from track_baseline import add_trackbaseline_config  # noqa: E402


def load(config_file):
    cfg = get_cfg()
    (add_trackbaseline_config if config_file == TRACK_CONFIG else add_iai_config)(cfg)
    cfg.merge_from_file(config_file)
    return cfg


def flatten(node, prefix=""):
    """{dotted key: value} of a CfgNode."""
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_there_are_six_ablations_each_changing_only_iai_keys():
    assert len(ABLATIONS) == 6, ABLATIONS
    base = flatten(load(TINY_CONFIG))
    for path in ABLATIONS:
        changed = {k for k, v in flatten(load(path)).items() if base[k] != v} - {"OUTPUT_DIR"}
        assert changed and all(k.startswith("MODEL.IAI.") for k in changed), (path, changed)


@pytest.fixture(scope="module")
def tiny_splits(synthetic_vis_root):
    """The session synthetic set (2 train, 4 val videos at 96x128) under names of this module."""
    suffix = uuid.uuid4().hex[:8]
    names = {}
    for split, official in (("train", "train"), ("val", "valid")):
        names[split] = f"ablation_{split}_{suffix}"
        data = synthetic_vis_root / "synthetic_vis"
        register_ytvis_instances(names[split], ytvis_category_metadata(SYNTHETIC_CATEGORIES),
                                 str(data / f"{official}.json"), str(data / official / "JPEGImages"))
    return names


@pytest.mark.parametrize("config_file", ABLATIONS + [TRACK_CONFIG], ids=os.path.basename)
def test_config_trains_and_evaluates(config_file, tiny_splits, e2e_settings, tmp_path, one_torch_thread):
    from iai_d2.engine import IAITrainer

    cfg = load(config_file)
    cfg.merge_from_list(e2e_settings.input_opts + [
        "DATASETS.TRAIN", (tiny_splits["train"],), "DATASETS.TEST", (tiny_splits["val"],),
        "SOLVER.MAX_ITER", 2, "SOLVER.STEPS", (1,), "SOLVER.WARMUP_ITERS", 1, "SEED", 0,
        "OUTPUT_DIR", str(tmp_path),
    ])
    cfg.freeze()
    trainer = IAITrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()  # the end-of-training evaluation runs on the val split
    segm = trainer.storage.latest()
    assert (tmp_path / "model_final.pth").is_file()
    assert (tmp_path / "inference" / "submission.zip").is_file()
    results = json.loads((tmp_path / "inference" / "results.json").read_text())
    assert all(len(r["segmentations"]) == 6 for r in results)
    assert 0.0 <= segm["segm/AP"][0] <= 100.0


def run_benchmark(out, *extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, BENCHMARK, "--quick", "--variants", "iai,floor,iai_mask_iou", "--workers", "2", "--threads", "1",
         "--output", str(out / "work"), "--results", str(out / "results"), *extra],
        env=env, cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600,
    )


def test_occlusion_benchmark_quick_writes_the_seeded_table_and_resumes(tmp_path):
    proc = run_benchmark(tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    results = tmp_path / "results"
    table = (results / "occlusion.md").read_text()
    for label in ("IAI (demo config", "association w/o ID head", "floor: image model + IoU linking",
                  "Commit ", "configs/synthetic/iai_tiny.yaml", "95% t-interval", "look-alike"):
        assert label in table
    report = json.loads((results / "occlusion.json").read_text())
    assert report["settings"]["occlusion"] == 1.0 and report["settings"]["iters"] == 2
    assert report["settings"]["seeds"] == 2
    assert list(report["table"]) == ["iai", "iai_iou_link", "floor", "iai_mask_iou"]
    for key, row in report["table"].items():
        assert list(row["values"]) == ["0", "1"]  # both seeds, paired
        for values in row["values"].values():
            assert all(0.0 <= values[m] <= 100.0 for m in ("AP", "HOTA", "AssA", "IDF1", "link_AP", "oracle_AP"))
            assert values["id_switches"] >= 0
    for key, diffs in report["paired"].items():
        assert key in ("iai_iou_link", "floor", "iai_mask_iou")
        for d in diffs.values():
            assert d["n"] == 2 and (d["lo"] <= d["mean"] <= d["hi"] or d["sd"] != d["sd"])  # nan sd: no CI
    assert (results / "occlusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The floor's own identities are its IoU-linked ones; each seed starts from its own image model.
    work = tmp_path / "work"
    for seed in (0, 1):
        floor = json.loads((work / f"seed{seed}" / "floor" / "result.json").read_text())
        assert floor["seed"] == seed
        rows = floor["diagnosis"]["rows"]
        assert json.dumps(rows["model"]) == json.dumps(rows["iou_link"])
        log = (work / f"seed{seed}" / "iai" / "log.txt").read_text()
        assert f"Loading from {work / f'seed{seed}' / 'image' / 'model_final.pth'}" in log
        # An inference option evaluates the seed's IAI model with its overrides, training nothing.
        option = json.loads((work / f"seed{seed}" / "iai_mask_iou" / "result.json").read_text())
        assert option["inference_options"] == ["MODEL.IAI.INFERENCE.MASK_IOU_WEIGHT", 0.5]
        assert "train_sec" not in option and not (work / f"seed{seed}" / "iai_mask_iou" / "model_final.pth").exists()

    # A second run reuses every finished run: nothing is retrained, the table is the same.
    final = work / "seed1" / "iai" / "model_final.pth"
    stamp = final.stat().st_mtime_ns
    proc = run_benchmark(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert final.stat().st_mtime_ns == stamp
    # (as JSON text: a re-ID rate without returns is NaN in both)
    assert json.dumps(json.loads((results / "occlusion.json").read_text())["summary"]) == json.dumps(report["summary"])

    # --report-only writes the table from the finished runs and names the missing ones.
    proc = run_benchmark(tmp_path, "--report-only", "--seeds", "3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Partial table**: 3 chosen runs are not finished (seed2/iai, seed2/floor, seed2/iai_mask_iou)" in (
        results / "occlusion.md").read_text()
    assert not (work / "seed2").exists()
    # --seed-list tables (and would train) exactly the seeds it names.
    proc = run_benchmark(tmp_path, "--report-only", "--seed-list", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((results / "occlusion.json").read_text())
    assert report["missing"] == [] and report["settings"]["seeds"] == 1
    assert all(list(row["values"]) == ["1"] for row in report["table"].values())

    # Other data settings in the same output folder are refused in one line.
    proc = run_benchmark(tmp_path, "--frames", "7")
    assert proc.returncode != 0 and proc.stderr.strip().startswith("error:") and "--output" in proc.stderr

    # benchmarks/identity_start.py: seed 0's image model and IAI at step 0 on it, from the same folder.
    start = [sys.executable, os.path.join(REPO, "benchmarks", "identity_start.py"), "--output", str(work)]
    proc = subprocess.run(start + ["--seed-list", "0"], cwd=REPO, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "| 0 | image |" in proc.stdout and "| 0 | iai_step0 |" in proc.stdout, proc.stdout
    step0 = json.loads((work / "seed0" / "identity_start" / "iai_step0" / "result.json").read_text())
    assert 0.0 <= step0["rows"]["oracle"]["AP"] <= 100.0
    proc = subprocess.run(start + ["--seed-list", "5"], cwd=REPO, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1 and proc.stderr.strip().startswith("error:") and "seed 5" in proc.stderr


def test_an_inference_option_needs_its_base_variant():
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from occlusion_benchmark import parse_args

    assert parse_args(["--variants", "iai,iai_keep_ids"]).variants == ["iai", "iai_keep_ids"]
    with pytest.raises(SystemExit):
        parse_args(["--variants", "track,iai_keep_ids"])


def test_seed_list_chooses_the_seeds():
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from occlusion_benchmark import parse_args

    assert parse_args([]).seed_list == [0, 1, 2]
    assert parse_args(["--seeds", "5"]).seed_list == [0, 1, 2, 3, 4]
    args = parse_args(["--seed-list", "4, 3,4"])
    assert args.seed_list == [3, 4] and args.settings["seeds"] == 2
    for bad in (["--seed-list", "1,x"], ["--seed-list", "-1"], ["--seed-list", ","],
                ["--seeds", "2", "--seed-list", "3"]):
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_every_benchmark_variant_names_a_config_that_loads():
    """A mistyped config of a variant would only fail after its image stage had trained."""
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from occlusion_benchmark import VARIANTS

    for name, (kind, config_file, _, detector) in VARIANTS.items():
        assert os.path.isfile(os.path.join(REPO, config_file)), name
        if detector == "maskrcnn" and kind == "iai":
            assert load(os.path.join(REPO, config_file)).MODEL.META_ARCHITECTURE == "IAIRCNN", name


def test_every_inference_option_overrides_keys_of_its_base_config(tmp_path):
    """A mistyped override would only fail after its base variant had trained."""
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from occlusion_benchmark import INFERENCE_OPTIONS, VARIANTS, build_cfg

    for name, (base, overrides) in INFERENCE_OPTIONS.items():
        kind, config_file, _, detector = VARIANTS[name]
        assert (kind, config_file, detector) == (VARIANTS[base][0], VARIANTS[base][1], VARIANTS[base][3]), name
        cfg = build_cfg(kind, config_file, str(tmp_path), "", 2, 0, "cpu", True, detector, overrides)
        for key, value in zip(overrides[::2], overrides[1::2]):
            node = cfg
            for part in key.split("."):
                node = node[part]
            assert node == value, (name, key)


def test_paired_difference_t_interval():
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from occlusion_report import paired_difference

    d = paired_difference({0: 30.0, 1: 32.0, 2: 34.0}, {0: 33.0, 1: 34.0, 2: 38.0, 3: 99.0})  # seed 3 unpaired
    # differences 3, 2, 4: mean 3, sd 1, half width t(0.975, 2) / sqrt(3) = 4.303 / 1.732
    assert d["n"] == 3 and d["mean"] == pytest.approx(3.0) and d["sd"] == pytest.approx(1.0)
    assert d["hi"] - d["mean"] == pytest.approx(4.3027 / 3 ** 0.5, rel=1e-3)
    single = paired_difference({0: 1.0}, {0: 2.0})
    assert single["mean"] == 1.0 and single["lo"] != single["lo"]  # one seed: no interval (nan)


def test_config_fingerprint_ignores_comments_only():
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from occlusion_report import config_fingerprint

    text = 'MODEL:\n  IAI:\n    NUM_IDS: 10\n  WEIGHTS: ""\n'
    commented = '# a note\nMODEL:\n  IAI:  # the method\n\n    NUM_IDS: 10  # slots + 1\n  WEIGHTS: ""\n'
    assert config_fingerprint(commented) == config_fingerprint(text)
    assert config_fingerprint(text.replace("10", "12")) != config_fingerprint(text)
    assert config_fingerprint(text.replace("  WEIGHTS", "WEIGHTS")) != config_fingerprint(text)


def run_one_seed(out, variants):
    """The --quick benchmark with one seed and one worker on ``variants``."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, BENCHMARK, "--quick", "--seeds", "1", "--variants", variants, "--threads", "1",
         "--output", str(out / "work"), "--results", str(out / "results")],
        env=env, cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600,
    )


def check_detector_runs(out, report, stage, archs):
    """Values in range; only the detector's own image stage was trained; each variant (name ->
    meta-architecture) built its model and loaded that stage's weights."""
    for row in report["table"].values():
        for values in row["values"].values():
            assert all(0.0 <= values[m] <= 100.0 for m in ("AP", "AssA", "link_AP", "oracle_AP"))
    work = out / "work" / "seed0"
    assert (work / stage / "model_final.pth").is_file() and not (work / "image").exists()
    for name, arch in archs.items():
        log = (work / name / "log.txt").read_text()
        assert f"Model:\n{arch}(" in log  # the model Detectron2's trainer prints
        assert f"Loading from {work / stage / 'model_final.pth'}" in log


def test_occlusion_benchmark_quick_runs_the_condinst_rows(tmp_path):
    """IAI + CondInst and CondInst Track start from the CondInst image stage (image_condinst/);
    the Mask R-CNN stage (image/) is not trained when no Mask R-CNN variant is asked for."""
    proc = run_one_seed(tmp_path, "iai_condinst,condinst_track")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "results" / "occlusion.json").read_text())
    assert [row["label"] for row in report["table"].values()] == ["IAI + CondInst (res3, dense ID)",
                                                                  "CondInst Track (MaskTrack-style)"]
    check_detector_runs(tmp_path, report, "image_condinst",
                        {"iai_condinst": "IAICondInst", "condinst_track": "TrackCondInst"})


def test_occlusion_benchmark_quick_runs_the_mask2former_rows(tmp_path):
    """IAI + Mask2Former and query matching start from the Mask2Former image stage
    (image_mask2former/); the query-matching run gives two rows: its own (query-matched) IDs and
    its detections IoU-linked (Mask2Former + IoU linking)."""
    proc = run_one_seed(tmp_path, "iai_m2f,m2f_query_match")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "results" / "occlusion.json").read_text())
    assert list(report["table"]) == ["iai_m2f", "m2f_query_match", "m2f_iou_link"]
    assert report["table"]["m2f_iou_link"]["label"].startswith("Mask2Former + IoU linking")
    run = report["runs"]["seed0/m2f_query_match"]["diagnosis"]["rows"]
    link = report["table"]["m2f_iou_link"]["values"]["0"]
    own = report["table"]["m2f_query_match"]["values"]["0"]
    assert (link["AP"], own["AP"]) == (run["iou_link"]["AP"], run["model"]["AP"])  # the two labellings
    check_detector_runs(tmp_path, report, "image_mask2former",
                        {"iai_m2f": "IAIMask2Former", "m2f_query_match": "QueryMatchMask2Former"})
