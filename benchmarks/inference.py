#!/usr/bin/env python
"""
Online inference cost of IAI, in one run on the same frames and weights:

1. seconds / frame of IAI (backbone + HAB + heads + ID assignment + memory update) vs the bare
   Detectron2 Mask R-CNN (GeneralizedRCNN with the same weights where they are shared), and of
   IAI + CondInst (IAICondInst) vs the bare CondInst and IAI + Mask2Former (IAIMask2Former) vs
   the bare Mask2Former, likewise;
2. peak RSS after 100 vs after 2,000 frames of a synthetic stream (bounded memory => ratio ~1),
   and the memory held by the association memory, bounded vs unbounded (the paper's);
3. on a CUDA machine, FPS of the R50 config at 360x640.

    python benchmarks/inference.py [--config-file ...] [--weights model_final.pth] [--stream 2000]
        [--condinst-config ...] [--condinst-weights model_final.pth]
        [--mask2former-config ...] [--mask2former-weights model_final.pth]
"""

import argparse
import os
import sys

import cv2
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from tabulate import tabulate

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (
    CONDINST_DIR,
    CONDINST_TINY_CONFIG,
    MASK2FORMER_DIR,
    MASK2FORMER_TINY_CONFIG,
    REPO,
    TINY_CONFIG,
    as_condinst,
    as_mask2former,
    as_mask_rcnn,
    load_cfg,
    peak_rss_mib,
    plain_resnet_state_dict,
    synthetic_videos,
    timed,
)  # noqa: E402

sys.path.insert(0, CONDINST_DIR)
sys.path.insert(0, MASK2FORMER_DIR)
from condinst import add_condinst_config  # noqa: E402
from mask2former import add_mask2former_config  # noqa: E402


def load_frames(cfg, records):
    """Frames of the synthetic videos as model inputs ((3, h, w) uint8 tensors), with original sizes."""
    aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
    frames = []
    for record in records:
        for path in record["file_names"]:
            bgr = cv2.imread(path)
            image = aug.get_transform(bgr).apply_image(bgr)
            frames.append((torch.as_tensor(image.transpose(2, 0, 1).copy()), bgr.shape[0], bgr.shape[1]))
    return frames


def memory_mib(memory) -> float:
    """Size of the tensors an AssociationMemory holds (global keys/values + local memory), MiB."""
    tensors = list(memory.global_kv()) + list(memory.local_kv())
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def iai_stream(model, frames, num_frames):
    state = model.new_video_state()
    for i in range(num_frames):
        image, height, width = frames[i % len(frames)]
        model.inference_frame(state, image, height, width)


def image_model_frames(model, frames, num_frames):
    with torch.no_grad():
        for i in range(num_frames):
            image, height, width = frames[i % len(frames)]
            model([{"image": image, "height": height, "width": width}])


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", default=TINY_CONFIG)
    parser.add_argument("--weights", default="", help="IAI checkpoint (default: random init)")
    parser.add_argument("--frames", type=int, default=24, help="frames per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stream", type=int, default=2000, help="length of the memory stream (> 100)")
    parser.add_argument("--condinst-config", default=CONDINST_TINY_CONFIG, help="IAICondInst config")
    parser.add_argument("--condinst-weights", default="",
                        help="IAICondInst checkpoint (default: random init, FCOS score threshold 0)")
    parser.add_argument("--mask2former-config", default=MASK2FORMER_TINY_CONFIG, help="IAIMask2Former config")
    parser.add_argument("--mask2former-weights", default="", help="IAIMask2Former checkpoint (default: random init)")
    parser.add_argument("opts", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.stream <= 100:
        parser.error(f"--stream must be above 100 (peak RSS after 100 frames is compared with the end), "
                     f"got {args.stream}")

    cfg = load_cfg(args.config_file, args.opts)
    torch.manual_seed(0)
    records, _ = synthetic_videos(2, 12, 128, 160)
    frames = load_frames(cfg, records)

    iai = build_model(cfg).eval()
    if args.weights:
        DetectionCheckpointer(iai).load(args.weights)
    baseline = build_model(as_mask_rcnn(cfg)).eval()
    missing = baseline.load_state_dict(iai.state_dict(), strict=False)
    assert not missing.missing_keys, missing.missing_keys  # every Mask R-CNN weight comes from IAI

    # Memory first, so that the peak RSS is not set by the timing runs below.
    rows, bound = [], iai.backbone.max_global
    for label, max_global in ((f"bounded (MAX_GLOBAL={bound})", bound), ("unbounded (paper)", 10**9)):
        iai.backbone.max_global = max_global
        state = iai.new_video_state()
        for i in range(args.stream):
            image, height, width = frames[i % len(frames)]
            iai.inference_frame(state, image, height, width)
            if i + 1 in (100, args.stream):
                rows.append(
                    [label, i + 1, len(state.memory.global_frames), memory_mib(state.memory), peak_rss_mib()]
                )
    iai.backbone.max_global = bound
    print(
        f"device: {cfg.MODEL.DEVICE}, threads: {torch.get_num_threads()}, weights: {args.weights or 'random init'}"
    )
    print(
        tabulate(
            rows,
            headers=[
                "global memory",
                "frames streamed",
                "frames in memory",
                "memory tensors (MiB)",
                "peak RSS (MiB)",
            ],
            floatfmt=".3f",
        )
    )
    print(
        f"peak RSS after {args.stream} vs 100 frames (bounded): {rows[1][4] / rows[0][4]:.3f}; "
        f"memory tensors unbounded / bounded after {args.stream} frames: {rows[3][3] / rows[1][3]:.1f}x"
    )

    # CondInst and IAI + CondInst, the same way. Untrained FCOS logits sit at the 0.01 prior,
    # below the 0.05 score threshold: with random init the threshold is 0, so both run their masks.
    ci_opts = [] if args.condinst_weights else ["MODEL.FCOS.INFERENCE_TH_TEST", 0.0]
    ci_cfg = load_cfg(args.condinst_config, ci_opts + list(args.opts), add_condinst_config)
    iai_ci = build_model(ci_cfg).eval()
    if args.condinst_weights:
        DetectionCheckpointer(iai_ci).load(args.condinst_weights)
    condinst = build_model(as_condinst(ci_cfg)).eval()
    missing = condinst.load_state_dict(iai_ci.state_dict(), strict=False)
    assert not missing.missing_keys, missing.missing_keys  # every CondInst weight comes from IAI + CondInst

    # Mask2Former and IAI + Mask2Former: the plain ResNet's weights are IAIResNet's bottom_up ones.
    m2f_cfg = load_cfg(args.mask2former_config, args.opts, add_mask2former_config)
    iai_m2f = build_model(m2f_cfg).eval()
    if args.mask2former_weights:
        DetectionCheckpointer(iai_m2f).load(args.mask2former_weights)
    mask2former = build_model(as_mask2former(m2f_cfg)).eval()
    missing = mask2former.load_state_dict(plain_resnet_state_dict(iai_m2f.state_dict()), strict=False)
    assert not missing.missing_keys, missing.missing_keys  # every Mask2Former weight comes from IAI + Mask2Former

    t_base = timed(lambda: image_model_frames(baseline, frames, args.frames), args.repeats) / args.frames
    t_iai = timed(lambda: iai_stream(iai, frames, args.frames), args.repeats) / args.frames
    t_ci = timed(lambda: image_model_frames(condinst, frames, args.frames), args.repeats) / args.frames
    t_iai_ci = timed(lambda: iai_stream(iai_ci, frames, args.frames), args.repeats) / args.frames
    t_m2f = timed(lambda: image_model_frames(mask2former, frames, args.frames), args.repeats) / args.frames
    t_iai_m2f = timed(lambda: iai_stream(iai_m2f, frames, args.frames), args.repeats) / args.frames
    print(f"CondInst weights: {args.condinst_weights or 'random init, FCOS score threshold 0'}; "
          f"Mask2Former weights: {args.mask2former_weights or 'random init'}")
    print(
        tabulate(
            [
                ["Mask R-CNN", t_base, 1.0 / t_base, 1.0],
                ["IAI (online)", t_iai, 1.0 / t_iai, t_iai / t_base],
                ["CondInst", t_ci, 1.0 / t_ci, 1.0],
                ["IAI + CondInst (online)", t_iai_ci, 1.0 / t_iai_ci, t_iai_ci / t_ci],
                ["Mask2Former", t_m2f, 1.0 / t_m2f, 1.0],
                ["IAI + Mask2Former (online)", t_iai_m2f, 1.0 / t_iai_m2f, t_iai_m2f / t_m2f],
            ],
            headers=["model", "s / frame", "FPS", "ratio"],
            floatfmt=".4f",
        )
    )
    print(
        "(ratio: against the plain detector of the same family in this run, Mask R-CNN, CondInst or Mask2Former. "
        "Mask R-CNN / CondInst: NMS and masks for up to TEST.DETECTIONS_PER_IMAGE boxes; IAI: class-agnostic "
        "NMS (IAI + CondInst: CondInst's NMS) and masks for MODEL.IAI.INFERENCE.MAX_PER_FRAME boxes; "
        "Mask2Former: the top TEST.DETECTIONS_PER_IMAGE (query, class) pairs; IAI + Mask2Former: the queries "
        "scoring >= MODEL.MASK2FORMER.FRAME_SCORE_THRESH, at most MAX_PER_FRAME)"
    )

    if torch.cuda.is_available():
        gpu_cfg = load_cfg(
            os.path.join(REPO, "configs", "youtubevis_2019", "iai_R50_FPN.yaml"),
            ["MODEL.DEVICE", "cuda", "MODEL.WEIGHTS", ""],
        )
        model = build_model(gpu_cfg).eval()
        frame = torch.randint(0, 255, (3, 360, 640), dtype=torch.uint8)
        seconds = timed(lambda: iai_stream(model, [(frame, 720, 1280)], 50), 3) / 50
        print(f"GPU {torch.cuda.get_device_name()}: IAI R50-FPN at 360x640: {1.0 / seconds:.1f} FPS")


if __name__ == "__main__":
    main()
