"""Bad inputs, table-driven: every one is an error whose text names the culprit (file, video, frame,
field), or valid-but-odd input that is handled correctly. In-process cases first (datasets, results,
frames, checkpoints, predictor frames), then the command-line tools (one line, no traceback)."""
import copy
import importlib.util
import json
import os
import re
import sys

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

from iai_d2.data.clip_mapper import read_video_frame
from iai_d2.data.datasets.ytvis import load_ytvis_json
from iai_d2.evaluation.__main__ import main as eval_cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")

H, W, LENGTH = 24, 32, 3


def box_rle(y0, x0, y1, x1):
    """Compressed RLE (str counts) of a filled box on an H x W frame."""
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[y0:y1, x0:x1] = 1
    rle = mask_util.encode(np.asfortranarray(mask))
    return {"size": [H, W], "counts": rle["counts"].decode("ascii")}


def split_json():
    """A valid 2-video, 2-track YouTube-VIS json (no image files needed to load it)."""
    return {
        "videos": [{"id": v, "height": H, "width": W, "length": LENGTH,
                    "file_names": [f"v{v}/{t:05d}.jpg" for t in range(LENGTH)]} for v in (1, 2)],
        "categories": [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}],
        "annotations": [
            {"id": 10, "video_id": 1, "category_id": 1, "iscrowd": 0,
             "segmentations": [box_rle(2, 2, 12, 12) for _ in range(LENGTH)], "areas": [100] * LENGTH},
            {"id": 11, "video_id": 2, "category_id": 2, "iscrowd": 0,
             "segmentations": [box_rle(5, 5, 20, 25), None, box_rle(5, 5, 20, 25)],
             "areas": [300, None, 300]},
        ],
    }


def perfect_results():
    """Predictions equal to the GT of split_json()."""
    return [{"video_id": a["video_id"], "category_id": a["category_id"], "score": 0.9,
             "segmentations": copy.deepcopy(a["segmentations"])} for a in split_json()["annotations"]]


def write_json(path, data):
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def set_path(data, path, value):
    """data[k0][k1]... = value for path (k0, k1, ...); returns data."""
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


# ------------------------------------------------------------------------------ dataset jsons
DATASET_CASES = [
    # (id, edit of the json (dict -> dict or raw text), words the error must contain)
    ("truncated", lambda d: json.dumps(d)[:-40], ["train.json", "not valid JSON"]),
    ("not-an-object", lambda d: [d], ["train.json", "json object"]),
    ("videos-dict", lambda d: set_path(d, ["videos"], {"1": d["videos"][0]}), ["train.json", "'videos'", "dict"]),
    ("videos-empty", lambda d: set_path(d, ["videos"], []), ["train.json", "'videos' is empty"]),
    ("categories-str", lambda d: set_path(d, ["categories"], "circle"), ["train.json", "'categories'"]),
    ("annotations-dict", lambda d: set_path(d, ["annotations"], {}), ["train.json", "'annotations'"]),
    ("annotation-not-object", lambda d: set_path(d, ["annotations", 0], 5), ["train.json", "'annotations'"]),
    ("duplicate-annotation-id", lambda d: set_path(d, ["annotations", 1, "id"], 10),
     ["train.json", "duplicate annotation id 10"]),
    ("duplicate-video-id", lambda d: set_path(d, ["videos", 1, "id"], 1), ["train.json", "duplicate video id 1"]),
    ("length-mismatch", lambda d: set_path(d, ["videos", 0, "length"], 5), ["train.json", "video id 1", "length 5"]),
    ("video-without-frames", lambda d: set_path(d, ["videos", 0, "file_names"], []),
     ["train.json", "video id 1", "no frames"]),
    ("segmentations-too-short", lambda d: set_path(d, ["annotations", 0, "segmentations"], [None]),
     ["train.json", "annotation id 10", "'segmentations'"]),
    ("rle-wrong-size", lambda d: set_path(d, ["annotations", 1, "segmentations", 0, "size"], [H, W + 1]),
     ["train.json", "annotation id 11", "frame 0", "RLE size"]),
    ("unknown-category", lambda d: set_path(d, ["annotations", 0, "category_id"], 9),
     ["train.json", "annotation id 10", "unknown category id 9"]),
    ("unknown-video", lambda d: set_path(d, ["annotations", 0, "video_id"], 7),
     ["train.json", "annotation id 10", "unknown video id 7"]),
    ("missing-video-id-field", lambda d: d["annotations"][0].pop("video_id") and d,
     ["train.json", "annotation id 10", "no 'video_id' field"]),
]


@pytest.mark.parametrize("edit,words", [c[1:] for c in DATASET_CASES], ids=[c[0] for c in DATASET_CASES])
def test_bad_dataset_json_names_file_and_field(tmp_path, edit, words):
    path = write_json(tmp_path / "train.json", edit(split_json()))
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        load_ytvis_json(path, str(tmp_path))
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_odd_but_valid_dataset_json_loads(tmp_path):
    data = split_json()
    data["annotations"] = None  # OVIS valid/test
    assert all("annotations" not in r for r in load_ytvis_json(write_json(tmp_path / "a.json", data), "."))
    data = split_json()
    data["annotations"][0]["segmentations"][1] = {"size": [H, W], "counts": [H * W]}  # uncompressed, empty
    records = load_ytvis_json(write_json(tmp_path / "b.json", data), str(tmp_path))
    assert [len(a) for a in records[0]["annotations"]] == [1, 1, 1]
    assert isinstance(records[0]["annotations"][1][0]["segmentation"]["counts"], str)


# ------------------------------------------------------------------------------ results / CLI
RESULT_CASES = [
    # (id, edit of the results list, words the error must contain)
    ("garbage-counts", lambda r: set_path(r, [1, "segmentations", 2, "counts"], "not an RLE!"),
     ["result 1", "video 2", "frame 2", "corrupt RLE counts"]),
    ("counts-overflow", lambda r: set_path(r, [0, "segmentations", 1, "counts"], "0" + "o" * 12),
     ["result 0", "video 1", "frame 1", "corrupt RLE counts"]),
    ("wrong-length", lambda r: set_path(r, [0, "segmentations"], r[0]["segmentations"][:2]),
     ["result 0", "video 1", "2 segmentations", "3 frames"]),
    ("wrong-size", lambda r: set_path(r, [1, "segmentations", 0, "size"], [W, H]),
     ["result 1", "video 2", "frame 0", "RLE size"]),
    ("other-split", lambda r: set_path(r, [0, "video_id"], 99), ["result 0", "video 99", "not in"]),
    ("unknown-category", lambda r: set_path(r, [0, "category_id"], 7), ["result 0", "unknown category_id 7"]),
    ("nan-score", lambda r: set_path(r, [1, "score"], float("nan")), ["result 1", "video 2", "score"]),
    ("not-a-list", lambda r: {"results": r}, ["results must be a list"]),
    ("truncated-file", lambda r: json.dumps(r)[:-25], ["results.json", "not valid JSON"]),
]


@pytest.mark.parametrize("edit,words", [c[1:] for c in RESULT_CASES], ids=[c[0] for c in RESULT_CASES])
def test_bad_results_are_one_line_cli_errors(tmp_path, capsys, edit, words):
    gt = write_json(tmp_path / "gt.json", split_json())
    results = write_json(tmp_path / "results.json", edit(perfect_results()))
    assert eval_cli(["--gt", gt, "--results", results]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err, err
    for word in words:
        assert word in err, err


@pytest.mark.parametrize("field", ["videos", "categories", "annotations"])
def test_wrong_typed_ground_truth_is_a_cli_error(tmp_path, capsys, field):
    gt = write_json(tmp_path / "gt.json", set_path(split_json(), [field], {"oops": 1}))
    assert eval_cli(["--gt", gt, "--results", write_json(tmp_path / "r.json", perfect_results())]) == 2
    err = capsys.readouterr().err
    assert "gt.json" in err and f"'{field}'" in err, err


def short_counts_rle(as_bytes=False):
    """RLE whose run lengths [2, 3] cover 5 of H x W pixels: valid characters and area, yet
    pycocotools' IoU loops forever on it."""
    counts = mask_util.frPyObjects({"size": [H, W], "counts": [2, 3]}, H, W)["counts"]
    return {"size": [H, W], "counts": counts if as_bytes else counts.decode("ascii")}


def test_short_counts_rle_is_a_one_line_cli_error(tmp_path):
    """Run as a subprocess with a timeout: before the check, scoring this file never ended."""
    import subprocess

    gt = write_json(tmp_path / "gt.json", split_json())
    results = write_json(tmp_path / "results.json",
                         set_path(perfect_results(), [1, "segmentations", 2], short_counts_rle()))
    proc = subprocess.run([sys.executable, "-m", "iai_d2.evaluation", "--gt", gt, "--results", results],
                          capture_output=True, text=True, timeout=60,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    err = proc.stderr.strip()
    assert proc.returncode == 2 and err.startswith("error:") and "\n" not in err, err
    for word in ["result 1", "video 2", "frame 2", "corrupt RLE counts", "sum to 5"]:
        assert word in err, err


@pytest.mark.parametrize("as_bytes", [False, True], ids=["bulk-str", "per-track-bytes"])
def test_short_counts_rle_is_rejected_when_loading(as_bytes):
    """Results (fast path for str counts, per-track path for bytes) and GT name entry and frame."""
    from iai_d2.evaluation.ytvis_eval import load_ground_truth, load_results

    gt = load_ground_truth(split_json())
    bad = set_path(perfect_results(), [0, "segmentations", 1], short_counts_rle(as_bytes))
    with pytest.raises(ValueError, match=r"result 0 \(video 1, frame 1\): corrupt RLE counts .*sum to 5"):
        load_results(bad, gt)
    bad_gt = set_path(split_json(), ["annotations", 1, "segmentations", 2], short_counts_rle(as_bytes))
    with pytest.raises(ValueError, match=r"annotation id 11 \(video id 2, frame 2\): corrupt RLE counts"):
        load_ground_truth(bad_gt)
    assert len(load_results(perfect_results(), gt)) == 2  # valid input still loads


def test_odd_but_valid_results_score_correctly(tmp_path, capsys):
    """No prediction at all scores 0; uncompressed RLE, empty masks ({} / null) and an extra key
    are accepted, and perfect predictions score 100."""
    gt = write_json(tmp_path / "gt.json", split_json())
    assert eval_cli(["--gt", gt, "--results", write_json(tmp_path / "empty.json", [])]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["AP"] == 0.0
    results = perfect_results()
    results[1]["segmentations"][1] = {}
    mask = mask_util.decode({"size": [H, W], "counts": results[0]["segmentations"][0]["counts"]})
    results[0]["segmentations"][0] = {"size": [H, W], "counts": _uncompressed(mask)}
    results[0]["note"] = "extra keys are ignored"
    assert eval_cli(["--gt", gt, "--results", write_json(tmp_path / "r.json", results)]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["AP"] == pytest.approx(100.0)


def _uncompressed(mask):
    """Uncompressed RLE counts (column-major run lengths, starting with zeros) of a binary mask."""
    flat = mask.flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    return counts if flat[0] == 0 else [0] + counts


# ------------------------------------------------------------------------------ frames
def test_missing_and_corrupt_frames_name_file_video_and_frame(tmp_path):
    corrupt = tmp_path / "00001.jpg"
    corrupt.write_bytes(b"\xff\xd8 not really a jpeg")
    kwargs = dict(video_id=7, frame_idx=1, height=H, width=W)
    with pytest.raises(FileNotFoundError, match=r"00001\.jpg \(video id 7, frame 1\)"):
        read_video_frame(str(tmp_path / "missing" / "00001.jpg"), "BGR", **kwargs)
    with pytest.raises(ValueError, match=r"00001\.jpg \(video id 7, frame 1\)"):
        read_video_frame(str(corrupt), "BGR", **kwargs)


# ------------------------------------------------------------------------------ model side
@pytest.fixture(scope="module")
def untrained_cfg(e2e_settings):
    """The tiny config at the e2e frame size, without weights."""
    from detectron2.config import get_cfg

    from iai_d2 import add_iai_config

    cfg = get_cfg()
    add_iai_config(cfg)
    cfg.merge_from_file(e2e_settings.config)
    cfg.merge_from_list(e2e_settings.input_opts + ["MODEL.WEIGHTS", ""])
    return cfg


@pytest.fixture(scope="module")
def untrained_predictor(untrained_cfg):
    from iai_d2.predictor import VideoPredictor

    return VideoPredictor(untrained_cfg)


FRAME_CASES = [
    ("float-0-1", np.full((H, W, 3), 0.5, np.float32), "dtype float32"),
    ("float64", np.zeros((H, W, 3), np.float64), "dtype float64"),
    ("uint16", np.zeros((H, W, 3), np.uint16), "dtype uint16"),
    ("empty", np.zeros((0, W, 3), np.uint8), "empty frame"),
    ("gray", np.zeros((H, W), np.uint8), r"(H, W, 3)"),
]


@pytest.mark.parametrize("frame,words", [c[1:] for c in FRAME_CASES], ids=[c[0] for c in FRAME_CASES])
def test_predictor_rejects_frames_it_cannot_use(untrained_predictor, frame, words):
    untrained_predictor.reset()
    with pytest.raises(ValueError) as info:
        untrained_predictor(frame)
    assert words in str(info.value)


def test_predictor_accepts_odd_but_valid_frames(untrained_predictor):
    """A 1-pixel-high frame and a non-contiguous (flipped) view are valid uint8 frames."""
    for frame in (np.zeros((1, W, 3), np.uint8), np.zeros((H, W, 3), np.uint8)[:, ::-1]):
        untrained_predictor.reset()  # one frame size per video
        out = untrained_predictor(frame)
        assert out.image_size == frame.shape[:2]


BAD_CHECKPOINTS = [
    ("text", lambda p, good: p.write_text("not a checkpoint"), "not a readable checkpoint"),
    ("truncated", lambda p, good: p.write_bytes(good[: len(good) // 2]), "not a readable checkpoint"),
    ("empty", lambda p, good: p.write_bytes(b""), "not a readable checkpoint"),
    ("a-list", lambda p, good: torch.save([1, 2, 3], p), "not a model checkpoint"),
]


@pytest.mark.parametrize("write,words", [c[1:] for c in BAD_CHECKPOINTS], ids=[c[0] for c in BAD_CHECKPOINTS])
def test_bad_checkpoints_name_the_file(untrained_cfg, untrained_predictor, tmp_path, write, words):
    from iai_d2.predictor import VideoPredictor

    good = tmp_path / "good.pth"
    torch.save({"model": untrained_predictor.model.state_dict()}, good)
    bad = tmp_path / "bad.pth"
    write(bad, good.read_bytes())
    cfg = untrained_cfg.clone()
    cfg.MODEL.WEIGHTS = str(bad)
    with pytest.raises(ValueError) as info:
        VideoPredictor(cfg)
    assert str(bad) in str(info.value) and words in str(info.value)


# ------------------------------------------------------------------------------ training failures
def _train_cfg(tmp_path, e2e_settings, dataset_name, **overrides):
    from detectron2.config import get_cfg

    from iai_d2 import add_iai_config

    cfg = get_cfg()
    add_iai_config(cfg)
    cfg.merge_from_file(e2e_settings.config)
    cfg.merge_from_list(e2e_settings.input_opts)
    cfg.merge_from_list(["DATASETS.TRAIN", f"('{dataset_name}',)", "DATASETS.TEST", "()",
                         "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "1", "SOLVER.WARMUP_ITERS", "1",
                         "SOLVER.STEPS", "(100,)", "OUTPUT_DIR", str(tmp_path / "out")])
    for key, value in overrides.items():
        cfg.merge_from_list([key, value])
    return cfg


@pytest.fixture
def tiny_train_split(tmp_path, e2e_settings):
    """A 1-video synthetic train split registered under a unique name: (name, data dir)."""
    import uuid

    from iai_d2.data import SYNTHETIC_CATEGORIES, generate_synthetic_vis
    from iai_d2.data.datasets.ytvis import register_ytvis_instances, ytvis_category_metadata

    data = tmp_path / "data"
    generate_synthetic_vis(str(data), num_videos=1, num_frames=4, height=e2e_settings.height,
                           width=e2e_settings.width, seed=3, num_val_videos=1)
    name = f"bad_inputs_{uuid.uuid4().hex[:8]}"
    register_ytvis_instances(name, ytvis_category_metadata(SYNTHETIC_CATEGORIES), str(data / "train.json"),
                             str(data / "train" / "JPEGImages"))
    return name, data


def test_training_failure_before_first_iteration_is_not_masked(tmp_path, e2e_settings, tiny_train_split):
    """Missing frames are counted when the train loader is built; a frame that vanishes later fails
    in the first step: the error raised is the frame's, not the loss-curve hook's ``No history
    metric available for total_loss``."""
    from iai_d2.engine import IAITrainer

    name, data = tiny_train_split
    frames = sorted((data / "train" / "JPEGImages").glob("*/*.jpg"))
    content = frames[1].read_bytes()
    frames[1].unlink()
    with pytest.raises(FileNotFoundError, match=rf"Missing image files: 1 of the {len(frames)} frames .*first: "
                                                r".*00001\.jpg \(video id 1, frame 1\)"):
        IAITrainer(_train_cfg(tmp_path, e2e_settings, name))
    frames[1].write_bytes(content)
    trainer = IAITrainer(_train_cfg(tmp_path, e2e_settings, name))
    trainer.resume_or_load(resume=False)
    for frame in frames:
        frame.unlink()
    with pytest.raises(FileNotFoundError, match=r"Missing image file .*\.jpg \(video id 1, frame \d\)"):
        trainer.train()


def test_diverging_loss_names_iteration_and_loss_terms(tmp_path, e2e_settings, tiny_train_split, monkeypatch):
    from iai_d2.engine import IAITrainer

    trainer = IAITrainer(_train_cfg(tmp_path, e2e_settings, tiny_train_split[0]))
    trainer.resume_or_load(resume=False)
    model = trainer.model
    forward = model.forward
    corrupted = []

    def nan_loss(batched):
        losses = forward(batched)
        corrupted.append(sorted(losses)[-1])
        losses[corrupted[-1]] = losses[corrupted[-1]] * float("nan")
        return losses

    monkeypatch.setattr(model, "forward", nan_loss)
    with pytest.raises(FloatingPointError) as info:
        trainer.train()
    assert re.search(rf"iteration=0\b.*'{corrupted[0]}': (np\.float64\()?nan", str(info.value), re.S), info.value


def test_zero_clips_per_batch_is_a_config_error(tmp_path, e2e_settings, tiny_train_split):
    from iai_d2.engine import IAITrainer

    with pytest.raises(ValueError, match=r"SOLVER\.IMS_PER_BATCH .* got 0"):
        IAITrainer(_train_cfg(tmp_path, e2e_settings, tiny_train_split[0], **{"SOLVER.IMS_PER_BATCH": "0"}))


def test_too_many_instances_for_num_ids_names_the_video(tmp_path, e2e_settings, tiny_train_split):
    from iai_d2.engine import IAITrainer

    cfg = _train_cfg(tmp_path, e2e_settings, tiny_train_split[0], **{"MODEL.IAI.NUM_IDS": "2"})
    with open(tiny_train_split[1] / "train.json") as f:
        assert max(len({a["id"] for a in json.load(f)["annotations"]}), 0) >= 2, "seed 3 has one object now"
    trainer = IAITrainer(cfg)
    trainer.resume_or_load(resume=False)
    with pytest.raises(ValueError, match=r"Video 1 .*MODEL\.IAI\.NUM_IDS"):
        trainer.train()


# ------------------------------------------------------------------------------ command-line tools
def _one_line_error(proc, *words):
    """The tool failed with a last stderr line ``error: ...`` naming every word, without traceback
    from the project's own code path."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "error:" in last, proc.stderr[-3000:]
    for word in words:
        assert str(word) in last, last
    return last


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(os.path.dirname(__file__), "..", "tools",
                                                                      f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("args,words", [
    (["--frames", "0"], "--frames must be >= 1"),
    (["--height", "-4"], "--height must be >= 1"),
    (["--videos", "0"], "--videos must be >= 1"),
    (["--occlusion", "5"], "--occlusion must be in [0, 1]"),
], ids=["frames-0", "negative-height", "no-videos", "occlusion-5"])
def test_make_synthetic_vis_usage_errors(tmp_path, monkeypatch, capsys, args, words):
    tool = _load_tool("make_synthetic_vis")
    monkeypatch.setattr(sys, "argv", ["make_synthetic_vis.py", "--out", str(tmp_path / "out"), *args])
    with pytest.raises(SystemExit) as info:
        tool.main()
    assert info.value.code == 2 and words in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_train_net_usage_and_config_errors(run_tool, e2e_settings, tmp_path):
    proc = run_tool("train_net.py", "--eval-only", timeout=120)
    assert proc.returncode == 2 and "--config-file is required" in proc.stderr, proc.stderr[-2000:]
    proc = run_tool("train_net.py", "--config-file", tmp_path / "nope.yaml", timeout=120)
    assert proc.returncode == 2 and "nope.yaml does not exist" in proc.stderr, proc.stderr[-2000:]
    proc = run_tool("train_net.py", "--config-file", e2e_settings.config, "--eval-only", "MODEL.NO_SUCH_KEY", 1,
                    "OUTPUT_DIR", tmp_path / "out", timeout=120)
    _one_line_error(proc, "MODEL.NO_SUCH_KEY")
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("script, config", [
    ("../projects/CondInst/train_net.py", "projects/CondInst/configs/iai_condinst_tiny.yaml"),
    ("../projects/TrackBaseline/train_net.py", "projects/TrackBaseline/configs/synthetic_tiny.yaml"),
], ids=["CondInst", "TrackBaseline"])
def test_project_train_nets_usage_and_config_errors(run_tool, script, config, tmp_path):
    """The projects' train_net scripts share tools/train_net.py's argument checks and one-line errors."""
    proc = run_tool(script, "--config-file", tmp_path / "nope.yaml", timeout=120)
    assert proc.returncode == 2 and "nope.yaml does not exist" in proc.stderr, proc.stderr[-2000:]
    proc = run_tool(script, "--config-file", config, "--eval-only", "MODEL.NO_SUCH_KEY", 1,
                    "OUTPUT_DIR", tmp_path / "out", timeout=120)
    _one_line_error(proc, "MODEL.NO_SUCH_KEY")
    assert "Traceback" not in proc.stderr


def _split_with_bad_categories(synthetic_vis_root, root):
    """A DETECTRON2_DATASETS root under ``root`` whose synthetic_vis/valid.json (frames linked from
    ``synthetic_vis_root``) has ``categories`` of the wrong type (a dict); returns ``root``."""
    (root / "synthetic_vis").mkdir(parents=True)
    src = synthetic_vis_root / "synthetic_vis"
    os.symlink(src / "valid", root / "synthetic_vis" / "valid")
    with open(src / "valid.json") as f:
        valid = json.load(f)
    valid["categories"] = {"1": "circle"}
    write_json(root / "synthetic_vis" / "valid.json", valid)
    return root


def test_train_net_eval_only_bad_weights_and_bad_json(run_tool, e2e_settings, synthetic_vis_root, tmp_path):
    weights = tmp_path / "weights.pth"
    weights.write_text("not a checkpoint")
    proc = run_tool("train_net.py", "--config-file", e2e_settings.config, "--eval-only",
                    *e2e_settings.input_opts, "MODEL.WEIGHTS", weights, "OUTPUT_DIR", tmp_path / "out",
                    datasets_root=synthetic_vis_root, timeout=180)
    _one_line_error(proc, weights, "not a readable checkpoint")
    assert "Traceback" not in proc.stderr

    # A split whose json has wrong-typed categories fails when the test loader is built, before inference.
    root = _split_with_bad_categories(synthetic_vis_root, tmp_path / "datasets")
    proc = run_tool("train_net.py", "--config-file", e2e_settings.config, "--eval-only",
                    *e2e_settings.input_opts, "MODEL.WEIGHTS", "", "OUTPUT_DIR", tmp_path / "out2",
                    datasets_root=root, timeout=180)
    _one_line_error(proc, "valid.json", "'categories'")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out2" / "inference" / "results.json").exists()


def test_train_net_two_process_failure_is_one_line(run_tool, e2e_settings, synthetic_vis_root, tmp_path):
    """A bad split json read inside one of 2 gloo workers: the same one line as with one process, not
    torch.multiprocessing's worker traceback."""
    root = _split_with_bad_categories(synthetic_vis_root, tmp_path / "datasets")
    proc = run_tool("train_net.py", "--num-gpus", 2, "--dist-url", "auto", "--config-file", e2e_settings.config,
                    "--eval-only", *e2e_settings.input_opts, "MODEL.WEIGHTS", "", "OUTPUT_DIR", tmp_path / "out",
                    datasets_root=root, timeout=300)
    _one_line_error(proc, "valid.json", "'categories'")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "ProcessRaisedException" not in proc.stderr, proc.stderr[-3000:]


def test_train_net_training_failure_is_the_last_line(run_tool, e2e_settings, synthetic_vis_root, tmp_path):
    """Missing training frames: counted when the loader is built; the last line is that error (not a
    KeyError from a hook), no traceback on the console, the full one in log.txt."""
    root = tmp_path / "datasets"
    (root / "synthetic_vis").mkdir(parents=True)
    src = synthetic_vis_root / "synthetic_vis"
    with open(src / "train.json") as f:
        train = json.load(f)
    for video in train["videos"]:
        video["file_names"] = [f.replace(".jpg", "_gone.jpg") for f in video["file_names"]]
    write_json(root / "synthetic_vis" / "train.json", train)
    os.symlink(src / "train", root / "synthetic_vis" / "train")
    proc = run_tool("train_net.py", "--config-file", e2e_settings.config, *e2e_settings.input_opts,
                    "SOLVER.MAX_ITER", 3, "SOLVER.IMS_PER_BATCH", 1, "DATASETS.TEST", "()",
                    "OUTPUT_DIR", tmp_path / "out", datasets_root=root, timeout=180)
    last = _one_line_error(proc, "Missing image files", "_gone.jpg", "video id")
    assert "No history metric" not in proc.stderr, last
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    assert "Traceback" in (tmp_path / "out" / "log.txt").read_text()  # the full one stays in the log


def test_demo_rejects_mixed_frame_sizes_and_bad_output(run_tool, e2e_settings, tmp_path):
    import cv2

    frames = tmp_path / "frames"
    frames.mkdir()
    for i, (h, w) in enumerate([(H, W), (H, W), (H + 8, W)]):
        cv2.imwrite(str(frames / f"{i:05d}.jpg"), np.zeros((h, w, 3), np.uint8))
    proc = run_tool("demo_video.py", "--config-file", e2e_settings.config, "--input", frames,
                    "--output", tmp_path / "out.mp4", "--opts", "MODEL.WEIGHTS", "", *e2e_settings.input_opts,
                    timeout=180)
    _one_line_error(proc, "00002.jpg", f"{W}x{H + 8}")
    assert not (tmp_path / "out.mp4").exists() and not list(tmp_path.glob("*.partial*"))

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    proc = run_tool("demo_video.py", "--config-file", e2e_settings.config, "--input", frames,
                    "--output", blocker / "sub" / "out.mp4", "--opts", "MODEL.WEIGHTS", "",
                    *e2e_settings.input_opts, timeout=180)
    _one_line_error(proc, "cannot create the output folder", blocker)
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("tool, args", [
    ("demo_video.py", ["--input", "unused.mp4", "--output", "unused_out.mp4", "--opts"]),
    ("visualize_clips.py", ["--output", "unused_clips"]),
])
def test_tools_name_a_bad_config_override(run_tool, e2e_settings, tool, args):
    proc = run_tool(tool, "--config-file", e2e_settings.config, *args, "MODEL.NO_SUCH_KEY", 1, timeout=120)
    last = _one_line_error(proc, "bad config override", "MODEL.NO_SUCH_KEY")
    assert "Traceback" not in proc.stderr, last
