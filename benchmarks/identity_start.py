#!/usr/bin/env python
"""
What the identity pathway does to a trained image model at step 0 (issue 19, item 4): for each
seed's Mask R-CNN image stage of an occlusion-benchmark output folder, the val split's detection
quality of the image model itself and of IAI (the demo config) built on it before any IAI
training, its association path, ID bank and dense ID decoder freshly initialised with the seed.

    python benchmarks/identity_start.py --output output/occlusion_benchmark --seed-list 5,6

Prints one row per seed and model: oracle video AP (GT identities on the model's detections:
detection quality alone), DetA and IoU-linked AP (tools/analyze_tracking.py's rows). Runs go to
OUTPUT/seed<s>/identity_start/{image,iai_step0}/ (diagnosis/, result.json; the log to
OUTPUT/identity_start.log); a run whose result.json exists is read, not repeated.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # occlusion_benchmark
import occlusion_benchmark as bench  # noqa: E402  (also puts the projects on sys.path)

from iai_d2.utils import atomic_write  # noqa: E402

CONFIGS = {
    "image": ("frames", "projects/IoULinkBaseline/configs/iou_link_tiny.yaml"),  # the image model, IoU-linked
    "iai_step0": ("iai", "configs/synthetic/iai_tiny.yaml"),
}


def measure(output, seed, name, threads):
    """Diagnose one model of ``seed`` (a key of CONFIGS); returns the model / oracle rows."""
    run_dir = os.path.join(output, f"seed{seed}", "identity_start", name)
    result_file = os.path.join(run_dir, "result.json")
    if os.path.isfile(result_file):
        with open(result_file) as f:
            return json.load(f)
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.utils.env import seed_all_rng

    import iou_link_baseline  # noqa: F401  (registers IoULinkRCNN)
    from iai_d2.engine import IAITrainer

    image = os.path.join(bench.run_dir_of(output, seed, "image"), "model_final.pth")
    if not os.path.isfile(image):
        raise FileNotFoundError(f"{image} does not exist: train seed {seed}'s image stage with occlusion_benchmark.py")
    torch.set_num_threads(threads)
    os.makedirs(run_dir, exist_ok=True)
    kind, config = CONFIGS[name]
    cfg = bench.build_cfg(kind, config, run_dir, image, 1, seed, "cpu", False)
    weights = image
    if name == "iai_step0":  # the image weights in the IAI model, its new modules initialised with SEED
        seed_all_rng(seed)
        torch.manual_seed(seed)
        model = IAITrainer.build_model(cfg)
        DetectionCheckpointer(model).load(image)
        weights = os.path.join(run_dir, "model_final.pth")
        atomic_write(weights, lambda f: torch.save({"model": model.state_dict()}, f))
    rows = bench.evaluate(cfg, weights, os.path.join(run_dir, "diagnosis"))["rows"]
    result = {"seed": seed, "model": name, "rows": {k: rows[k] for k in ("model", "iou_link", "oracle")}}
    atomic_write(result_file, lambda f: json.dump(result, f, indent=2), "w")
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="occlusion_benchmark.py's --output (data/, seed<s>/image/)")
    parser.add_argument("--seed-list", required=True, help="comma-separated seeds whose image stage exists")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    try:
        seeds = bench.parse_seed_list(args.seed_list)
    except ValueError as e:
        parser.error(str(e))
    output = os.path.abspath(args.output)
    bench.register_datasets(os.path.join(output, "data"))
    from detectron2.utils.logger import setup_logger

    for logger_name in ("detectron2", "fvcore", "iai_d2"):  # missing keys, dropped births: to the log only
        setup_logger(os.path.join(output, "identity_start.log"), name=logger_name, configure_stdout=False)
    print("| seed | model | oracle AP | DetA | IoU-linked AP |\n|---|---|---|---|---|")
    means = {name: [] for name in CONFIGS}
    for seed in seeds:
        for name in CONFIGS:
            rows = measure(output, seed, name, args.threads)["rows"]
            values = (rows["oracle"]["AP"], rows["iou_link"]["DetA"], rows["iou_link"]["AP"])
            means[name].append(values)
            print(f"| {seed} | {name} | " + " | ".join(f"{v:.1f}" for v in values) + " |", flush=True)
    for name, values in means.items():
        cols = [sum(v[i] for v in values) / len(values) for i in range(3)]
        print(f"| mean of {len(values)} | {name} | " + " | ".join(f"{v:.1f}" for v in cols) + " |")


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
