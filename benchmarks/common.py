"""Shared set-up for the benchmark scripts: configs, a synthetic dataset, timing helpers."""

import os
import resource
import tempfile
import time

import torch
from detectron2.config import get_cfg

from iai_d2 import add_iai_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = os.path.join(REPO, "configs", "synthetic", "iai_tiny.yaml")
CONDINST_DIR = os.path.join(REPO, "projects", "CondInst")
CONDINST_TINY_CONFIG = os.path.join(CONDINST_DIR, "configs", "iai_condinst_tiny.yaml")
MASK2FORMER_DIR = os.path.join(REPO, "projects", "Mask2Former")
MASK2FORMER_TINY_CONFIG = os.path.join(MASK2FORMER_DIR, "configs", "iai_mask2former_tiny.yaml")


def load_cfg(config_file: str, opts=(), add_config=add_iai_config):
    """``config_file`` merged into a config with ``add_config``'s keys, then ``opts``."""
    cfg = get_cfg()
    add_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    return cfg


def as_mask_rcnn(cfg):
    """The same detector without IAI: Detectron2's GeneralizedRCNN, FPN backbone and ROI heads."""
    cfg = cfg.clone()
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
    cfg.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
    return cfg


def as_condinst(cfg):
    """The same detector without IAI: CondInst on the plain ResNet-FPN (P3-P7) backbone."""
    cfg = cfg.clone()
    cfg.MODEL.META_ARCHITECTURE = "CondInst"
    cfg.MODEL.BACKBONE.NAME = "build_retinanet_resnet_fpn_backbone"
    return cfg


def as_mask2former(cfg):
    """The same detector without IAI: Mask2Former on the plain ResNet backbone."""
    cfg = cfg.clone()
    cfg.MODEL.META_ARCHITECTURE = "Mask2Former"
    cfg.MODEL.BACKBONE.NAME = "build_resnet_backbone"
    return cfg


def plain_resnet_state_dict(state_dict):
    """An IAI model's state dict with the IAIResNet backbone's ResNet keys (``backbone.bottom_up.*``)
    as a plain ResNet backbone's (``backbone.*``): the reverse of IAIResNet's load hook."""
    nested = "backbone.bottom_up."
    return {("backbone." + k[len(nested):] if k.startswith(nested) else k): v for k, v in state_dict.items()}


def synthetic_videos(num_videos: int, num_frames: int, height: int, width: int, seed: int = 0):
    """Generate a small synthetic YouTube-VIS set in a temporary folder; returns (train records, folder)."""
    from iai_d2.data.datasets.ytvis import load_ytvis_json
    from iai_d2.data.synthetic import generate_synthetic_vis

    folder = tempfile.mkdtemp(prefix="iai_bench_")
    generate_synthetic_vis(folder, num_videos, num_frames, height, width, seed=seed, num_val_videos=1)
    records = load_ytvis_json(os.path.join(folder, "train.json"), os.path.join(folder, "train", "JPEGImages"))
    return records, folder


def timed(fn, repeats: int) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` runs, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
