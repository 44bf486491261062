#!/usr/bin/env python
"""Generate the synthetic moving-shapes video dataset in the YouTube-VIS 2019 layout.

Example (the layout ``synthetic_vis_{train,val}`` expect under $DETECTRON2_DATASETS)::

    python tools/make_synthetic_vis.py --out datasets/synthetic_vis --videos 60 --frames 12 --seed 0
"""
import argparse
import time

from iai_d2.utils import filter_library_warnings

filter_library_warnings()  # before Detectron2 is imported

from iai_d2.data.synthetic import generate_synthetic_vis  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--videos", type=int, default=60, help="train videos")
    parser.add_argument("--val-videos", type=int, default=None,
                        help="valid videos (annotated); default max(1, videos // 5)")
    parser.add_argument("--frames", type=int, default=12, help="frames per video")
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--occlusion", type=float, default=0.5,
                        help="0..1: more crossings, overlap and full occlusions when larger")
    args = parser.parse_args()
    for name in ("videos", "frames", "height", "width"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.val_videos is not None and args.val_videos < 1:
        parser.error(f"--val-videos must be >= 1, got {args.val_videos}")
    if not 0.0 <= args.occlusion <= 1.0:
        parser.error(f"--occlusion must be in [0, 1], got {args.occlusion}")
    start = time.perf_counter()
    paths = generate_synthetic_vis(
        args.out, num_videos=args.videos, num_frames=args.frames, height=args.height,
        width=args.width, seed=args.seed, occlusion=args.occlusion,
        num_val_videos=args.val_videos,
    )
    print(f"Wrote {', '.join(paths)} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
