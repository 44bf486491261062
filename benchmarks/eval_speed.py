"""Speed of the YouTube-VIS evaluation on a synthetic split of validation-set size.

    python benchmarks/eval_speed.py [--videos 302] [--frames 36] [--preds 100] [--height 360] [--width 640]
                                    [--repeat 3] [--official DIR]

GT: 1-6 moving, growing ellipses per video (40 categories). Predictions: ``--preds`` tracks per video,
70% noisy copies of GT tracks (jittered, rescaled, some frames dropped, sometimes a wrong class),
30% random ellipses. Every video has ``--frames`` frames (the worst case). RLEs are built directly
from the ellipse geometry (column runs), so generating a large split stays cheap. Prints the sizes and
the time split: importing the evaluation package (fresh interpreter; it must not load torch or
Detectron2), parsing the jsons, building + validating the tracks (all RLE strings decoded for their
areas and run-length totals), scoring, and the offline CLI (``python -m iai_d2.evaluation``, one
thread) end to end, the median of ``--repeat`` runs, with its ratio to the 0.6 s asked for in issue 10.
It also prints a floor: the time any evaluator that reuses the same JSON parser (orjson when it is
installed, as the evaluator does, else Python's json) and pycocotools' RLE IoU spends at least
(importing, parsing both files, and pycocotools' ``iou`` calls of the scoring step, which parse every
compared RLE string once).

``--official DIR``: also time the reference evaluator on the same files, end to end in a fresh
interpreter (one run): DIR holds ``ytvis.py`` and ``ytviseval.py`` with the classes ``YTVIS`` and
``YTVISeval`` (the YouTube-VIS fork of the COCO API as shipped in mmtrack 0.14,
mmtrack/core/evaluation/; copy the two files into DIR). Issue 10 sizes its target against it: ~3 s for the reference, 0.6 s for
ours, i.e. a ratio of 0.2 measured on one set in one run.
"""
import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from pycocotools import mask as mask_util
from tabulate import tabulate

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, REPO)
from iai_d2.evaluation.ytvis_eval import evaluate, load_ground_truth, load_results, orjson, read_json  # noqa: E402

NUM_CATEGORIES = 40
TARGET_CLI_S = 0.6  # issue 10, item 5: the offline CLI on a validation-sized split, one core
REFERENCE_S = 3.0  # issue 10: the reference ytvoseval on that split ("~3 s")
# The reference evaluator, end to end, in a fresh interpreter (np.float: removed in NumPy 1.24).
OFFICIAL_CODE = """import sys, time
t = time.perf_counter()
import numpy as np
np.float = float
sys.path.insert(0, sys.argv[1])
from ytvis import YTVIS
from ytviseval import YTVISeval
gt = YTVIS(sys.argv[2])
e = YTVISeval(gt, gt.loadRes(sys.argv[3]), "segm")
e.evaluate(); e.accumulate(); e.summarize()
print("RESULT", time.perf_counter() - t, 100 * e.stats[0])
"""


def ellipse_rles(cx, cy, rx, ry, height, width):
    """Compressed RLEs (str counts) of axis-aligned ellipses, one per frame; params: (F,) arrays."""
    x0 = np.clip(np.ceil(cx - rx), 0, width).astype(np.int64)
    x1 = np.clip(np.floor(cx + rx) + 1, 0, width).astype(np.int64)
    ncols = np.maximum(x1 - x0, 0)
    frame = np.repeat(np.arange(cx.size), ncols)
    xs = x0[frame] + np.arange(frame.size) - np.repeat(np.cumsum(ncols) - ncols, ncols)
    half = ry[frame] * np.sqrt(np.clip(1.0 - ((xs - cx[frame]) / rx[frame]) ** 2, 0.0, None)) + 1e-9
    top = np.clip(np.ceil(cy[frame] - half), 0, height).astype(np.int64)
    bot = np.clip(np.floor(cy[frame] + half) + 1, 0, height).astype(np.int64)
    keep = bot > top
    frame, starts, ends = frame[keep], xs[keep] * height + top[keep], xs[keep] * height + bot[keep]
    bounds = np.searchsorted(frame, np.arange(cx.size + 1))
    runs = []
    for f in range(cx.size):
        s, e = starts[bounds[f]: bounds[f + 1]], ends[bounds[f]: bounds[f + 1]]
        if s.size == 0:
            runs.append(None)
            continue
        points = np.stack([s, e], axis=1).ravel()
        joined = np.flatnonzero(points[1:-1:2] == points[2::2])  # end of a run == start of next
        points = np.delete(points, np.concatenate([2 * joined + 1, 2 * joined + 2]))
        counts = np.diff(np.concatenate([[0], points, [height * width]]))
        runs.append({"size": [height, width], "counts": counts.tolist()})
    present = [r for r in runs if r is not None]
    encoded = iter(mask_util.frPyObjects(present, height, width) if present else [])
    out = []
    for r in runs:
        if r is not None:
            rle = next(encoded)
            r = {"size": [height, width], "counts": rle["counts"].decode("ascii")}
        out.append(r)
    return out


def random_track(rng, frames, height, width):
    """Per-frame ellipse parameters (cx, cy, rx, ry), each (F,), of a moving, growing object."""
    t = np.arange(frames)
    ry = rng.uniform(8, 0.42 * height) * np.clip(1 + rng.uniform(-0.01, 0.01) * t, 0.5, 1.5)
    rx = ry * rng.uniform(0.6, 1.6)
    cx = np.clip(rng.uniform(0, width) + rng.uniform(-6, 6) * t, 0, width)
    cy = np.clip(rng.uniform(0, height) + rng.uniform(-3, 3) * t, 0, height)
    return cx, cy, rx, ry


def noisy_copy(rng, params, frames):
    """Jittered, rescaled copy of a GT track's parameters; returns params and a drop mask (F,)."""
    cx, cy, rx, ry = params
    quality = rng.uniform(0.0, 1.0)
    jitter = (1 - quality) * 0.5 * ry
    scale = 1 + (1 - quality) * rng.uniform(-0.4, 0.4)
    out = (cx + rng.normal(0, jitter, frames), cy + rng.normal(0, jitter, frames), rx * scale, ry * scale)
    return out, rng.random(frames) < 0.1 * (1 - quality), quality


def build_split(num_videos, frames, preds, height, width, seed=0):
    """(gt_json dict, results list) of a synthetic YTVIS split."""
    rng = np.random.default_rng(seed)
    gt = {"videos": [], "annotations": [],
          "categories": [{"id": c + 1, "name": f"class{c + 1}"} for c in range(NUM_CATEGORIES)]}
    results = []
    for vid in range(1, num_videos + 1):
        gt["videos"].append({"id": vid, "height": height, "width": width, "length": frames,
                             "file_names": [f"{vid:05d}/{t:05d}.jpg" for t in range(frames)]})
        tracks = []
        for _ in range(min(1 + rng.poisson(0.7), 6)):
            params, cat = random_track(rng, frames, height, width), int(rng.integers(1, NUM_CATEGORIES + 1))
            segs = ellipse_rles(*params, height, width)
            areas = [int(mask_util.area({"size": s["size"], "counts": s["counts"].encode()})) if s else None
                     for s in segs]
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "video_id": vid, "category_id": cat,
                                      "iscrowd": 0, "segmentations": segs, "areas": areas,
                                      "height": height, "width": width, "length": frames})
            tracks.append((params, cat))
        for p in range(preds):
            if p < 0.7 * preds:
                params, cat = tracks[p % len(tracks)]
                params, drop, quality = noisy_copy(rng, params, frames)
                if rng.random() < 0.3:
                    cat = int(rng.integers(1, NUM_CATEGORIES + 1))
                score = float(np.clip(0.5 * quality + 0.5 * rng.random(), 0, 1))
            else:
                params, cat = random_track(rng, frames, height, width), int(rng.integers(1, NUM_CATEGORIES + 1))
                drop, score = rng.random(frames) < 0.1, float(0.5 * rng.random())
            segs = [None if d else s for s, d in zip(ellipse_rles(*params, height, width), drop)]
            results.append({"video_id": vid, "category_id": cat, "score": score, "segmentations": segs})
    return gt, results


@contextlib.contextmanager
def timed_mask_iou():
    """Count the seconds spent in ``pycocotools.mask.iou`` inside the block: yields a one-element list."""
    seconds, iou = [0.0], mask_util.iou

    def timed(*args):
        start = time.perf_counter()
        try:
            return iou(*args)
        finally:
            seconds[0] += time.perf_counter() - start

    mask_util.iou = timed
    try:
        yield seconds
    finally:
        mask_util.iou = iou


def cli_import_seconds():
    """Seconds to import iai_d2.evaluation in a fresh interpreter, and the heavy packages it loaded."""
    code = ("import sys, time; t = time.perf_counter(); import iai_d2.evaluation; "
            "print(time.perf_counter() - t, *[m for m in ('torch', 'detectron2') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    seconds, *heavy = out.stdout.split()
    return float(seconds), ", ".join(heavy)


def check_official(folder):
    """Exit with a one-line message unless ``folder`` holds the reference ytvis.py and ytviseval.py."""
    for name in ("ytvis.py", "ytviseval.py"):
        if not os.path.isfile(os.path.join(folder, name)):
            sys.exit(f"--official {folder}: no {name} there (the reference YouTube-VIS API)")


def time_official(folder, gt_path, res_path):
    """(seconds, AP) of the reference evaluator in ``folder`` on the files, end to end, one thread."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", OFFICIAL_CODE, os.path.abspath(folder), gt_path, res_path],
                         env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        last = out.stderr.strip().splitlines()[-1:] or ["it printed no RESULT line"]
        sys.exit(f"the reference evaluator in {folder} failed: {last[0]}")
    return seconds, float(lines[-1].split()[2])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=302)
    parser.add_argument("--frames", type=int, default=36)
    parser.add_argument("--preds", type=int, default=100, help="predicted tracks per video")
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="CLI runs (the median is reported)")
    parser.add_argument("--official", metavar="DIR",
                        help="folder with the reference ytvis.py + ytviseval.py: time it on the same files")
    args = parser.parse_args(argv)
    if args.official:
        check_official(args.official)

    start = time.perf_counter()
    gt_json, results = build_split(args.videos, args.frames, args.preds, args.height, args.width, args.seed)
    build_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        gt_path, res_path = os.path.join(tmp, "gt.json"), os.path.join(tmp, "results.json")
        for path, obj in ((gt_path, gt_json), (res_path, results)):
            with open(path, "w") as f:
                json.dump(obj, f)
        res_mb = os.path.getsize(res_path) / 2**20
        del gt_json, results
        import_s, heavy = cli_import_seconds()
        cli_times = []
        for _ in range(max(args.repeat, 1)):
            start = time.perf_counter()
            cli = subprocess.run([sys.executable, "-m", "iai_d2.evaluation", "--gt", gt_path, "--results", res_path],
                                 cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True)
            cli_times.append(time.perf_counter() - start)
            if cli.returncode:
                sys.exit(f"the evaluation CLI failed: {cli.stderr.strip()}")
        cli_s = float(np.median(cli_times))
        official = time_official(args.official, gt_path, res_path) if args.official else None
        start = time.perf_counter()
        gt_raw, res_raw = read_json(gt_path, "ground-truth"), read_json(res_path, "results")
        parse_s = time.perf_counter() - start
        start = time.perf_counter()
        gt = load_ground_truth(gt_raw)
        dets = load_results(res_raw, gt)
        load_s = time.perf_counter() - start
    start = time.perf_counter()
    with timed_mask_iou() as iou_s:
        metrics = evaluate(gt, dets)
    eval_s = time.perf_counter() - start
    # What any evaluator that reuses pycocotools' RLE IoU (and the same JSON parser) must spend at least
    floor_s = import_s + parse_s + iou_s[0]
    cli_ap = json.loads(cli.stdout.strip().splitlines()[-1])["AP"]
    rows = [["videos", args.videos], ["frames per video", args.frames],
            ["frame size", f"{args.height}x{args.width}"], ["GT tracks", len(gt.tracks)],
            ["predicted tracks", len(dets)], ["results.json (MiB)", f"{res_mb:.1f}"],
            ["build synthetic split (s)", f"{build_s:.1f}"],
            ["import iai_d2.evaluation (s)", f"{import_s:.2f}" + (f" (loads {heavy})" if heavy else "")],
            [f"parse GT + results json with {'orjson' if orjson else 'json'} (s)", f"{parse_s:.2f}"],
            ["build tracks + validate + decode RLEs (s)", f"{load_s:.2f}"],
            ["evaluate (s)", f"{eval_s:.2f}"],
            ["  of which pycocotools mask IoU (s)", f"{iou_s[0]:.2f}"],
            ["floor: import + JSON parse + pycocotools IoU (s)", f"{floor_s:.2f}"],
            [f"CLI end to end, 1 thread (s, median of {len(cli_times)})", f"{cli_s:.2f}"],
            [f"CLI / target {TARGET_CLI_S} s", f"{cli_s / TARGET_CLI_S:.1f}x"],
            ["AP / AP50", f"{metrics.summary['AP']:.2f} / {metrics.summary['AP50']:.2f} (CLI AP {cli_ap:.2f})"]]
    if official is not None:
        official_s, official_ap = official
        rows += [["reference YTVISeval end to end, 1 thread (s, 1 run)", f"{official_s:.2f} (AP {official_ap:.2f})"],
                 ["CLI / reference", f"{cli_s / official_s:.3f} (issue 10: {TARGET_CLI_S} / ~{REFERENCE_S:.0f} s = "
                                     f"{TARGET_CLI_S / REFERENCE_S:.1f})"],
                 ["floor / reference", f"{floor_s / official_s:.3f}"]]
    print(tabulate(rows, tablefmt="pipe", headers=["", "value"]))


if __name__ == "__main__":
    main()
