"""
Tracking diagnosis: is the detector or the association the bottleneck?

A video model runs once over an annotated split; its per-frame detections are then scored with
three identity labellings, aggregated and scored identically (``VideoTrackAggregator`` +
``YTVISEvaluator``): the model's own IDs, greedy mask-IoU linking to the previous frame (no
learning) and oracle IDs (each detection gets the GT track it matches). Identity statistics (ID
switches, fragmentation, kept / swapped / new IDs of continuing tracks) come from
:mod:`iai_d2.inference.relabel`, HOTA / DetA / AssA / IDF1 from :mod:`.association` (TrackEval),
and the identity a GT track gets back after a gap from :mod:`.reidentification`.

A model qualifies if it has ``new_video_state()`` and ``inference_frame(state, image, height,
width)`` returning Instances with ``pred_masks`` (M, H, W) bool, ``class_probs`` (M, K) and ``ID`` (M,).
"""
import json
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation.evaluator import inference_context
from tabulate import tabulate

from ..data import build_video_test_loader, get_video_dataset_dicts
from ..inference.relabel import (
    GT_IOU_THRESH,
    LINK_IOU_THRESH,
    as_rles,
    iou_link_ids,
    match_to_gt,
    oracle_ids,
    tracking_statistics,
)
from ..inference.tracks import VideoTrackAggregator
from ..utils import atomic_write
from .association import ASSOCIATION_COLUMNS, SCORE_THRESH, association_metrics, sequence_data
from .evaluator import YTVISEvaluator
from .id_accuracy import MODES, InferenceMemoryProbe, id_head_summary
from .reidentification import GAP_BUCKETS, OUTCOMES, reid_counts, returns, sum_counts
from .tracking_report import ReportVideo, ap_lost_order, write_report
from .ytvis_eval import load_ground_truth, load_results, per_video_ap

__all__ = [
    "LABELLINGS",
    "VideoDetections",
    "diagnose",
    "diagnosis_table",
    "id_head_table",
    "reid_table",
    "run_video",
    "video_predictions",
]

logger = logging.getLogger(__name__)

# labelling key -> table row name
LABELLINGS = OrderedDict([("model", "model IDs"), ("iou_link", "IoU-linked"), ("oracle", "oracle")])
REID_LABELLINGS = ("model", "iou_link")  # oracle identities always come back kept
AP_COLUMNS = ("AP", "AP50", "AP75", "AR1", "AR10")
TABLE_COLUMNS = AP_COLUMNS + ASSOCIATION_COLUMNS + ("id_switches", "fragmentation", "kept", "swap", "new")


@dataclass
class VideoDetections:
    """One video's per-frame detections: per frame, M RLEs, (M, K) class probabilities and M
    model track ids."""

    video_id: int
    length: int
    height: int
    width: int
    rles: List[List[dict]]
    class_probs: List[np.ndarray]
    model_ids: List[List[int]]


def run_video(model, video: Dict, probe: Optional[InferenceMemoryProbe] = None) -> VideoDetections:
    """Run ``model`` online over a test video record (``frames``, ``video_id``, ``length``,
    ``height``, ``width``), one frame at a time, as ``inference_video`` does; ``probe`` (if
    given) collects the ID head's answers on the way."""
    length, height, width = video["length"], video["height"], video["width"]
    state = model.new_video_state()
    dets = VideoDetections(video["video_id"], length, height, width, [], [], [])
    infer = probe.frame if probe is not None else (lambda st, t, *args: model.inference_frame(st, *args))
    for t in range(length):
        instances = infer(state, t, video["frames"][t], height, width)
        dets.rles.append(as_rles(instances.pred_masks.cpu().numpy()))
        dets.class_probs.append(instances.class_probs.cpu().double().numpy())
        dets.model_ids.append(instances.ID.tolist())
    return dets


def _gt_categories(record: Dict) -> Dict[int, int]:
    """{GT track id: category id} of a video record's non-crowd instances."""
    return {a["id"]: a["category_id"] for annos in record["annotations"] for a in annos if not a.get("iscrowd", 0)}


def _confident(dets: VideoDetections, thresh: float) -> List[List[bool]]:
    """Per frame, which detections have a max class probability of at least ``thresh``."""
    return [(probs.reshape(len(rles), -1).max(axis=1) >= thresh).tolist() if rles else []
            for probs, rles in zip(dets.class_probs, dets.rles)]


def _gt_frames(record: Dict) -> List[Dict[int, dict]]:
    """Per frame {track id: RLE} of the non-crowd GT instances of a video record."""
    if "annotations" not in record:
        raise ValueError(f"video id {record['video_id']} has no annotations; the diagnosis needs GT")
    h, w = record["height"], record["width"]
    frames = []
    for annos in record["annotations"]:
        gts = {}
        for a in annos:
            if a.get("iscrowd", 0):
                continue
            segm = a["segmentation"]
            if isinstance(segm, list):  # polygons
                segm = mask_util.merge(mask_util.frPyObjects(segm, h, w))
            gts[a["id"]] = segm
        frames.append(gts)
    return frames


def _masks(rles: List[dict], height: int, width: int) -> torch.Tensor:
    """(M, height, width) bool tensor of M RLEs."""
    if not rles:
        return torch.zeros((0, height, width), dtype=torch.bool)
    return torch.from_numpy(mask_util.decode(rles)).permute(2, 0, 1).bool()


def video_predictions(
    dets: VideoDetections, ids: List[List[int]], num_classes: int, top_k: int, score_thresh: float
) -> List[dict]:
    """A video's YTVIS predictions (``VideoTrackAggregator.results``) with the track ids ``ids``
    (per frame, one per detection of ``dets``)."""
    tracks = VideoTrackAggregator(num_classes, dets.length, dets.height, dets.width, top_k, score_thresh)
    for t in range(dets.length):
        probs = torch.from_numpy(dets.class_probs[t].reshape(len(ids[t]), num_classes))
        tracks.add_frame(t, ids[t], probs, _masks(dets.rles[t], dets.height, dets.width))
    return tracks.results()


def _score(dataset_name, videos, ids_per_video, num_classes, top_k, score_thresh, output_dir):
    """Aggregate every video with its labelling, score the split; returns the evaluator's segm
    dict and the YTVIS result entries."""
    evaluator = YTVISEvaluator(dataset_name, output_dir=output_dir, distributed=False)
    for dets, ids in zip(videos, ids_per_video):
        predictions = video_predictions(dets, ids, num_classes, top_k, score_thresh)
        evaluator.process([{"video_id": dets.video_id}], [{"predictions": predictions}])
    return evaluator.evaluate()["segm"], evaluator.predictions


def diagnose(
    cfg,
    model,
    dataset_name: str = None,
    output_dir: str = None,
    link_iou_thresh: float = LINK_IOU_THRESH,
    gt_iou_thresh: float = GT_IOU_THRESH,
    association_score_thresh: float = SCORE_THRESH,
    report_videos: int = 20,
    report_frames: int = 40,
) -> Dict:
    """
    Run ``model`` once over an annotated split (on this process only) and score its detections
    with the model's, IoU-linked and oracle identities.

    Args:
        cfg: the model's config (test input size, ``DATASETS.TEST[0]``).
        model: a video model; its ``num_classes``, ``video_topk`` and ``video_score_thresh``
            aggregate the tracks, as in its own video inference.
        dataset_name: a registered YTVIS-format split with annotations (default DATASETS.TEST[0]).
        output_dir: if given, ``<labelling>/results.json`` + ``submission.zip`` per labelling,
            ``diagnosis.json``, ``diagnosis.md`` and ``report.html`` are written there (atomically).
        link_iou_thresh: IoU linking links a pair when its mask IoU is above this.
        gt_iou_thresh: a detection matches a GT track (oracle, statistics) at mask IoU >= this.
        association_score_thresh: HOTA, DetA, AssA and IDF1 score the detections whose max class
            probability is at least this.
        report_videos, report_frames: report.html (:mod:`.tracking_report`) shows the
            ``report_videos`` videos with the most AP lost to identity, at most ``report_frames``
            frames each; 0 videos: no report.
    Returns:
        dict: dataset, videos, gt_tracks (matched at least once), thresholds, ``rows``:
        {labelling: {AP, AP50, AP75, AR1, AR10, HOTA, DetA, AssA, IDF1 (:mod:`.association`, on
        the detections with a class probability >= ``association_score_thresh``), id_switches,
        fragmentation (mean distinct ids per matched GT track), kept, swap, new}} for labellings
        model, iou_link, oracle; ``reid``: {labelling: re-identification counts
        (:func:`~.reidentification.sum_counts`)} for model and iou_link; ``per_video``:
        [{video_id, AP: {labelling: video AP}, id_switches: {labelling: count}}] ordered by the AP
        lost to identity (oracle minus model); and, for
        a model with ``teacher_forced_frame`` (IAI), ``id_head``: the ID head accuracy on seen GT
        instances with teacher-forced and with inference memory (:mod:`.id_accuracy`).
    """
    dataset_name = dataset_name or cfg.DATASETS.TEST[0]
    records = {r["video_id"]: r for r in get_video_dataset_dicts(dataset_name, filter_empty=False)}
    gt_frames = {vid: _gt_frames(r) for vid, r in records.items()}
    gt_categories = {vid: _gt_categories(r) for vid, r in records.items()}
    videos = []
    # The ID head's answers (IAI models) are collected on this same pass: with the inference
    # memory, and with the teacher-forced memory run in step on the same bottom-up features.
    probe_id_head = hasattr(model, "teacher_forced_frame")
    id_answers = {mode: [] for mode in MODES}
    with inference_context(model), torch.no_grad():
        for batch in build_video_test_loader(cfg, dataset_name):
            for video in batch:
                probe = InferenceMemoryProbe(model, gt_frames[video["video_id"]], gt_iou_thresh) if probe_id_head else None
                videos.append(run_video(model, video, probe))
                if probe_id_head:
                    id_answers["teacher_forced"] += probe.teacher_forced.answers
                    id_answers["inference"] += probe.answers
    logger.info(f"Tracking diagnosis: ran the model on {len(videos)} videos of {dataset_name}")

    labellings = {
        "model": [v.model_ids for v in videos],
        "iou_link": [iou_link_ids(v.rles, link_iou_thresh) for v in videos],
        "oracle": [oracle_ids(v.rles, gt_frames[v.video_id], gt_iou_thresh) for v in videos],
    }
    matches = [match_to_gt(v.rles, gt_frames[v.video_id], gt_iou_thresh) for v in videos]
    confident = [_confident(v, association_score_thresh) for v in videos]
    rows, reid = OrderedDict(), OrderedDict()
    gt = load_ground_truth(MetadataCatalog.get(dataset_name).json_file)
    num_gt_tracks = 0
    video_aps, video_switches = {}, {}
    for key in LABELLINGS:
        sub_dir = os.path.join(output_dir, key) if output_dir else None
        segm, predictions = _score(dataset_name, videos, labellings[key], model.num_classes, model.video_topk,
                                   model.video_score_thresh, sub_dir)
        video_aps[key] = per_video_ap(gt, load_results(predictions, gt))
        row = OrderedDict((name, float(segm[name])) for name in AP_COLUMNS)
        row.update(association_metrics([
            sequence_data(ids, v.rles, gt_frames[v.video_id], keep)
            for v, ids, keep in zip(videos, labellings[key], confident)
        ]))
        counts = {"id_switches": 0, "kept": 0, "swap": 0, "new": 0}
        fragments = []
        video_switches[key] = []
        for ids, match in zip(labellings[key], matches):
            stats = tracking_statistics(ids, match)
            for name in counts:
                counts[name] += stats[name]
            fragments.extend(stats["fragments"].values())
            video_switches[key].append(stats["switches"])
        num_gt_tracks = len(fragments)
        row["id_switches"] = counts["id_switches"]
        row["fragmentation"] = float(np.mean(fragments)) if fragments else float("nan")
        row.update((name, counts[name]) for name in ("kept", "swap", "new"))
        rows[key] = row
        if key in REID_LABELLINGS:
            events = [e for v, ids, match in zip(videos, labellings[key], matches)
                      for e in returns(ids, match, gt_frames[v.video_id], gt_categories[v.video_id])]
            reid[key] = sum_counts([reid_counts(events)])
    report_videos_list = [
        ReportVideo(v.video_id, records[v.video_id]["file_names"], v.height, v.width, gt_frames[v.video_id], v.rles,
                    {key: labellings[key][i] for key in LABELLINGS}, {key: video_switches[key][i] for key in LABELLINGS},
                    {key: video_aps[key][v.video_id] for key in LABELLINGS})
        for i, v in enumerate(videos)
    ]
    result = {
        "dataset": dataset_name,
        "videos": len(videos),
        "gt_tracks": num_gt_tracks,
        "link_iou_thresh": link_iou_thresh,
        "gt_iou_thresh": gt_iou_thresh,
        "association_score_thresh": association_score_thresh,
        "rows": rows,
        "reid": reid,
        "per_video": [
            {"video_id": v.video_id, "AP": v.ap, "id_switches": {key: len(v.switches[key]) for key in LABELLINGS}}
            for v in sorted(report_videos_list, key=ap_lost_order)
        ],
    }
    if probe_id_head:
        result["id_head"] = id_head_summary(id_answers, model.num_ids)
    if output_dir:
        text = json.dumps(result, indent=2)
        table = diagnosis_table(result) + "\n"
        atomic_write(os.path.join(output_dir, "diagnosis.json"), lambda f: f.write(text), "w")
        atomic_write(os.path.join(output_dir, "diagnosis.md"), lambda f: f.write(table), "w")
        if report_videos:
            write_report(os.path.join(output_dir, "report.html"), result, report_videos_list,
                         max_videos=report_videos, max_frames=report_frames)
    return result


def diagnosis_table(result: Dict) -> str:
    """Markdown table of a :func:`diagnose` result, one row per labelling, and a legend line."""
    rows = []
    for key, row in result["rows"].items():
        rows.append([LABELLINGS[key]] + [f"{row[c]:.1f}" if isinstance(row[c], float) else row[c]
                                         for c in TABLE_COLUMNS])
    table = tabulate(rows, headers=["identities", *TABLE_COLUMNS], tablefmt="pipe")
    return (
        f"{table}\n\n{result['dataset']}: {result['videos']} videos, {result['gt_tracks']} GT tracks "
        f"matched (mask IoU >= {result['gt_iou_thresh']}); IoU linking at mask IoU > "
        f"{result['link_iou_thresh']}. fragmentation = mean distinct ids per matched GT track; "
        "kept / swap / new = detections continuing a GT track matched in the previous frame that "
        "keep its id / take another existing id / start a new id. HOTA, DetA, AssA, IDF1: TrackEval, "
        f"class-agnostic, on the detections with class probability >= {result['association_score_thresh']}."
        "\n\n" + reid_table(result["reid"])
    ) + (("\n\n" + id_head_table(result["id_head"])) if "id_head" in result else "")


def reid_table(reid: Dict) -> str:
    """Markdown table of the re-identification counts of :func:`diagnose`, and a legend."""
    rows = []
    for key, counts in reid.items():
        for bucket in (*GAP_BUCKETS, "all"):
            cells = []
            for side in ("alone", "lookalike"):
                c = counts[bucket][side]
                n = sum(c.values())
                cells += [n, f"{100 * c['kept'] / n:.0f}" if n else "-"] + [c[o] for o in OUTCOMES]
            rows.append([LABELLINGS[key], bucket] + cells)
    headers = ["identities", "gap k", "returns", "kept %", *OUTCOMES,
               "returns (look-alike)", "kept %", *OUTCOMES]
    return (
        tabulate(rows, headers=headers, tablefmt="pipe")
        + "\n\nReturns: a GT track matched again after k >= 1 frames unmatched (hidden, out of frame or "
        "missed); kept = its id before the gap, new = an id never seen before, other = an existing id. "
        "Look-alike: another instance of its class is visible at the return frame."
    )


def id_head_table(id_head: Dict) -> str:
    """Markdown table of :func:`~iai_d2.evaluation.id_accuracy.id_head_summary` and a legend."""
    rows = [
        [MODES[mode], r["seen"]] + [f"{100 * r[c]:.1f}" for c in ("accuracy", "prior", "answered_new", "answered_other")]
        for mode, r in id_head.items()
    ]
    table = tabulate(
        rows, headers=["ID head on seen GT instances", "seen", "accuracy %", "slot prior %", "answered new %",
                       "answered other slot %"], tablefmt="pipe"
    )
    return (
        f"{table}\n\nseen = GT instances whose identity the memory holds (teacher forced: GT masks "
        "written under first-appearance slots; inference: the model's own detections and IDs); "
        "slot prior = always answering the most frequent correct slot."
    )
