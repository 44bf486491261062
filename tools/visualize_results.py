#!/usr/bin/env python
"""
Draw a YouTube-VIS results.json or submission.zip over a split's frames: one mp4 per video, each
predicted track in its own colour, labelled "category score%" (what Detectron2's
visualize_json_results.py does for images), to inspect a submission before sending it.

    python tools/visualize_results.py --results output/demo/inference/submission.zip \
        --dataset synthetic_vis_val --output output/demo/results_videos
    python tools/visualize_results.py --results results.json --gt valid.json \
        --image-root valid/JPEGImages --output DIR [--conf-threshold 0.5] [--videos 3 17] [--fps 5]

The results are validated against the split first (ids, categories, frame counts, RLE sizes): a bad
entry stops the tool with one line naming it. Writes DIR/<video id>.mp4.
"""
import argparse
import os
import sys

from iai_d2.utils import filter_library_warnings

filter_library_warnings()  # before Detectron2 is imported

import numpy as np  # noqa: E402
import pycocotools.mask as mask_util  # noqa: E402
import tqdm  # noqa: E402

from iai_d2.data.clip_mapper import read_video_frame  # noqa: E402
from iai_d2.data.datasets.ytvis import load_ytvis_json  # noqa: E402
from iai_d2.evaluation import load_ground_truth, load_results  # noqa: E402
from iai_d2.visualization import FrameSink, draw_instances, identity_colors  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", required=True, help="results.json or submission.zip")
    split = parser.add_mutually_exclusive_group(required=True)
    split.add_argument("--dataset", help="a registered split (e.g. synthetic_vis_val, ytvis_2019_val)")
    split.add_argument("--gt", help="the split's YouTube-VIS json (with --image-root)")
    parser.add_argument("--image-root", help="folder the json's file_names are relative to (with --gt)")
    parser.add_argument("--output", required=True, help="folder for <video id>.mp4")
    parser.add_argument("--conf-threshold", type=float, default=0.5, help="draw tracks scoring at least this")
    parser.add_argument("--videos", type=int, nargs="+", help="only these video ids (default: all)")
    parser.add_argument("--fps", type=float, default=5.0)
    args = parser.parse_args(argv)
    if args.gt and not args.image_root:
        parser.error("--gt needs --image-root")
    return args


def split_records(args):
    """(video records with file_names, the split's json path) of --dataset or --gt/--image-root."""
    if args.dataset:
        from detectron2.data import DatasetCatalog, MetadataCatalog

        import iai_d2.data  # noqa: F401  (registers the built-in splits)

        if args.dataset not in DatasetCatalog.list():
            raise ValueError(f"dataset {args.dataset!r} is not registered")
        return DatasetCatalog.get(args.dataset), MetadataCatalog.get(args.dataset).json_file
    return load_ytvis_json(args.gt, args.image_root), args.gt


def draw_video(record, tracks, category_names, sink) -> None:
    """Write every frame of ``record`` with ``tracks`` (one video's, highest score drawn on top)."""
    tracks = sorted(tracks, key=lambda tr: tr.score)
    colors = identity_colors(range(len(tracks)), bgr=True)
    labels = [f"{category_names.get(tr.category_id, tr.category_id)} {tr.score:.0%}" for tr in tracks]
    height, width = record["height"], record["width"]
    for t, file_name in enumerate(record["file_names"]):
        frame = read_video_frame(file_name, "BGR", video_id=record["video_id"], frame_idx=t,
                                 height=height, width=width)
        present = [k for k, tr in enumerate(tracks) if tr.rles[t] is not None]
        if present:
            masks = mask_util.decode([tracks[k].rles[t] for k in present]).transpose(2, 0, 1).astype(bool)
        else:
            masks = np.zeros((0, height, width), dtype=bool)
        sink.write(draw_instances(frame, masks, colors[present], [labels[k] for k in present]))


def main(args) -> None:
    records, json_file = split_records(args)
    gt = load_ground_truth(json_file)
    tracks = load_results(args.results, gt)  # validated: every entry names a video of the split
    if args.videos:
        unknown = sorted(set(args.videos) - {r["video_id"] for r in records})
        if unknown:
            raise ValueError(f"--videos {' '.join(map(str, unknown))}: not in the split {json_file}")
        records = [r for r in records if r["video_id"] in set(args.videos)]
    by_video = {}
    for tr in tracks:
        if tr.score >= args.conf_threshold:
            by_video.setdefault(tr.video_id, []).append(tr)
    for record in tqdm.tqdm(records, unit="video"):
        path = os.path.join(args.output, f"{record['video_id']}.mp4")
        sink = FrameSink(path, args.fps)
        try:
            draw_video(record, by_video.get(record["video_id"], []), gt.categories, sink)
        except BaseException:
            sink.abort()
            raise
        sink.close()
    print(f"wrote {len(records)} videos to {args.output} "
          f"({sum(len(v) for v in by_video.values())} tracks scoring >= {args.conf_threshold})")


if __name__ == "__main__":
    try:
        main(parse_args())
    except (FileNotFoundError, ValueError) as e:
        # Bad results, split, frames or output: the message names the file / video / frame.
        sys.exit(f"error: {e}")
