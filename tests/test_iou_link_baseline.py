"""The floor (projects/IoULinkBaseline): a tiny Mask R-CNN trained a few iterations on frames as
images, evaluated online on videos with mask-IoU-linked identities, end to end."""
import json
import os
import zipfile

RUN = os.path.join("..", "projects", "IoULinkBaseline", "run.py")  # run_tool paths are under tools/
CONFIG = os.path.join("projects", "IoULinkBaseline", "configs", "iou_link_tiny.yaml")


def test_floor_trains_on_frames_and_evaluates_on_videos(synthetic_vis_root, run_tool, e2e_settings, tmp_path):
    out = tmp_path / "floor"
    proc = run_tool(
        RUN, "train_net.py", "--config-file", CONFIG, *e2e_settings.input_opts,
        "SOLVER.MAX_ITER", 4, "SOLVER.IMS_PER_BATCH", 2, "SOLVER.WARMUP_ITERS", 1, "SOLVER.STEPS", "(3,)",
        "OUTPUT_DIR", out, datasets_root=synthetic_vis_root,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "model_final.pth").is_file()
    # The end-of-training evaluation ran on the synthetic_vis_val videos (YTVIS format).
    results = json.loads((out / "inference" / "results.json").read_text())
    assert isinstance(results, list)
    for r in results:
        assert len(r["segmentations"]) == 6 and 0.0 <= r["score"] <= 1.0
    with zipfile.ZipFile(out / "inference" / "submission.zip") as zf:
        assert zf.namelist() == ["results.json"]

    diag = tmp_path / "diagnosis"
    proc = run_tool(
        RUN, "analyze_tracking.py", "--config-file", CONFIG, "--output", diag, *e2e_settings.input_opts,
        "MODEL.WEIGHTS", out / "model_final.pth", datasets_root=synthetic_vis_root,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((diag / "diagnosis.json").read_text())["rows"]
    # The floor's own identities ARE greedy IoU linking: both rows are the same labelling
    # (compared as JSON text: an undefined fragmentation is NaN in both).
    assert json.dumps(rows["model"]) == json.dumps(rows["iou_link"])


def test_run_py_names_the_tools_directory_for_an_unknown_tool(run_tool):
    proc = run_tool(RUN, "no_such_tool.py", timeout=60)
    assert proc.returncode != 0 and "TOOL.py is a script of" in proc.stderr
