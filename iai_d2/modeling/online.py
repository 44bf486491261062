"""
The video machinery every online video model shares, whatever decides its identities: the
forward dispatch, the frame-major clip training loop, the per-frame de-overlapping and the
video-level aggregation. A video model mixes in :class:`OnlineVideoModel` before its detector
class and implements the online protocol (the one ``track_video``, the predictors, the tracking
diagnosis and the benchmarks call)::

    def new_video_state(self): ...                                   # a fresh per-video state
    def inference_frame(self, state, image, height, width): ...      # Instances with ID (M,)

and, when it trains on clips, one hook (two more are optional)::

    def _clip_frame_losses(self, state, t, images, features, targets): ...  # dict of losses
    def _start_clips(self, clips, targets): ...      # the state the frames of a batch share
    def _clip_features(self, images): ...            # features of all B*T frames at once

Users: IAI (``IAIVideoModel``: IAIRCNN, IAICondInst), tracking by detection (``TrackVideoModel``:
TrackRCNN, TrackCondInst), IoU linking (``IoULinkRCNN``) and query matching
(``QueryMatchMask2Former``); the last two train on images (``TRAINS_ON_CLIPS = False``).
"""
from collections import defaultdict
from typing import Dict, List, Optional, Tuple

import torch
from detectron2.config import CfgNode
from detectron2.structures import ImageList, Instances

from ..inference.id_assignment import remove_overlaps
from ..inference.tracks import track_video

__all__ = ["OnlineVideoModel", "online_config"]


def online_config(cfg: CfgNode, inference: CfgNode, *, frame_masks: bool = True) -> Dict:
    """
    The keyword arguments of :meth:`OnlineVideoModel._setup_online`.

    Args:
        cfg: the config (``TEST.PROGRESS_BAR``).
        inference: the model's inference node (``MODEL.IAI.INFERENCE``, ``MODEL.TRACK_HEAD.INFERENCE``)
            with VIDEO_TOPK and VIDEO_SCORE_THRESH and, with ``frame_masks``, MIN_MASK_KEEP and
            MASK_THRESH.
        frame_masks: the model binarises its detections' masks at MASK_THRESH and makes them
            disjoint (:meth:`OnlineVideoModel._remove_overlaps`); False for a model that keeps its
            detector's own masks (query matching).
    """
    kwargs = dict(
        video_topk=inference.VIDEO_TOPK,
        video_score_thresh=inference.VIDEO_SCORE_THRESH,
        progress_bar=cfg.TEST.PROGRESS_BAR,
    )
    if frame_masks:
        kwargs.update(min_mask_keep=inference.MIN_MASK_KEEP, mask_threshold=inference.MASK_THRESH)
    return kwargs


class OnlineVideoModel:
    """
    Mixin (put it before the detector class) making a detector an online video model. The
    detector provides ``backbone``, ``device``, ``preprocess_image`` and its own ``forward`` (used
    for images); the model provides ``new_video_state`` / ``inference_frame`` and, when
    ``TRAINS_ON_CLIPS``, the clip hooks (see the module docstring).

    Input of ``forward``:
        training: clips of T >= ``MIN_CLIP_FRAMES`` frames (``YTVISClipDatasetMapper``) when
            ``TRAINS_ON_CLIPS``, else the detector's images;
        test: videos with lazily decoded ``frames`` (the video test loader) -> :meth:`inference_video`;
            images -> the detector's own inference.
    """

    TRAINS_ON_CLIPS: bool = True
    MIN_CLIP_FRAMES: int = 1

    def _setup_online(
        self,
        *,
        video_topk: int,
        video_score_thresh: float,
        progress_bar: bool = False,
        min_mask_keep: Optional[float] = None,
        mask_threshold: Optional[float] = None,
    ) -> None:
        """
        Args:
            video_topk, video_score_thresh: video-level (track, class) selection.
            progress_bar: show a per-frame progress bar during video inference.
            min_mask_keep: drop a detection keeping less than this fraction of its mask after
                de-overlapping (None: the model does not de-overlap).
            mask_threshold: binarisation threshold of mask probabilities (None: the detector's own).
        """
        self.video_topk = video_topk
        self.video_score_thresh = video_score_thresh
        self.progress_bar = progress_bar
        if min_mask_keep is not None:
            self.min_mask_keep = min_mask_keep
        if mask_threshold is not None:
            self.mask_threshold = mask_threshold

    # ------------------------------------------------------------------ the online protocol
    def new_video_state(self):
        """A fresh state for a new video (no tracks)."""
        raise NotImplementedError

    def inference_frame(self, state, image: torch.Tensor, height: int, width: int) -> Instances:
        """
        Process the next frame of a video and update ``state``.

        Args:
            image: (3, h, w) frame in the model's input format, already resized.
            height, width: output resolution (the original frame size).
        Returns:
            Instances at (height, width) with scores, pred_classes, class_probs (M, K), pred_masks
            (M, height, width) bool and ID (M,) track identities.
        """
        raise NotImplementedError

    def forward(self, batched_inputs: List[Dict]):
        if self.training:
            if self.TRAINS_ON_CLIPS:
                return self.forward_clips(batched_inputs)
            return super().forward(batched_inputs)
        if batched_inputs and "frames" in batched_inputs[0]:
            return [self.inference_video(video) for video in batched_inputs]
        return super().forward(batched_inputs)

    def inference_video(self, video: Dict) -> Dict:
        """
        Args:
            video: a test record with ``frames`` (lazy sequence of (3, h, w) tensors), ``video_id``,
                ``length``, ``height``, ``width``.
        Returns:
            dict with video_id, length, height, width and ``predictions``: the video-level tracks
            (score, contiguous category_id, per-frame RLE or None).
        """
        return track_video(self, video, self.video_topk, self.video_score_thresh, self.progress_bar)

    # ------------------------------------------------------------------ per frame
    def _single_frame(self, image: torch.Tensor) -> Tuple[ImageList, Dict[str, torch.Tensor]]:
        """One frame (3, h, w) as an ImageList of one image and its backbone features."""
        images = self.preprocess_image([{"image": image}])
        return images, self.backbone(images.tensor)

    def _remove_overlaps(self, detections: Instances) -> Instances:
        """
        Detections (sorted by score, bool pred_masks) with their masks made disjoint, better
        detections first; a detection keeping less than ``min_mask_keep`` of its mask is dropped.
        """
        keep, masks = remove_overlaps(detections.pred_masks, self.min_mask_keep)
        detections = detections[keep]
        detections.pred_masks = masks
        return detections

    # ------------------------------------------------------------------ training on clips
    def forward_clips(self, clips: List[Dict]) -> Dict[str, torch.Tensor]:
        """
        The clip training loop: the B clips' frames are batched frame-major ([frame 0 of every
        clip, frame 1 of every clip, ...]), :meth:`_clip_features` runs once on all B*T frames,
        then :meth:`_clip_frame_losses` sees the frames in order, one frame of every clip at a time.

        Args:
            clips: B clip dicts, each with ``image`` (T tensors (3, h, w)) and ``instances``
                (T Instances with gt_boxes, gt_classes, gt_masks, gt_ids = track index in the clip).
        Returns:
            dict of losses, each the mean over the frames that gave it.
        """
        num_frames = len(clips[0]["image"])
        if num_frames < self.MIN_CLIP_FRAMES or any(len(c["image"]) != num_frames for c in clips):
            raise ValueError(
                f"{type(self).__name__} trains on clips of INPUT.SAMPLING_FRAME_NUM >= {self.MIN_CLIP_FRAMES} "
                f"frames, the same for every clip of a batch; got {[len(c['image']) for c in clips]} frames "
                f"(videos {[c.get('video_id') for c in clips]})"
            )
        batch = len(clips)
        images = self.preprocess_image([{"image": c["image"][t]} for t in range(num_frames) for c in clips])
        targets = [[c["instances"][t].to(self.device) for c in clips] for t in range(num_frames)]
        state = self._start_clips(clips, targets)
        features = self._clip_features(images)
        losses = defaultdict(list)
        for t in range(num_frames):
            sl = slice(t * batch, (t + 1) * batch)
            frame_images = ImageList(images.tensor[sl], images.image_sizes[sl])
            frame_features = {k: v[sl] for k, v in features.items()}
            for k, v in self._clip_frame_losses(state, t, frame_images, frame_features, targets[t]).items():
                losses[k].append(v)
        return {k: torch.stack(v).mean() for k, v in losses.items()}

    def _start_clips(self, clips: List[Dict], targets: List[List[Instances]]):
        """
        The state the frames of a batch of clips share (passed to every :meth:`_clip_frame_losses`);
        ``targets[t][b]`` are the GT instances of frame t of clip b, on the model's device.
        """
        return None

    def _clip_features(self, images: ImageList) -> Dict[str, torch.Tensor]:
        """Features of all B*T frames (frame-major), each (B*T, C, H, W); the backbone by default."""
        return self.backbone(images.tensor)

    def _clip_frame_losses(
        self, state, t: int, images: ImageList, features: Dict[str, torch.Tensor], targets: List[Instances]
    ) -> Dict[str, torch.Tensor]:
        """Losses of frame t of every clip: ``images`` and ``features`` of the B frames, their targets."""
        raise NotImplementedError
