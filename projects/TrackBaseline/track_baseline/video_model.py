"""
Tracking by detection (MaskTrack R-CNN's paradigm) as a mixin shared by every detector of the
baseline: training on frame pairs, per-frame matching to a :class:`TrackMemory`, video inference.
A detector supplies two hooks::

    def _frame_losses(self, images, features, targets, references, make_references): ...
        # (dict of losses, this frame's references or None)
    def _frame_detections(self, images, features, height, width): ...
        # Instances at (height, width) with embeddings and bool pred_masks
"""
from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.structures import ImageList, Instances

from iai_d2.inference.id_assignment import remove_overlaps
from iai_d2.inference.tracks import track_video

from .matching import TrackMemory

__all__ = ["TrackVideoModel", "TrackVideoState", "tracking_config"]

# Per image of a frame: (embeddings (R, D), gt_ids (R,)) of its GT instances.
References = List[Tuple[torch.Tensor, torch.Tensor]]


@dataclass
class TrackVideoState:
    """What a tracking-by-detection model carries from one frame of a video to the next."""

    tracks: TrackMemory
    frame_idx: int = 0


def tracking_config(cfg, num_classes: int) -> Dict:
    """The keyword arguments of :meth:`TrackVideoModel._setup_tracking` from ``cfg.MODEL.TRACK_HEAD``."""
    inf = cfg.MODEL.TRACK_HEAD.INFERENCE
    return dict(
        num_classes=num_classes,
        match_coeffs=inf.MATCH_COEFFS,
        max_age=inf.MAX_AGE,
        min_mask_keep=inf.MIN_MASK_KEEP,
        mask_threshold=inf.MASK_THRESH,
        video_topk=inf.VIDEO_TOPK,
        video_score_thresh=inf.VIDEO_SCORE_THRESH,
        progress_bar=cfg.TEST.PROGRESS_BAR,
    )


class TrackVideoModel:
    """
    Mixin (put it before the detector class) giving a detector with a tracking embedding the
    tracking-by-detection video behaviour. The detector provides ``backbone``, ``device`` and
    ``preprocess_image``, and the hooks :meth:`_frame_losses` and :meth:`_frame_detections`.

    Training input: clips of T >= 2 frames from ``YTVISClipDatasetMapper`` (``gt_ids`` shared by
    the frames of a clip); the backbone runs once on all B*T frames, detection losses are
    averaged over the T frames and ``loss_track`` over the T-1 pairs (frame t-1 = reference,
    frame t = key). Test input: videos with lazily decoded ``frames``, run one frame at a time:
    detections (masks made disjoint) are matched to the video's tracks by :class:`TrackMemory`.
    """

    def _setup_tracking(
        self,
        *,
        num_classes: int,
        match_coeffs: Sequence[float],
        max_age: int,
        min_mask_keep: float,
        mask_threshold: float,
        video_topk: int,
        video_score_thresh: float,
        progress_bar: bool = False,
    ) -> None:
        """
        Args:
            num_classes: number of foreground categories.
            match_coeffs: (a, b, g) of the matching score (see :func:`match_scores`).
            max_age: a track unseen for more than this many frames is forgotten.
            min_mask_keep: drop a detection keeping less than this fraction of its mask after
                de-overlapping.
            mask_threshold: binarisation threshold of mask probabilities.
            video_topk, video_score_thresh: video-level (track, class) selection.
            progress_bar: show a per-frame progress bar during video inference.
        """
        self.num_classes = num_classes
        self.match_coeffs = tuple(match_coeffs)
        self.max_age = max_age
        self.min_mask_keep = min_mask_keep
        self.mask_threshold = mask_threshold
        self.video_topk = video_topk
        self.video_score_thresh = video_score_thresh
        self.progress_bar = progress_bar

    # ------------------------------------------------------------------ detector hooks
    def _frame_losses(
        self,
        images: ImageList,
        features: Dict[str, torch.Tensor],
        targets: List[Instances],
        references: Optional[References],
        make_references: bool,
    ) -> Tuple[Dict[str, torch.Tensor], Optional[References]]:
        """
        Losses of one frame per clip: the detector's, plus ``loss_track`` of the frame's samples
        against ``references`` (the previous frame's) when given; and, if ``make_references``,
        this frame's references for the next frame (else None). Targets have gt_ids.
        """
        raise NotImplementedError

    def _frame_detections(
        self, images: ImageList, features: Dict[str, torch.Tensor], height: int, width: int
    ) -> Instances:
        """Detections of one frame (eval mode) at (height, width): pred_boxes, scores, pred_classes,
        class_probs (M, K), embeddings (M, D), pred_masks (M, height, width) bool."""
        raise NotImplementedError

    def forward(self, batched_inputs: List[Dict]):
        if not self.training:
            return [self.inference_video(video) for video in batched_inputs]
        return self.forward_clips(batched_inputs)

    # ------------------------------------------------------------------ training
    def forward_clips(self, clips: List[Dict]) -> Dict[str, torch.Tensor]:
        """
        Args:
            clips: B clip dicts, each with ``image`` (T >= 2 tensors (3, h, w)) and ``instances``
                (T Instances with gt_boxes, gt_classes, gt_masks, gt_ids).
        Returns:
            dict of losses: detection losses averaged over the T frames, ``loss_track`` over the
            T-1 (reference, key) pairs.
        """
        num_frames = len(clips[0]["image"])
        if num_frames < 2 or any(len(c["image"]) != num_frames for c in clips):
            raise ValueError(
                f"{type(self).__name__} trains on clips of INPUT.SAMPLING_FRAME_NUM >= 2 frames, the "
                f"same for every clip of a batch; got {[len(c['image']) for c in clips]} frames "
                f"(videos {[c.get('video_id') for c in clips]})"
            )
        batch = len(clips)
        # Frame-major order: [f0 of every clip, f1 of every clip, ...].
        images = self.preprocess_image([{"image": c["image"][t]} for t in range(num_frames) for c in clips])
        gt = [[c["instances"][t].to(self.device) for c in clips] for t in range(num_frames)]
        features = self.backbone(images.tensor)

        losses = defaultdict(list)
        references = None
        for t in range(num_frames):
            sl = slice(t * batch, (t + 1) * batch)
            frame_images = ImageList(images.tensor[sl], images.image_sizes[sl])
            frame_features = {k: v[sl] for k, v in features.items()}
            frame_losses, references = self._frame_losses(
                frame_images, frame_features, gt[t], references, make_references=t + 1 < num_frames
            )
            for k, v in frame_losses.items():
                losses[k].append(v)
        return {k: torch.stack(v).mean() for k, v in losses.items()}

    # ------------------------------------------------------------------ inference
    def new_video_state(self) -> TrackVideoState:
        """A fresh state for a new video (no tracks)."""
        return TrackVideoState(tracks=TrackMemory(self.match_coeffs, self.max_age))

    @torch.no_grad()
    def inference_frame(
        self, state: TrackVideoState, image: torch.Tensor, height: int, width: int
    ) -> Instances:
        """
        Detect the instances of the next frame of a video, match them to the video's tracks and
        update ``state``.

        Args:
            image: (3, h, w) frame in the model's input format, already resized.
            height, width: output resolution (the original frame size).
        Returns:
            Instances at (height, width) with pred_boxes, scores, pred_classes, class_probs (M, K),
            embeddings (M, D), pred_masks (M, height, width) bool, and ID (M,) track identities.
        """
        images = self.preprocess_image([{"image": image}])
        features = self.backbone(images.tensor)
        detections = self._frame_detections(images, features, height, width)
        keep, masks = remove_overlaps(detections.pred_masks, self.min_mask_keep)
        detections = detections[keep]
        detections.pred_masks = masks
        detections.ID = state.tracks.update(
            detections.embeddings,
            detections.scores,
            detections.pred_boxes.tensor,
            detections.pred_classes,
            state.frame_idx,
        )
        state.frame_idx += 1
        return detections

    def inference_video(self, video: Dict) -> Dict:
        """
        Args:
            video: a test record with ``frames`` (lazy sequence of (3, h, w) tensors), ``video_id``,
                ``length``, ``height``, ``width``.
        Returns:
            the same dict as ``IAIRCNN.inference_video``: video_id, length, height, width and
            ``predictions`` (score, contiguous category_id, per-frame RLE or None).
        """
        return track_video(self, video, self.video_topk, self.video_score_thresh, self.progress_bar)
