"""benchmarks/eval_speed.py on a tiny split: the offline CLI scores what the in-process evaluator
scores, the evaluation package loads without torch, and a bad --official folder is named."""
import os
import re
import subprocess
import sys

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BENCHMARK = os.path.join(REPO, "benchmarks", "eval_speed.py")
TINY = ["--videos", "3", "--frames", "4", "--preds", "4", "--height", "24", "--width", "32", "--repeat", "1"]


def run(*args):
    return subprocess.run([sys.executable, BENCHMARK, *TINY, *args], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


def test_eval_speed_table_cli_matches_in_process():
    out = run()
    assert out.returncode == 0, out.stderr
    ap = re.search(r"\| AP / AP50 +\| ([\d.]+) / [\d.]+ \(CLI AP ([\d.]+)\)", out.stdout)
    assert ap is not None, out.stdout
    assert ap.group(1) == ap.group(2)
    import_row = re.search(r"\| import iai_d2.evaluation \(s\) +\| ([^|]*)\|", out.stdout).group(1)
    assert "torch" not in import_row and "detectron2" not in import_row
    floor = re.search(r"\| floor: import \+ JSON parse \+ pycocotools IoU \(s\) +\| ([\d.]+) +\|", out.stdout)
    assert floor is not None and float(floor.group(1)) >= 0, out.stdout


def test_eval_speed_official_folder_without_the_reference_api(tmp_path):
    (tmp_path / "ytvis.py").write_text("")
    out = run("--official", str(tmp_path))
    assert out.returncode != 0
    assert out.stderr.strip().splitlines()[-1] == f"--official {tmp_path}: no ytviseval.py there (the reference YouTube-VIS API)"
