"""
Tracking by detection (MaskTrack R-CNN's paradigm) as a mixin shared by every detector of the
baseline, on the machinery every online video model shares (``iai_d2.modeling.OnlineVideoModel``:
the clip training loop, de-overlapping, video inference): training on frame pairs (reference,
key), per-frame matching to a :class:`TrackMemory`. A detector supplies two hooks::

    def _frame_losses(self, images, features, targets, references, make_references): ...
        # (dict of losses, this frame's references or None)
    def _frame_detections(self, images, features, height, width): ...
        # Instances at (height, width) with embeddings and bool pred_masks
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.structures import ImageList, Instances

from iai_d2.modeling.online import OnlineVideoModel, online_config

from .matching import TrackMemory

__all__ = ["TrackVideoModel", "TrackVideoState", "tracking_config"]

# Per image of a frame: (embeddings (R, D), gt_ids (R,)) of its GT instances.
References = List[Tuple[torch.Tensor, torch.Tensor]]


@dataclass
class TrackVideoState:
    """What a tracking-by-detection model carries from one frame of a video to the next."""

    tracks: TrackMemory
    frame_idx: int = 0


@dataclass
class _PairState:
    """What the training loop carries from one frame of a batch of clips to the next."""

    num_frames: int
    references: Optional[References] = None  # the previous frame's


def tracking_config(cfg, num_classes: int) -> Dict:
    """The keyword arguments of :meth:`TrackVideoModel._setup_tracking` from ``cfg.MODEL.TRACK_HEAD``."""
    inf = cfg.MODEL.TRACK_HEAD.INFERENCE
    return dict(
        num_classes=num_classes,
        match_coeffs=inf.MATCH_COEFFS,
        max_age=inf.MAX_AGE,
        **online_config(cfg, inf),
    )


class TrackVideoModel(OnlineVideoModel):
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

    MIN_CLIP_FRAMES = 2

    def _setup_tracking(
        self,
        *,
        num_classes: int,
        match_coeffs: Sequence[float],
        max_age: int,
        **online,
    ) -> None:
        """
        Args:
            num_classes: number of foreground categories.
            match_coeffs: (a, b, g) of the matching score (see :func:`match_scores`).
            max_age: a track unseen for more than this many frames is forgotten.
            online: arguments of :meth:`OnlineVideoModel._setup_online` (de-overlapping, mask
                threshold, video-level selection).
        """
        self.num_classes = num_classes
        self.match_coeffs = tuple(match_coeffs)
        self.max_age = max_age
        self._setup_online(**online)

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

    # ------------------------------------------------------------------ training (clip hooks)
    def _start_clips(self, clips: List[Dict], targets: List[List[Instances]]) -> _PairState:
        """No references before the first frame."""
        return _PairState(num_frames=len(targets))

    def _clip_frame_losses(
        self, state: _PairState, t: int, images: ImageList, features: Dict[str, torch.Tensor], targets: List[Instances]
    ) -> Dict[str, torch.Tensor]:
        """Frame t as the key of the previous frame's references and the reference of the next."""
        losses, state.references = self._frame_losses(
            images, features, targets, state.references, make_references=t + 1 < state.num_frames
        )
        return losses

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
        images, features = self._single_frame(image)
        detections = self._remove_overlaps(self._frame_detections(images, features, height, width))
        detections.ID = state.tracks.update(
            detections.embeddings,
            detections.scores,
            detections.pred_boxes.tensor,
            detections.pred_classes,
            state.frame_idx,
        )
        state.frame_idx += 1
        return detections
