#!/usr/bin/env python
"""
Where an image instance-segmentation model's masks go wrong: every prediction above a score
threshold is a true positive (mask IoU >= 0.5 with a still-unmatched GT of its class, best-scored
first) or one false-positive kind: duplicate (its best same-class GT is taken), wrong class (IoU
>= 0.5 with a GT of another class only), poor localisation (best IoU in [0.1, 0.5)), background.
Also the mean mask IoU of the true positives. Reads what Detectron2's ``COCOEvaluator`` writes
to ``OUTPUT_DIR/inference/``:

    python tools/detection_errors.py \
        --gt output/condinst/tiny_frames_eval/inference/synthetic_vis_val_frames_coco_format.json \
        --results output/condinst/tiny_frames_eval/inference/coco_instances_results.json \
        [--thresholds 0.5 0.3 0.1]
"""
import argparse
import json
import sys
from collections import defaultdict

import numpy as np
from pycocotools import mask as mask_util
from tabulate import tabulate

from iai_d2.inference.relabel import mask_iou

KINDS = ("true positive", "duplicate", "wrong class", "poor localisation", "background")


def _rle(segmentation, height, width):
    """Compressed RLE of a COCO segmentation (polygons, uncompressed or compressed RLE)."""
    if isinstance(segmentation, list):
        return mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):
        return mask_util.frPyObjects(segmentation, height, width)
    return segmentation


def match_images(gt_json, results):
    """Per image with predictions: (scores (K,) descending, predicted classes (K,), mask IoU (K, G)
    with its GT instances, GT classes (G,)). Computed once, for every score threshold."""
    images = {im["id"]: im for im in gt_json["images"]}
    gts, preds = defaultdict(list), defaultdict(list)
    for ann in gt_json["annotations"]:
        gts[ann["image_id"]].append(ann)
    for r in results:
        preds[r["image_id"]].append(r)
    matched = []
    for image_id, image_preds in preds.items():
        if image_id not in images:
            raise ValueError(f"results: image_id {image_id} is not in the ground truth")
        h, w = images[image_id]["height"], images[image_id]["width"]
        image_preds.sort(key=lambda r: -r["score"])
        anns = gts.get(image_id, [])
        ious = mask_iou([r["segmentation"] for r in image_preds],
                        [_rle(a["segmentation"], h, w) for a in anns])
        matched.append((np.array([r["score"] for r in image_preds]),
                        np.array([r["category_id"] for r in image_preds]), ious,
                        np.array([a["category_id"] for a in anns])))
    return matched


def classify(matched, threshold):
    """(counts per kind, mean mask IoU of the true positives) of the predictions with score >=
    threshold; ``matched`` from :func:`match_images`."""
    counts, tp_ious = dict.fromkeys(KINDS, 0), []
    for scores, pred_classes, ious, gt_classes in matched:
        taken = set()
        for i in np.flatnonzero(scores >= threshold):
            best_any = ious[i].max(initial=0.0)
            same = np.where(gt_classes == pred_classes[i], ious[i], -1.0)
            best = int(np.argmax(same)) if same.size else -1
            if best >= 0 and same[best] >= 0.5:
                kind = "duplicate" if best in taken else "true positive"
                if kind == "true positive":
                    taken.add(best)
                    tp_ious.append(same[best])
            elif best_any >= 0.5:
                kind = "wrong class"
            elif best_any >= 0.1:
                kind = "poor localisation"
            else:
                kind = "background"
            counts[kind] += 1
    return counts, float(np.mean(tp_ious)) if tp_ious else float("nan")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n")[0])
    parser.add_argument("--gt", required=True, help="COCO-format ground truth json")
    parser.add_argument("--results", required=True, help="coco_instances_results.json")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.3, 0.1])
    args = parser.parse_args(argv)
    loaded = []
    for path in (args.gt, args.results):
        try:
            with open(path) as f:
                loaded.append(json.load(f))
        except (OSError, ValueError) as e:
            sys.exit(f"error: cannot read {path}: {e}")
    gt_json, results = loaded
    try:
        matched = match_images(gt_json, results)
    except (ValueError, KeyError, TypeError) as e:
        sys.exit(f"error: {args.results} against {args.gt}: {type(e).__name__}: {e}")
    rows = []
    for t in args.thresholds:
        counts, tp_iou = classify(matched, t)
        rows.append([f">= {t:g}", *counts.values(), f"{tp_iou:.3f}"])
    print(f"{len(gt_json['annotations'])} GT instances")
    print(tabulate(rows, headers=["score", *KINDS, "TP mask IoU"], tablefmt="pipe"))


if __name__ == "__main__":
    main()
