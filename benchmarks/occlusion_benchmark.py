#!/usr/bin/env python
"""
Occlusion benchmark (issues 9, 19): IAI, its ablations, the tracking-by-detection baseline and the
IoU-linking floor on Mask R-CNN, IAI and the tracking-by-detection baseline on CondInst (issue 11),
and IAI and query matching (MinVIS-style) on Mask2Former (issue 20), each trained with the same
budget under K training seeds on one synthetic set with heavy occlusion, scored with the tracking
diagnosis (video AP, HOTA / AssA / IDF1, ID switches and re-identification after gaps for model /
IoU-linked / oracle identities on the same detections).

    python benchmarks/occlusion_benchmark.py            # IAI, Track, floor x 3 seeds: ~3.5 h, 2 quiet CPU cores
    python benchmarks/occlusion_benchmark.py --variants all --device cuda --workers 12  # one GPU
    python benchmarks/occlusion_benchmark.py --quick --variants iai,floor --output /tmp/occ --results /tmp/occ

Recipe, per training seed s in 0 .. K-1 (or in --seed-list): the plain image model of each detector the chosen variants
use (Mask R-CNN, configs/synthetic/maskrcnn_tiny_frames.yaml -> OUTPUT/seed<s>/image/; CondInst,
projects/CondInst/configs/condinst_tiny_frames.yaml -> OUTPUT/seed<s>/image_condinst/; Mask2Former,
projects/Mask2Former/configs/mask2former_tiny_frames.yaml -> OUTPUT/seed<s>/image_mask2former/) is
trained with SEED s on the frames of the train videos for --image-iters iterations; every variant of
seed s starts from its detector's image model of seed s and trains --iters more iterations of 10
frames each with SEED s (2 clips x 5 frames for IAI, 5 frame pairs for the Track baselines, 10
frames as images for the floor and query matching). Seed s of two variants thus shares its image
model: differences are paired by seed. Each run is resumable: one whose model_final.pth and
result.json exist is skipped, one with only model_final.pth is evaluated. Writes
RESULTS/occlusion.{md,json,png}; data and runs go to OUTPUT (data/, seed<s>/<image stage>/,
seed<s>/<variant>/). See docs/OCCLUSION_BENCHMARK.md.
"""
import argparse
import json
import os
import platform
import sys
import time
from collections import OrderedDict
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # occlusion_report
for _project in ("CondInst", "TrackBaseline", "IoULinkBaseline", "Mask2Former"):
    sys.path.insert(0, os.path.join(REPO, "projects", _project))

from iai_d2.utils import atomic_write, filter_library_warnings  # noqa: E402

filter_library_warnings()  # before Detectron2 is imported

import numpy as np  # noqa: E402
from occlusion_report import own_labelling, write_report  # noqa: E402

TRAIN_NAME, VAL_NAME = "occlusion_bench_train", "occlusion_bench_val"
FRAMES_NAME = f"{TRAIN_NAME}_frames"
FRAMES_PER_ITER = 10  # IAI: 2 clips x 5 frames; Track baselines: 5 pairs; image model / "frames" kind: 10 images
# detector -> (run name, config) of its image-model stage; "image" keeps the runs made before
# CondInst joined the benchmark reusable.
IMAGE_STAGES = OrderedDict([
    ("maskrcnn", ("image", "configs/synthetic/maskrcnn_tiny_frames.yaml")),
    ("condinst", ("image_condinst", "projects/CondInst/configs/condinst_tiny_frames.yaml")),
    ("mask2former", ("image_mask2former", "projects/Mask2Former/configs/mask2former_tiny_frames.yaml")),
])


def _ablation(name):
    return os.path.join("configs", "synthetic", "ablations", f"{name}.yaml")


# name -> (kind, config file, table label, detector). kind: "iai" (IAIRCNN, IAICondInst,
# IAIMask2Former; trained on clips), "track" (TrackRCNN, TrackCondInst; trained on frame pairs),
# "frames" (the image model trained on frames as images, identities linked online without training:
# IoULinkRCNN by greedy mask IoU, QueryMatchMask2Former by query matching); detector: the key of
# its image-model stage in IMAGE_STAGES.
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
    ("floor", ("frames", "projects/IoULinkBaseline/configs/iou_link_tiny.yaml",
               "floor: image model + IoU linking", "maskrcnn")),
    ("iai_condinst", ("iai", "projects/CondInst/configs/iai_condinst_tiny.yaml",
                      "IAI + CondInst (res3, dense ID)", "condinst")),
    ("condinst_track", ("track", "projects/TrackBaseline/configs/condinst_synthetic_tiny.yaml",
                        "CondInst Track (MaskTrack-style)", "condinst")),
    ("iai_return_clips", ("iai", "configs/synthetic/levers/return_clips.yaml",
                          "IAI, half the training clips around a return (SAMPLING_RETURN_PROB 0.5)", "maskrcnn")),
    ("iai_return_clips_pos", ("iai", "configs/synthetic/levers/return_clips_position.yaml",
                              "IAI, return clips + HAB position embedding", "maskrcnn")),
    ("iai_global_distance", ("iai", "configs/synthetic/levers/global_distance_bias.yaml",
                             "IAI, distance bias in the global memory (slopes 0, 0.5)", "maskrcnn")),
    ("iai_id_loss_x2", ("iai", "configs/synthetic/levers/id_loss_x2.yaml",
                        "IAI, dense ID loss weight 2 (DENSE_ID.LOSS_WEIGHT 2.0)", "maskrcnn")),
    ("iai_width56", ("iai", "configs/synthetic/levers/association_width56.yaml",
                     "IAI, association width 56 (ASSOCIATION.DIM 56)", "maskrcnn")),
    ("iai_identity_warmup", ("iai", "configs/synthetic/levers/identity_warmup.yaml",
                             "IAI, identity-only warm-up (IDENTITY_WARMUP_ITERS 50)", "maskrcnn")),
    ("iai_image_lr01", ("iai", "configs/synthetic/levers/image_model_lr01.yaml",
                        "IAI, image model at 0.1x the learning rate (IMAGE_MODEL_MULTIPLIER 0.1)", "maskrcnn")),
    ("iai_m2f", ("iai", "projects/Mask2Former/configs/iai_mask2former_tiny.yaml",
                 "IAI + Mask2Former (res3, dense ID)", "mask2former")),
    ("m2f_query_match", ("frames", "projects/Mask2Former/configs/query_matching_tiny.yaml",
                         "Mask2Former + query matching (MinVIS-style)", "mask2former")),
    ("iai_keep_ids", ("iai", "configs/synthetic/iai_tiny.yaml",
                      "IAI, memory keeps identities (EVICTION keep_identities; at inference)", "maskrcnn")),
    ("iai_global8", ("iai", "configs/synthetic/iai_tiny.yaml", "IAI, MAX_GLOBAL 8 (at inference)", "maskrcnn")),
    ("iai_mask_iou", ("iai", "configs/synthetic/iai_tiny.yaml",
                      "IAI + last-mask IoU in matching (MASK_IOU_WEIGHT 0.5; not IAI)", "maskrcnn")),
    ("iai_class_penalty", ("iai", "configs/synthetic/iai_tiny.yaml",
                           "IAI + class consistency in matching (CLASS_PENALTY 1.0; not IAI)", "maskrcnn")),
    ("iai_track_cues", ("iai", "configs/synthetic/iai_tiny.yaml",
                        "IAI + last-mask IoU + class consistency (MaskTrack's cues; not IAI)", "maskrcnn")),
    ("track_no_class", ("track", "projects/TrackBaseline/configs/synthetic_tiny.yaml",
                        "TrackBaseline without its class cue (MATCH_COEFFS g = 0)", "maskrcnn")),
    ("iai_condinst_class_penalty", ("iai", "projects/CondInst/configs/iai_condinst_tiny.yaml",
                                    "IAI + CondInst + class consistency (CLASS_PENALTY 1.0; not IAI)", "condinst")),
])
# Inference options: variant -> (the variant whose trained model of seed s it evaluates, config
# overrides at test time). Nothing is trained: the row differs from its base by inference alone.
INFERENCE_OPTIONS = OrderedDict([
    ("iai_keep_ids", ("iai", ["MODEL.IAI.MEMORY.EVICTION", "keep_identities"])),
    ("iai_global8", ("iai", ["MODEL.IAI.MEMORY.MAX_GLOBAL", 8])),
    ("iai_mask_iou", ("iai", ["MODEL.IAI.INFERENCE.MASK_IOU_WEIGHT", 0.5])),
    ("iai_class_penalty", ("iai", ["MODEL.IAI.INFERENCE.CLASS_PENALTY", 1.0])),
    ("iai_track_cues", ("iai", ["MODEL.IAI.INFERENCE.MASK_IOU_WEIGHT", 0.5, "MODEL.IAI.INFERENCE.CLASS_PENALTY", 1.0])),
    ("track_no_class", ("track", ["MODEL.TRACK_HEAD.INFERENCE.MATCH_COEFFS", (1.0, 2.0, 0.0)])),
    ("iai_condinst_class_penalty", ("iai_condinst", ["MODEL.IAI.INFERENCE.CLASS_PENALTY", 1.0])),
])

# Default and --quick settings. The default (IAI, Track, floor; 3 seeds) takes ~3.5 h on 2 CPU
# cores (docs/OCCLUSION_BENCHMARK.md); the val split is large enough that returns after full
# occlusions (~50 hidden tracks) and same-class look-alikes (~2/3 of the videos) are frequent.
DEFAULTS = dict(videos=60, val_videos=48, frames=20, height=128, width=160, occlusion=1.0, data_seed=0,
                seeds=3, iters=250, image_iters=250)
QUICK = dict(videos=3, val_videos=2, frames=6, seeds=2, iters=2, image_iters=2)
DEFAULT_VARIANTS = ("iai", "track", "floor")
DATA_KEYS = ("videos", "val_videos", "frames", "height", "width", "occlusion", "data_seed")


def parse_seed_list(text):
    """``"4, 3,4"`` -> [3, 4]: the sorted distinct seeds of a --seed-list (a ValueError naming it
    for anything but comma-separated integers >= 0)."""
    try:
        seeds = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise ValueError(f"--seed-list: comma-separated integers expected, got {text!r}") from None
    if not seeds or seeds[0] < 0:
        raise ValueError(f"--seed-list: seeds >= 0 expected, got {seeds or 'none'}")
    return seeds


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke-test budget: {', '.join(f'{k}={v}' for k, v in QUICK.items())}")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help=f"comma-separated subset of {', '.join(VARIANTS)}, or all "
                             f"(default {','.join(DEFAULT_VARIANTS)})")
    parser.add_argument("--seeds", type=int,
                        help=f"training seeds 0 .. K-1, each variant (and image stage) trained once per seed "
                             f"(default {DEFAULTS['seeds']})")
    parser.add_argument("--seed-list",
                        help="comma-separated training seeds (e.g. 3,4) instead of 0 .. K-1: trains, or with "
                             "--report-only tables, exactly these (a seed lost or added later)")
    parser.add_argument("--iters", type=int,
                        help=f"training iterations per variant (default {DEFAULTS['iters']})")
    parser.add_argument("--image-iters", type=int,
                        help=f"iterations of the image-model stage (default {DEFAULTS['image_iters']})")
    parser.add_argument("--report-only", action="store_true",
                        help="write the table from the runs finished so far (a partial one names the "
                             "missing runs); train and evaluate nothing")
    parser.add_argument("--device", default="cpu", help="MODEL.DEVICE of every run (cpu, cuda)")
    parser.add_argument("--workers", type=int, default=1, help="runs trained in parallel processes")
    parser.add_argument("--threads", type=int,
                        help="torch threads per process (default: CPU cores // workers, at least 1)")
    parser.add_argument("--output", default=os.path.join(REPO, "output", "occlusion_benchmark"),
                        help="data and per-seed runs (default output/occlusion_benchmark)")
    parser.add_argument("--results", default=os.path.join(REPO, "benchmarks", "results"),
                        help="where occlusion.{md,json,png} go (default benchmarks/results)")
    for key in ("videos", "val_videos", "frames", "data_seed"):
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, help=f"default {DEFAULTS[key]}")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    variants = list(VARIANTS) if variants == ["all"] else variants
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        parser.error(f"--variants: unknown {unknown or 'empty list'}; choose from {', '.join(VARIANTS)} or all")
    missing = [f"{v} needs {INFERENCE_OPTIONS[v][0]}" for v in variants
               if v in INFERENCE_OPTIONS and INFERENCE_OPTIONS[v][0] not in variants]
    if missing:
        parser.error(f"--variants: {'; '.join(missing)} (it evaluates that variant's models)")
    args.variants = variants
    settings = dict(DEFAULTS, **(QUICK if args.quick else {}))
    for key in ("seeds", "iters", "image_iters", "videos", "val_videos", "frames", "data_seed"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    for key in ("seeds", "iters", "image_iters", "videos", "val_videos", "frames"):
        if settings[key] < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1, got {settings[key]}")
    if args.seed_list is None:
        args.seed_list = list(range(settings["seeds"]))
    elif args.seeds is not None:
        parser.error("give --seeds K (seeds 0 .. K-1) or --seed-list, not both")
    else:
        try:
            args.seed_list = parse_seed_list(args.seed_list)
        except ValueError as e:
            parser.error(str(e))
        settings["seeds"] = len(args.seed_list)
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    args.settings = settings
    args.threads = args.threads or max(1, (os.cpu_count() or 1) // args.workers)
    return args


# ------------------------------------------------------------------------------------ data
def make_dataset(data_dir, settings):
    """Generate the fixed synthetic set (once; kept if it exists with the same settings)."""
    from iai_d2.data.synthetic import generate_synthetic_vis

    wanted = {k: settings[k] for k in DATA_KEYS}
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
                           height=settings["height"], width=settings["width"], seed=settings["data_seed"],
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


def build_cfg(kind, config, run_dir, weights, iters, seed, device, quick, detector="maskrcnn", test_opts=()):
    """The frozen training config of one run (image stage or variant) of ``detector`` (a key of
    IMAGE_STAGES) with training seed ``seed``; ``test_opts`` are an inference option's overrides."""
    from detectron2.config import get_cfg

    from iai_d2 import add_iai_config

    cfg = get_cfg()
    if kind == "track":  # TrackRCNN and TrackCondInst keys
        from track_baseline import add_trackbaseline_config

        add_trackbaseline_config(cfg)
    elif detector == "condinst":
        from condinst import add_condinst_config

        add_condinst_config(cfg)
    elif detector == "mask2former":
        from mask2former import add_mask2former_config

        add_mask2former_config(cfg)
    else:
        add_iai_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, config))
    on_frames = kind in ("image", "frames")
    opts = [
        "DATASETS.TRAIN", (FRAMES_NAME if on_frames else TRAIN_NAME,), "DATASETS.TEST", (),
        "MODEL.WEIGHTS", weights, "MODEL.DEVICE", device, "SEED", seed, "OUTPUT_DIR", run_dir,
        "TEST.PROGRESS_BAR", False, *_schedule(iters),
    ]
    if on_frames:
        opts += ["SOLVER.IMS_PER_BATCH", FRAMES_PER_ITER]
    if quick:
        opts += ["DATALOADER.NUM_WORKERS", 0]
    cfg.merge_from_list(opts + list(test_opts))
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


def run_dir_of(output, seed, name):
    """Folder of one run: OUTPUT/seed<s>/<image stage or variant>."""
    return os.path.join(output, f"seed{seed}", name)


def run(name, seed, output, settings, device, threads, quick):
    """
    Train (unless model_final.pth exists) and evaluate one variant, or an image stage (``name``
    a run name of IMAGE_STAGES, not evaluated), with training seed ``seed``, in a process of its
    own: its stdout and stderr go to ``<run dir>/log.txt``. An inference option (INFERENCE_OPTIONS)
    evaluates its base variant's model of the seed with its overrides. Writes and returns ``<run
    dir>/result.json``.
    """
    stages = {stage: (detector, config) for detector, (stage, config) in IMAGE_STAGES.items()}
    run_dir = run_dir_of(output, seed, name)
    base, test_opts = INFERENCE_OPTIONS.get(name, (name, []))
    final = os.path.join(run_dir_of(output, seed, base), "model_final.pth")
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
    import mask2former  # noqa: F401  (registers Mask2Former, QueryMatchMask2Former, IAIMask2Former)
    import track_baseline  # noqa: F401  (registers TrackRCNN, TrackCondInst)

    torch.set_num_threads(threads)
    for logger_name in ("detectron2", "iai_d2"):
        setup_logger(name=logger_name, abbrev_name="d2" if logger_name == "detectron2" else logger_name)
    register_datasets(os.path.join(output, "data"))
    if name in stages:
        kind, (detector, config), weights = "image", stages[name], ""
    else:
        kind, config, _, detector = VARIANTS[name]
        weights = os.path.join(run_dir_of(output, seed, IMAGE_STAGES[detector][0]), "model_final.pth")
    cfg = build_cfg(kind, config, run_dir, weights, iters, seed, device, quick, detector, test_opts)
    result = dict(variant=name, seed=seed, config=config, device=device, iters=iters, threads=threads)
    if test_opts:
        result["inference_options"] = test_opts
        if not os.path.isfile(final):
            raise FileNotFoundError(f"{name} evaluates {final}, which does not exist: run {base} first")
    elif not os.path.isfile(final):
        result["train_sec"], result["sec_per_iter"] = train(cfg)
    if name not in stages:
        start = time.perf_counter()
        result["diagnosis"] = evaluate(cfg, final, os.path.join(run_dir, "diagnosis"))
        result["eval_sec"] = time.perf_counter() - start
    atomic_write(result_file, lambda f: json.dump(result, f, indent=2), "w")
    return result


def _one_line(e):
    return f"{type(e).__name__}: {' '.join(str(e).split())}"


def run_all(args, output):
    """Every image stage and variant of every seed, each variant of seed s once its image stage of
    seed s is done; returns ({(seed, name): result}, [failure lines])."""
    settings = args.settings
    common = dict(output=output, settings=settings, device=args.device, threads=args.threads, quick=args.quick)
    stage_detector = {stage: detector for detector, (stage, _) in IMAGE_STAGES.items()}
    stages = [IMAGE_STAGES[d][0] for d in IMAGE_STAGES if any(VARIANTS[n][3] == d for n in args.variants)]
    runs, failures = {}, []
    # One fresh process per run: own log file, own torch state, memory returned after each run.
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn"), max_tasks_per_child=1) as pool:
        pending = {pool.submit(run, stage, seed, **common): (seed, stage)
                   for seed in args.seed_list for stage in stages}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                seed, name = pending.pop(future)
                log = os.path.join(run_dir_of(output, seed, name), "log.txt")
                try:
                    runs[(seed, name)] = result = future.result()
                except Exception as e:  # one run failing does not lose the others
                    failures.append(f"seed {seed} {name}: {_one_line(e)}")
                    print(f"error: {failures[-1]} (log: {log})", flush=True)
                    continue
                if name in stage_detector:
                    print(f"seed {seed}: image model ready ({log[:-len('log.txt')]}model_final.pth)", flush=True)
                    for variant in args.variants:  # inference options wait for their base, below
                        if VARIANTS[variant][3] == stage_detector[name] and variant not in INFERENCE_OPTIONS:
                            pending[pool.submit(run, variant, seed, **common)] = (seed, variant)
                else:
                    for option, (base, _) in INFERENCE_OPTIONS.items():
                        if base == name and option in args.variants:
                            pending[pool.submit(run, option, seed, **common)] = (seed, option)
                    row = result["diagnosis"]["rows"][own_labelling(name)]
                    print(f"seed {seed} {name}: AP {row['AP']:.1f}, AssA {row['AssA']:.1f}, "
                          f"ID switches {row['id_switches']}", flush=True)
    return runs, failures


def finished_runs(args, output):
    """({(seed, name): result} of the chosen variants' finished runs, [missing "seed<s>/<name>"])."""
    runs, missing = {}, []
    for seed in args.seed_list:
        for name in args.variants:
            result_file = os.path.join(run_dir_of(output, seed, name), "result.json")
            if not os.path.isfile(result_file):
                missing.append(f"seed{seed}/{name}")
                continue
            with open(result_file) as f:
                runs[(seed, name)] = json.load(f)
            if runs[(seed, name)]["iters"] != args.settings["iters"]:
                raise ValueError(f"{result_file}: trained for {runs[(seed, name)]['iters']} iterations, "
                                 f"not {args.settings['iters']}")
    return runs, missing


def main(args):
    start = time.perf_counter()
    output, settings = os.path.abspath(args.output), args.settings
    make_dataset(os.path.join(output, "data"), settings)
    if args.report_only:
        (runs, missing), failures = finished_runs(args, output), []
    else:
        (runs, failures), missing = run_all(args, output), []
    if any(name in VARIANTS for _, name in runs):
        write_report(
            args.results, variants=VARIANTS, chosen=args.variants, runs=runs, settings=settings,
            frames_per_iter=FRAMES_PER_ITER, image_configs={stage: config for stage, config in IMAGE_STAGES.values()},
            command="python " + " ".join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:]),
            device=args.device, host=f"{platform.node()}, {os.cpu_count()} CPU cores, "
            f"{args.workers} worker(s) x {args.threads} thread(s)", wall_min=(time.perf_counter() - start) / 60,
            val_stats=dataset_stats(os.path.join(output, "data", "valid.json")), missing=missing,
        )
    if failures:
        sys.exit("error: runs failed: " + "; ".join(failures))


if __name__ == "__main__":
    try:
        main(parse_args())
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
