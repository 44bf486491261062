"""Video-level aggregation of per-frame tracked detections into YouTube-VIS predictions."""
from typing import Dict, List

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.utils import comm
from tqdm import tqdm

from ..utils import json_rle

__all__ = ["VideoTrackAggregator", "track_video"]


class VideoTrackAggregator:
    """
    Collects one video's tracks frame by frame and turns them into prediction dicts
    ``{"score", "category_id", "segmentations"}``.

    Masks are RLE-encoded as they arrive and class probabilities are summed, so memory grows
    with the number of (track, frame) detections, never with T x H x W. The score of a
    (track, class) pair is the mean of the class probability over ALL frames of the video
    (frames where the track is absent count as 0).
    """

    def __init__(
        self,
        num_classes: int,
        length: int,
        height: int,
        width: int,
        top_k: int,
        score_thresh: float,
    ):
        """
        Args:
            num_classes: K foreground classes (contiguous ids 0..K-1).
            length: number of frames T of the video.
            height, width: original video size; masks must have this size.
            top_k: at most this many (track, class) pairs are returned.
            score_thresh: pairs must score strictly above this.
        """
        if num_classes < 1 or length < 1 or height < 1 or width < 1 or top_k < 1:
            raise ValueError(
                "VideoTrackAggregator: num_classes, length, height, width and top_k must be "
                f"positive, got {num_classes}, {length}, {height}, {width}, {top_k}"
            )
        self.num_classes = num_classes
        self.length = length
        self.height = height
        self.width = width
        self.top_k = top_k
        self.score_thresh = score_thresh
        self._rles: Dict[int, Dict[int, dict]] = {}  # track id -> {frame: RLE}
        self._score_sums: Dict[int, np.ndarray] = {}  # track id -> (num_classes,) float64
        self._last_frame = -1

    @property
    def num_tracks(self) -> int:
        """Number of distinct track ids seen so far."""
        return len(self._rles)

    def add_frame(
        self, frame_idx: int, track_ids: List[int], class_probs: torch.Tensor, masks: torch.Tensor
    ) -> None:
        """
        Args:
            frame_idx: frame index in [0, length); frames must arrive in non-decreasing order
                and a track may appear once per frame.
            track_ids: K track ids (>= 0).
            class_probs: (K, num_classes) class probabilities of the detections.
            masks: BoolTensor (K, height, width) binary masks at the original video size.
        """
        if not 0 <= frame_idx < self.length:
            raise ValueError(
                f"VideoTrackAggregator: frame {frame_idx} is outside the video "
                f"(length {self.length})"
            )
        if frame_idx < self._last_frame:
            raise ValueError(
                f"VideoTrackAggregator: frame {frame_idx} arrived after frame {self._last_frame}"
            )
        num_dets = len(track_ids)
        if tuple(class_probs.shape) != (num_dets, self.num_classes):
            raise ValueError(
                f"VideoTrackAggregator: frame {frame_idx}: class_probs must have shape "
                f"({num_dets}, {self.num_classes}), got {tuple(class_probs.shape)}"
            )
        if masks.dtype != torch.bool or tuple(masks.shape) != (num_dets, self.height, self.width):
            raise ValueError(
                f"VideoTrackAggregator: frame {frame_idx}: masks must be a BoolTensor of shape "
                f"({num_dets}, {self.height}, {self.width}), got {masks.dtype} {tuple(masks.shape)}"
            )
        for track_id in track_ids:
            if track_id < 0:
                raise ValueError(
                    f"VideoTrackAggregator: frame {frame_idx}: invalid track id {track_id}"
                )
            # Frames arrive in order (checked above), so a repeat can only be this same frame.
            if frame_idx in self._rles.get(track_id, {}):
                raise ValueError(
                    f"VideoTrackAggregator: frame {frame_idx}: track {track_id} was already "
                    f"added at frame {frame_idx}"
                )
        if len(set(track_ids)) != num_dets:
            raise ValueError(
                f"VideoTrackAggregator: frame {frame_idx}: duplicate track ids {list(track_ids)}"
            )
        self._last_frame = frame_idx
        if num_dets == 0:
            return

        masks_np = np.asfortranarray(masks.permute(1, 2, 0).cpu().numpy().astype(np.uint8))
        rles = mask_util.encode(masks_np)  # K RLEs of a (H, W, K) Fortran array
        probs = class_probs.detach().cpu().double().numpy()
        for track_id, rle, prob in zip(track_ids, rles, probs):
            self._rles.setdefault(track_id, {})[frame_idx] = json_rle(rle)
            self._score_sums[track_id] = self._score_sums.get(track_id, 0.0) + prob

    def results(self) -> List[dict]:
        """
        Returns:
            Up to top_k dicts {"score": float, "category_id": int, "segmentations":
            [RLE dict or None] * length}, score descending; a track may appear once per class.
        """
        if not self._rles:
            return []
        track_ids = list(self._rles)
        scores = np.stack([self._score_sums[t] for t in track_ids]) / self.length  # (M, C)
        flat = scores.reshape(-1)
        order = np.argsort(-flat, kind="stable")[: self.top_k]
        predictions = []
        for idx in order.tolist():
            if flat[idx] <= self.score_thresh:
                break
            track_id = track_ids[idx // self.num_classes]
            frames = self._rles[track_id]
            predictions.append(
                {
                    "score": float(flat[idx]),
                    "category_id": idx % self.num_classes,
                    "segmentations": [frames.get(t) for t in range(self.length)],
                }
            )
        return predictions


def track_video(model, video: Dict, top_k: int, score_thresh: float, progress_bar: bool = False) -> Dict:
    """
    Online inference over one test video with any model exposing ``num_classes``,
    ``new_video_state()`` and ``inference_frame(state, image, height, width)`` (returning
    Instances with ``ID``, ``class_probs`` (M, K) and bool ``pred_masks`` (M, height, width)).

    Args:
        video: a test record with ``frames`` (lazy sequence of (3, h, w) tensors), ``video_id``,
            ``length``, ``height``, ``width``.
        top_k, score_thresh: video-level (track, class) selection of :class:`VideoTrackAggregator`.
        progress_bar: show a per-frame progress bar (main process only).
    Returns:
        dict with video_id, length, height, width and ``predictions`` (see
        :meth:`VideoTrackAggregator.results`).
    """
    frames = video["frames"]
    length, height, width = video["length"], video["height"], video["width"]
    if len(frames) != length:
        raise ValueError(f"Video {video['video_id']}: {len(frames)} frames but length={length}.")
    state = model.new_video_state()
    tracks = VideoTrackAggregator(model.num_classes, length, height, width, top_k, score_thresh)
    progress = tqdm(
        total=length,
        desc=f"video {video['video_id']}",
        unit="frame",
        leave=False,
        disable=not (progress_bar and comm.is_main_process()),
    )
    for t in range(length):
        detections = model.inference_frame(state, frames[t], height, width)
        tracks.add_frame(t, detections.ID.tolist(), detections.class_probs, detections.pred_masks)
        progress.update(1)
    progress.close()
    return {
        "video_id": video["video_id"],
        "length": length,
        "height": height,
        "width": width,
        "predictions": tracks.results(),
    }
