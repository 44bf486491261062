"""MaskTrack R-CNN-style matching of a frame's detections to the tracked instances of a video.

Every detection scores each tracked instance and a "new instance" option: the embedding
affinity (dot product, 0 for "new") goes through a softmax over [new, tracks], and at inference
its log-probability is combined with the detection score, the box IoU and class consistency.
"""
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.structures import Boxes, pairwise_iou
from detectron2.utils.events import get_event_storage
from scipy.optimize import linear_sum_assignment

__all__ = ["affinity_logits", "track_loss", "match_scores", "assign_tracks", "TrackMemory"]

# Cost of a forbidden (detection, "new" column of another detection) pair in the assignment.
_FORBIDDEN = 1e9


def affinity_logits(embeddings: torch.Tensor, track_embeddings: torch.Tensor) -> torch.Tensor:
    """
    Args:
        embeddings: (M, D) embeddings of the detections.
        track_embeddings: (T, D) embeddings of the tracked (reference) instances.
    Returns:
        (M, T + 1) logits: column 0 is "new instance" (logit 0), column 1 + j the dot product with
        track j.
    """
    dots = embeddings @ track_embeddings.t()
    return torch.cat([dots.new_zeros((dots.shape[0], 1)), dots], dim=1)


def track_loss(
    keys: List[Tuple[torch.Tensor, torch.Tensor]],
    references: List[Tuple[torch.Tensor, torch.Tensor]],
    weight: float = 1.0,
) -> Dict[str, torch.Tensor]:
    """
    MaskTrack R-CNN's pair loss: every key-frame embedding is classified over [new, reference
    instances] (logits of :func:`affinity_logits`); the target is the reference instance with the
    same identity, or "new". Logs the accuracy as ``track_head/accuracy``.

    Args:
        keys: per image, (embeddings (M_i, D), gt_ids (M_i,)) of the key frame's samples.
        references: per image, (embeddings (R_i, D), gt_ids (R_i,)) of the reference frame's instances.
        weight: loss multiplier.
    Returns:
        {"loss_track": cross-entropy summed over the samples / their number, times ``weight``}.
    """
    num_keys = sum(len(ids) for _, ids in keys)
    if num_keys == 0:
        return {"loss_track": torch.cat([emb for emb, _ in keys]).sum() * 0.0}
    total, correct = keys[0][0].new_zeros(()), 0
    for (emb, ids), (ref_emb, ref_ids) in zip(keys, references):
        if len(ids) == 0:
            continue
        logits = affinity_logits(emb, ref_emb)
        same = ids[:, None] == ref_ids[None, :]  # (M, R), one True at most per row
        target = torch.where(same.any(dim=1), same.float().argmax(dim=1) + 1, 0)
        total = total + F.cross_entropy(logits, target, reduction="sum")
        correct += int((logits.argmax(dim=1) == target).sum())
    get_event_storage().put_scalar("track_head/accuracy", correct / num_keys)
    return {"loss_track": total / num_keys * weight}


def match_scores(
    log_probs: torch.Tensor,
    det_scores: torch.Tensor,
    det_boxes: torch.Tensor,
    det_classes: torch.Tensor,
    track_boxes: torch.Tensor,
    track_classes: torch.Tensor,
    coeffs: Sequence[float],
) -> torch.Tensor:
    """
    MaskTrack R-CNN's matching score ``log p + a * log(score) + b * IoU + g * [same class]``;
    the IoU and class terms are 0 for the "new" column. ``a * log(score)`` is the same for all
    options of a detection, so it changes no assignment of :func:`assign_tracks`; it is kept so
    the scores are MaskTrack R-CNN's (on synthetic_vis_val, adding it to the track columns only
    gave 33.9 vs 34.6 AP).

    Args:
        log_probs: (M, T + 1) log-softmax of :func:`affinity_logits`.
        det_scores: (M,) detection scores in (0, 1].
        det_boxes, track_boxes: (M, 4), (T, 4) XYXY boxes in the same image frame.
        det_classes, track_classes: (M,), (T,) class indices.
        coeffs: (a, b, g).
    Returns:
        (M, T + 1) scores, column 0 = new.
    """
    a, b, g = coeffs
    iou = pairwise_iou(Boxes(det_boxes), Boxes(track_boxes))
    same_class = (det_classes[:, None] == track_classes[None, :]).to(log_probs.dtype)
    scores = log_probs + a * torch.log(det_scores.clamp(min=1e-6))[:, None]
    scores[:, 1:] += b * iou + g * same_class
    return scores


def assign_tracks(scores: torch.Tensor) -> torch.Tensor:
    """
    Unique assignment maximising the summed score: each detection takes one track or "new",
    each track is taken by at most one detection (Hungarian on [tracks | one "new" column per
    detection]; MaskTrack R-CNN resolves the same conflicts greedily).

    Args:
        scores: (M, T + 1) from :func:`match_scores`, column 0 = new.
    Returns:
        LongTensor (M,): index of the matched track in 0..T-1, or -1 for a new instance.
    """
    num_dets, num_tracks = scores.shape[0], scores.shape[1] - 1
    if num_dets == 0 or num_tracks == 0:
        return torch.full((num_dets,), -1, dtype=torch.long, device=scores.device)
    values = scores.detach().double().cpu().numpy()
    new_cost = np.full((num_dets, num_dets), _FORBIDDEN)
    np.fill_diagonal(new_cost, -values[:, 0])
    rows, cols = linear_sum_assignment(np.concatenate([-values[:, 1:], new_cost], axis=1))
    match = np.full(num_dets, -1, dtype=np.int64)
    is_track = cols < num_tracks
    match[rows[is_track]] = cols[is_track]
    return torch.as_tensor(match, device=scores.device)


class TrackMemory:
    """
    The tracked instances of one video: for each, the embedding, box and class of its latest
    detection (MaskTrack R-CNN replaces them on every match), its output ID and the last frame
    it was seen. Tracks unseen for more than ``max_age`` frames are forgotten, so memory stays
    bounded on streams of any length.
    """

    def __init__(self, match_coeffs: Sequence[float], max_age: int):
        if max_age < 1:
            raise ValueError(f"MODEL.TRACK_HEAD.INFERENCE.MAX_AGE must be >= 1, got {max_age}")
        self.match_coeffs = tuple(match_coeffs)
        self.max_age = max_age
        self.embeddings = self.boxes = self.classes = self.ids = self.last_seen = None
        self.next_id = 0

    def __len__(self) -> int:
        return 0 if self.ids is None else len(self.ids)

    def update(
        self,
        embeddings: torch.Tensor,
        scores: torch.Tensor,
        boxes: torch.Tensor,
        classes: torch.Tensor,
        frame_idx: int,
    ) -> torch.Tensor:
        """
        Match one frame's detections to the tracks, start new tracks for the unmatched ones and
        refresh the matched tracks.

        Args:
            embeddings: (M, D); scores: (M,); boxes: (M, 4) XYXY; classes: (M,).
            frame_idx: index of this frame in the video (non-decreasing between calls).
        Returns:
            LongTensor (M,) of track IDs, distinct within the frame, stable across frames.
        """
        if self.ids is None:
            self.embeddings = embeddings.new_zeros((0, embeddings.shape[1]))
            self.boxes = boxes.new_zeros((0, 4))
            self.classes = classes.new_zeros((0,))
            self.ids = classes.new_zeros((0,))
            self.last_seen = classes.new_zeros((0,))
        alive = frame_idx - self.last_seen <= self.max_age
        if not bool(alive.all()):
            self._keep(alive)

        log_probs = F.log_softmax(affinity_logits(embeddings, self.embeddings), dim=1)
        scores = match_scores(
            log_probs, scores, boxes, classes, self.boxes, self.classes, self.match_coeffs
        )
        match = assign_tracks(scores)
        matched = match >= 0
        track_ids = torch.empty_like(match)
        track_ids[matched] = self.ids[match[matched]]
        num_new = int((~matched).sum())
        new_ids = torch.arange(self.next_id, self.next_id + num_new, device=match.device)
        track_ids[~matched] = new_ids
        self.next_id += num_new

        rows = match[matched]
        self.embeddings[rows] = embeddings[matched]
        self.boxes[rows] = boxes[matched]
        self.classes[rows] = classes[matched]
        self.last_seen[rows] = frame_idx
        self.embeddings = torch.cat([self.embeddings, embeddings[~matched]])
        self.boxes = torch.cat([self.boxes, boxes[~matched]])
        self.classes = torch.cat([self.classes, classes[~matched]])
        self.ids = torch.cat([self.ids, new_ids])
        self.last_seen = torch.cat([self.last_seen, torch.full_like(new_ids, frame_idx)])
        return track_ids

    def _keep(self, mask: torch.Tensor) -> None:
        """Keep only the tracks where ``mask`` (T,) is True."""
        self.embeddings, self.boxes = self.embeddings[mask], self.boxes[mask]
        self.classes, self.ids, self.last_seen = self.classes[mask], self.ids[mask], self.last_seen[mask]
