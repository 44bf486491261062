"""`python -m iai_d2.evaluation` on the synthetic valid split with GT-derived predictions: AP 100."""

import json
import os
import subprocess
import sys

from iai_d2.data import generate_synthetic_vis

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cli_scores_ground_truth_tracks_of_synthetic_valid_split_as_100(tmp_path):
    _, valid_json = generate_synthetic_vis(
        str(tmp_path / "synthetic_vis"),
        num_videos=2,
        num_frames=6,
        height=96,
        width=128,
        seed=3,
        num_val_videos=4,
    )
    gt = json.load(open(valid_json))
    assert gt["annotations"], "the synthetic valid split must carry annotations"
    results = [
        {
            "video_id": a["video_id"],
            "category_id": a["category_id"],
            "score": 1.0,
            "segmentations": a["segmentations"],
        }
        for a in gt["annotations"]
    ]
    results_file = tmp_path / "results.json"
    results_file.write_text(json.dumps(results))
    proc = subprocess.run(
        [sys.executable, "-m", "iai_d2.evaluation", "--gt", valid_json, "--results", str(results_file)],
        cwd=REPO,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["AP"] == 100.0 and summary["AP50"] == 100.0 and summary["AR100"] == 100.0
