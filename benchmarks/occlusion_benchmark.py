#!/usr/bin/env python
"""
Occlusion benchmark (issue 9): IAI, its ablations, the tracking-by-detection baseline and the
IoU-linking floor on Mask R-CNN, and IAI and the tracking-by-detection baseline on CondInst
(issue 11), trained with the same budget and seed on one synthetic set with heavy occlusion,
scored with the tracking diagnosis (model / IoU-linked / oracle identities on the same detections).

    python benchmarks/occlusion_benchmark.py                      # default: <= 90 min on 2 CPU cores
    python benchmarks/occlusion_benchmark.py --device cuda --workers 11  # all variants at once, one GPU
    python benchmarks/occlusion_benchmark.py --quick --variants iai,floor --output /tmp/occ --results /tmp/occ

Recipe: the plain image model of each detector the chosen variants use (Mask R-CNN,
configs/synthetic/maskrcnn_tiny_frames.yaml -> OUTPUT/image/; CondInst,
projects/CondInst/configs/condinst_tiny_frames.yaml -> OUTPUT/image_condinst/) is trained on the
frames of the train videos for --image-iters iterations (the image-model stage); every variant
starts from its detector's image model and trains --iters more iterations of 10 frames each (2
clips x 5 frames for IAI, 5 frame pairs for the Track baselines, 10 frames as images for the
floor). Each run is resumable: one whose model_final.pth and result.json exist is skipped, one
with only model_final.pth is evaluated. Writes RESULTS/occlusion.{md,json,png}; data and runs go
to OUTPUT (data/, <image stage>/, <variant>/).
"""
import argparse
import json
import os
import platform
import sys
import time
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _project in ("CondInst", "TrackBaseline", "IoULinkBaseline"):
    sys.path.insert(0, os.path.join(REPO, "projects", _project))

from iai_d2.utils import atomic_write, filter_library_warnings  # noqa: E402

filter_library_warnings()  # before Detectron2 is imported

import numpy as np  # noqa: E402

TRAIN_NAME, VAL_NAME = "occlusion_bench_train", "occlusion_bench_val"
FRAMES_NAME = f"{TRAIN_NAME}_frames"
FRAMES_PER_ITER = 10  # IAI: 2 clips x 5 frames; Track baselines: 5 pairs; image model / floor: 10 images
# detector -> (run name, config) of its image-model stage; "image" keeps the runs made before
# CondInst joined the benchmark reusable.
IMAGE_STAGES = OrderedDict([
    ("maskrcnn", ("image", "configs/synthetic/maskrcnn_tiny_frames.yaml")),
    ("condinst", ("image_condinst", "projects/CondInst/configs/condinst_tiny_frames.yaml")),
])


def _ablation(name):
    return os.path.join("configs", "synthetic", "ablations", f"{name}.yaml")


# name -> (kind, config file, table label, detector). kind: "iai" (IAIRCNN, IAICondInst), "track"
# (TrackRCNN, TrackCondInst), "floor" (IoULinkRCNN: the image model trained on frames, identities
# by greedy mask-IoU linking); detector: the key of its image-model stage in IMAGE_STAGES.
VARIANTS = OrderedDict([
    ("iai", ("iai", "configs/synthetic/iai_tiny.yaml", "IAI (demo config: res3, dense ID)", "maskrcnn")),
    ("no_memory", ("iai", _ablation("no_memory"), "IAI w/o local + global memory (ID head only)", "maskrcnn")),
    ("no_local", ("iai", _ablation("no_local"), "IAI w/o local memory", "maskrcnn")),
    ("no_global", ("iai", _ablation("no_global"), "IAI w/o global memory", "maskrcnn")),
    ("no_cls_projector", ("iai", _ablation("no_cls_projector"), "IAI w/o classification projector", "maskrcnn")),
    ("roi_id_ce", ("iai", _ablation("roi_id_ce"), "IAI, ROI ID head, CE", "maskrcnn")),
    ("roi_id_focal", ("iai", _ablation("roi_id_focal"), "IAI, ROI ID head, focal", "maskrcnn")),
    ("track", ("track", "projects/TrackBaseline/configs/synthetic_tiny.yaml",
               "TrackBaseline (MaskTrack-style)", "maskrcnn")),
    ("floor", ("floor", "projects/IoULinkBaseline/configs/iou_link_tiny.yaml",
               "floor: image model + IoU linking", "maskrcnn")),
    ("iai_condinst", ("iai", "projects/CondInst/configs/iai_condinst_tiny.yaml",
                      "IAI + CondInst (res3, dense ID)", "condinst")),
    ("condinst_track", ("track", "projects/TrackBaseline/configs/condinst_synthetic_tiny.yaml",
                        "CondInst Track (MaskTrack-style)", "condinst")),
])

# Default and --quick settings. The default budget fits 90 min on 2 CPU cores (see README).
DEFAULTS = dict(videos=60, val_videos=12, frames=16, height=128, width=160, occlusion=1.0, seed=0,
                iters=250, image_iters=250)
QUICK = dict(videos=3, val_videos=2, frames=6, iters=2, image_iters=2)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke-test budget: {', '.join(f'{k}={v}' for k, v in QUICK.items())}")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated subset of {', '.join(VARIANTS)} (default: all)")
    parser.add_argument("--iters", type=int,
                        help=f"training iterations per variant (default {DEFAULTS['iters']})")
    parser.add_argument("--image-iters", type=int,
                        help=f"iterations of the image-model stage (default {DEFAULTS['image_iters']})")
    parser.add_argument("--device", default="cpu", help="MODEL.DEVICE of every run (cpu, cuda)")
    parser.add_argument("--workers", type=int, default=1, help="variants trained in parallel processes")
    parser.add_argument("--threads", type=int,
                        help="torch threads per process (default: CPU cores // workers, at least 1)")
    parser.add_argument("--output", default=os.path.join(REPO, "output", "occlusion_benchmark"),
                        help="data and per-variant runs (default output/occlusion_benchmark)")
    parser.add_argument("--results", default=os.path.join(REPO, "benchmarks", "results"),
                        help="where occlusion.{md,json,png} go (default benchmarks/results)")
    for key in ("videos", "val_videos", "frames", "seed"):
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, help=f"default {DEFAULTS[key]}")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        parser.error(f"--variants: unknown {unknown or 'empty list'}; choose from {', '.join(VARIANTS)}")
    args.variants = variants
    settings = dict(DEFAULTS, **(QUICK if args.quick else {}))
    for key in ("iters", "image_iters", "videos", "val_videos", "frames", "seed"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    for key in ("iters", "image_iters", "videos", "val_videos", "frames"):
        if settings[key] < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1, got {settings[key]}")
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    args.settings = settings
    args.threads = args.threads or max(1, (os.cpu_count() or 1) // args.workers)
    return args


# ------------------------------------------------------------------------------------ data
def make_dataset(data_dir, settings):
    """Generate the fixed synthetic set (once; kept if it exists with the same settings)."""
    from iai_d2.data.synthetic import generate_synthetic_vis

    keys = ("videos", "val_videos", "frames", "height", "width", "occlusion", "seed")
    wanted = {k: settings[k] for k in keys}
    stamp = os.path.join(data_dir, "settings.json")
    if os.path.isfile(stamp):
        with open(stamp) as f:
            found = json.load(f)
        if found != wanted:
            raise ValueError(
                f"{data_dir} holds a dataset made with {found}, not {wanted}; use another --output"
            )
        return
    generate_synthetic_vis(data_dir, num_videos=settings["videos"], num_frames=settings["frames"],
                           height=settings["height"], width=settings["width"], seed=settings["seed"],
                           occlusion=settings["occlusion"], num_val_videos=settings["val_videos"])
    atomic_write(stamp, lambda f: json.dump(wanted, f), "w")


def register_datasets(data_dir):
    """Register the benchmark's own train / val / train-frames names (idempotent)."""
    from detectron2.data import DatasetCatalog

    from iai_d2.data import SYNTHETIC_CATEGORIES
    from iai_d2.data.datasets.frames import register_ytvis_frames
    from iai_d2.data.datasets.ytvis import register_ytvis_instances, ytvis_category_metadata

    if VAL_NAME in DatasetCatalog:
        return
    meta = ytvis_category_metadata(SYNTHETIC_CATEGORIES)
    for name, split in ((TRAIN_NAME, "train"), (VAL_NAME, "valid")):
        register_ytvis_instances(name, meta, os.path.join(data_dir, f"{split}.json"),
                                 os.path.join(data_dir, split, "JPEGImages"))
    register_ytvis_frames(FRAMES_NAME, TRAIN_NAME)


def dataset_stats(json_file):
    """Occlusion statistics of a split: tracks, tracks hidden inside the video (invisible between
    two visible frames) and their hidden frames, videos holding two or more instances of one class."""
    with open(json_file) as f:
        data = json.load(f)
    per_video = {}
    hidden_tracks = hidden_frames = 0
    for a in data["annotations"]:
        per_video.setdefault(a["video_id"], []).append(a["category_id"])
        visible = [t for t, s in enumerate(a["segmentations"]) if s is not None]
        gap = visible[-1] - visible[0] + 1 - len(visible)
        hidden_tracks += gap > 0
        hidden_frames += gap
    lookalike = sum(len(c) > len(set(c)) for c in per_video.values())
    return dict(videos=len(data["videos"]), tracks=len(data["annotations"]), hidden_tracks=hidden_tracks,
                hidden_frames=hidden_frames, videos_with_same_class_pair=lookalike)


# ------------------------------------------------------------------------------------ runs
def _schedule(iters):
    """SOLVER overrides of an ``iters``-long run, shaped like the tiny configs (300: steps 220, 280)."""
    steps = sorted({max(1, iters * 11 // 15), max(1, iters * 14 // 15)})
    return ["SOLVER.MAX_ITER", iters, "SOLVER.STEPS", tuple(steps),
            "SOLVER.WARMUP_ITERS", max(1, iters // 10), "SOLVER.CHECKPOINT_PERIOD", iters + 1]


def build_cfg(kind, config, run_dir, weights, iters, settings, device, quick, detector="maskrcnn"):
    """The frozen training config of one run (image stage or variant) of ``detector`` (a key of
    IMAGE_STAGES)."""
    from detectron2.config import get_cfg

    from iai_d2 import add_iai_config

    cfg = get_cfg()
    if kind == "track":  # TrackRCNN and TrackCondInst keys
        from track_baseline import add_trackbaseline_config

        add_trackbaseline_config(cfg)
    elif detector == "condinst":
        from condinst import add_condinst_config

        add_condinst_config(cfg)
    else:
        add_iai_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, config))
    on_frames = kind in ("image", "floor")
    opts = [
        "DATASETS.TRAIN", (FRAMES_NAME if on_frames else TRAIN_NAME,), "DATASETS.TEST", (),
        "MODEL.WEIGHTS", weights, "MODEL.DEVICE", device, "SEED", settings["seed"], "OUTPUT_DIR", run_dir,
        "TEST.PROGRESS_BAR", False, *_schedule(iters),
    ]
    if on_frames:
        opts += ["SOLVER.IMS_PER_BATCH", FRAMES_PER_ITER]
    if quick:
        opts += ["DATALOADER.NUM_WORKERS", 0]
    cfg.merge_from_list(opts)
    per_iter = cfg.SOLVER.IMS_PER_BATCH * (1 if on_frames else cfg.INPUT.SAMPLING_FRAME_NUM)
    if per_iter != FRAMES_PER_ITER:
        raise ValueError(
            f"{config}: {per_iter} frames per iteration, the benchmark compares at {FRAMES_PER_ITER}"
        )
    cfg.freeze()
    return cfg


def train(cfg):
    """Train ``cfg`` from its MODEL.WEIGHTS with IAITrainer; returns (wall seconds, median seconds
    per iteration as Detectron2's iteration timer measures it, data loading included, warm-up
    iterations not; None for runs too short to time)."""
    import torch
    from detectron2.utils.env import seed_all_rng

    from iai_d2.engine import IAITrainer

    seed_all_rng(cfg.SEED)
    torch.manual_seed(cfg.SEED)
    trainer = IAITrainer(cfg)
    trainer.resume_or_load(resume=False)
    start = time.perf_counter()
    trainer.train()
    times = trainer.storage.history("time").values() if "time" in trainer.storage.histories() else []
    return time.perf_counter() - start, float(np.median([t for t, _ in times])) if times else None


def evaluate(cfg, weights, output_dir):
    """Tracking diagnosis of ``weights`` on the val split (model / IoU-linked / oracle rows)."""
    from detectron2.checkpoint import DetectionCheckpointer

    from iai_d2.engine import IAITrainer
    from iai_d2.evaluation.diagnosis import diagnose

    cfg = cfg.clone()
    cfg.defrost()
    cfg.DATASETS.TEST = (VAL_NAME,)
    cfg.freeze()
    model = IAITrainer.build_model(cfg)
    DetectionCheckpointer(model).load(weights)
    return diagnose(cfg, model, VAL_NAME, output_dir)


def run(name, output, settings, device, threads, quick):
    """
    Train (unless model_final.pth exists) and evaluate one variant, or an image stage (``name``
    a run name of IMAGE_STAGES, not evaluated), in a process of its own: its stdout and stderr go
    to ``<output>/<name>/log.txt``. Writes and returns ``<output>/<name>/result.json``.
    """
    stages = {stage: (detector, config) for detector, (stage, config) in IMAGE_STAGES.items()}
    run_dir = os.path.join(output, name)
    final = os.path.join(run_dir, "model_final.pth")
    result_file = os.path.join(run_dir, "result.json")
    iters = settings["image_iters" if name in stages else "iters"]
    if os.path.isfile(final) and os.path.isfile(result_file):
        with open(result_file) as f:
            result = json.load(f)
        if result["iters"] != iters:
            raise ValueError(
                f"{run_dir} was trained for {result['iters']} iterations, not {iters}; use another --output"
            )
        return result
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "log.txt"), "a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    import torch
    from detectron2.utils.logger import setup_logger

    import condinst  # noqa: F401  (registers CondInst, IAICondInst)
    import iou_link_baseline  # noqa: F401  (registers IoULinkRCNN)
    import track_baseline  # noqa: F401  (registers TrackRCNN, TrackCondInst)

    torch.set_num_threads(threads)
    for logger_name in ("detectron2", "iai_d2"):
        setup_logger(name=logger_name, abbrev_name="d2" if logger_name == "detectron2" else logger_name)
    register_datasets(os.path.join(output, "data"))
    if name in stages:
        kind, (detector, config), weights = "image", stages[name], ""
    else:
        kind, config, _, detector = VARIANTS[name]
        weights = os.path.join(output, IMAGE_STAGES[detector][0], "model_final.pth")
    cfg = build_cfg(kind, config, run_dir, weights, iters, settings, device, quick, detector)
    result = dict(variant=name, config=config, device=device, iters=iters, threads=threads)
    if not os.path.isfile(final):
        result["train_sec"], result["sec_per_iter"] = train(cfg)
    if name not in stages:
        start = time.perf_counter()
        result["diagnosis"] = evaluate(cfg, final, os.path.join(run_dir, "diagnosis"))
        result["eval_sec"] = time.perf_counter() - start
    atomic_write(result_file, lambda f: json.dump(result, f, indent=2), "w")
    return result


# ------------------------------------------------------------------------------------ report
def table_rows(results):
    """Markdown table rows: one per variant, plus the "association without ID head" row (the full
    model's detections with IoU-linked identities)."""
    rows = []
    for name, res in results.items():
        diag = res["diagnosis"]["rows"]
        own = diag["iou_link" if name == "floor" else "model"]
        label = VARIANTS[name][2]
        rows.append([label] + [own[k] for k in ("AP", "AP50", "AP75", "AR1", "AR10", "id_switches")]
                    + [diag["iou_link"]["AP"], diag["oracle"]["AP"]])
        if name == "iai":
            link = diag["iou_link"]
            rows.append(["IAI detections + IoU linking (association w/o ID head)"]
                        + [link[k] for k in ("AP", "AP50", "AP75", "AR1", "AR10", "id_switches")]
                        + [link["AP"], diag["oracle"]["AP"]])
    return rows


def markdown(report):
    from tabulate import tabulate

    headers = ["variant", "AP", "AP50", "AP75", "AR1", "AR10", "ID switches", "IoU-linked AP", "oracle AP"]
    rows = [[r[0]] + [f"{v:.1f}" if isinstance(v, float) else v for v in r[1:]] for r in report["table"]]
    s, stats = report["settings"], report["val_stats"]
    timing = "; ".join(
        f"{n} {r['train_sec'] / 60:.1f} min"
        + (f" ({r['sec_per_iter']:.2f} s/iter)" if r["sec_per_iter"] else "")
        for n, r in report["runs"].items() if "train_sec" in r
    )
    return "\n".join([
        "# Occlusion benchmark",
        "",
        tabulate(rows, headers=headers, tablefmt="pipe"),
        "",
        f"Command: `{report['command']}`  ",
        f"Date: {report['date']}; device: {report['device']} ({report['host']}); "
        f"wall time of this invocation {report['wall_min']:.1f} min (runs it reused not counted).",
        "",
        f"Data: synthetic moving shapes, occlusion {s['occlusion']}, seed {s['seed']}, {s['videos']} train / "
        f"{s['val_videos']} val videos of {s['frames']} frames at {s['height']}x{s['width']}. Val split: "
        f"{stats['tracks']} tracks, {stats['hidden_tracks']} of them fully hidden inside the video "
        f"({stats['hidden_frames']} hidden frames), {stats['videos_with_same_class_pair']} of "
        f"{stats['videos']} videos with two or more instances of one class (look-alikes: one shape, "
        "texture and colour +-30 per class).",
        "",
        f"Budget: every variant starts from the image model of its detector (Mask R-CNN or CondInst "
        f"on frames, {s['image_iters']} iterations) and trains {s['iters']} iterations of "
        f"{FRAMES_PER_ITER} frames, seed {s['seed']}. Training time (median s/iter, first iterations excluded): "
        f"{timing or 'n/a (all runs reused)'}.",
        "",
        "Columns: AP .. ID switches score each variant's own identities (the floor's are IoU-linked); "
        "IoU-linked AP and oracle AP score the same detections with greedy mask-IoU linking and with "
        "GT identities (tools/analyze_tracking.py). The association-without-ID-head row is the full "
        "model's detections (trained with the association) linked by mask IoU: no config of its own.",
    ]) + "\n"


def bar_chart(report, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r[0] for r in report["table"]]
    own, link, oracle = (np.array([r[i] for r in report["table"]]) for i in (1, 7, 8))
    y = np.arange(len(labels))
    fig, (ax, ax_sw) = plt.subplots(1, 2, figsize=(12, 0.45 * len(labels) + 1.5), sharey=True,
                                    gridspec_kw={"width_ratios": [3, 1]})
    for k, (values, name) in enumerate(((own, "own IDs"), (link, "IoU-linked"), (oracle, "oracle"))):
        ax.barh(y + (k - 1) * 0.27, values, height=0.27, label=name)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlim(0, max(1.0, float(np.max([own, link, oracle])) * 1.05))
    ax.set_xlabel("video mask AP")
    ax.legend(loc="lower right")
    switches = [r[6] for r in report["table"]]
    ax_sw.barh(y, switches, color="grey")
    ax_sw.set_xlim(0, max(1, max(switches)) * 1.05)
    ax_sw.set_xlabel("ID switches (own IDs)")
    ax.set_title(f"Occlusion benchmark ({report['settings']['iters']} iterations per variant)")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)


def _one_line(e):
    return f"{type(e).__name__}: {' '.join(str(e).split())}"


def main(args):
    start = time.perf_counter()
    output, settings = os.path.abspath(args.output), args.settings
    make_dataset(os.path.join(output, "data"), settings)
    common = dict(output=output, settings=settings, device=args.device, threads=args.threads,
                  quick=args.quick)
    failures = []
    # One fresh process per run: own log file, own torch state, memory returned after each run.
    stages = [stage for detector, (stage, _) in IMAGE_STAGES.items()
              if any(VARIANTS[name][3] == detector for name in args.variants)]
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn"), max_tasks_per_child=1) as pool:
        stage_futures = [(stage, pool.submit(run, stage, **common)) for stage in stages]
        runs = OrderedDict()
        for stage, future in stage_futures:
            try:
                runs[stage] = future.result()
            except Exception as e:
                log = os.path.join(output, stage, "log.txt")
                sys.exit(f"error: image-model stage {stage}: {_one_line(e)} (log: {log})")
            print(f"image model trained ({os.path.join(output, stage, 'model_final.pth')})", flush=True)
        futures = {pool.submit(run, name, **common): name for name in args.variants}
        for future in as_completed(futures):
            name = futures[future]
            try:
                runs[name] = future.result()
            except Exception as e:  # one variant failing does not lose the others
                failures.append(f"{name}: {_one_line(e)}")
                log = os.path.join(output, name, "log.txt")
                print(f"error: variant {failures[-1]} (log: {log})", flush=True)
                continue
            row = runs[name]["diagnosis"]["rows"]["iou_link" if name == "floor" else "model"]
            print(f"{name}: AP {row['AP']:.1f}, ID switches {row['id_switches']}", flush=True)
    results = OrderedDict((n, runs[n]) for n in args.variants if n in runs)
    if results:
        report = dict(
            command="python " + " ".join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:]),
            date=time.strftime("%Y-%m-%d %H:%M"), device=args.device, host=f"{platform.node()}, "
            f"{os.cpu_count()} CPU cores, {args.workers} worker(s) x {args.threads} thread(s)",
            wall_min=(time.perf_counter() - start) / 60, settings=settings,
            val_stats=dataset_stats(os.path.join(output, "data", "valid.json")),
            runs=runs, table=table_rows(results),
        )
        os.makedirs(args.results, exist_ok=True)
        atomic_write(os.path.join(args.results, "occlusion.json"),
                     lambda f: json.dump(report, f, indent=2), "w")
        atomic_write(os.path.join(args.results, "occlusion.md"), lambda f: f.write(markdown(report)), "w")
        bar_chart(report, os.path.join(args.results, "occlusion.png"))
        print(markdown(report))
        print(f"Wrote {os.path.join(args.results, 'occlusion.md')}, occlusion.json, occlusion.png")
    if failures:
        sys.exit("error: variants failed: " + "; ".join(failures))


if __name__ == "__main__":
    try:
        main(parse_args())
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
