"""IAIRCNN: Mask R-CNN turned into an online video instance segmenter (Instance As Identity)."""

import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, List

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import ImageList, Instances
from detectron2.utils import comm
from tqdm import tqdm

from ..inference.id_assignment import IDAssigner, remove_overlaps
from ..inference.tracks import VideoTrackAggregator
from .identification import build_id_mask, clip_id_targets

__all__ = ["IAIRCNN", "VideoState"]

logger = logging.getLogger(__name__)


@dataclass
class VideoState:
    """Everything IAI carries from one frame of a video to the next at inference."""

    memory: object  # AssociationMemory of the backbone
    assigner: IDAssigner
    frame_idx: int = 0


@META_ARCH_REGISTRY.register()
class IAIRCNN(GeneralizedRCNN):
    """
    Mask R-CNN whose backbone (:class:`IAIFPN`) fuses res5 with an association memory and whose ROI
    heads (:class:`IAIROIHeads`) predict, for every detection, an identity among N ID channels.

    Training input: a list of clips (see ``YTVISClipDatasetMapper``); the backbone runs once on all
    B*T frames, then frames are processed in order with the memory teacher-forced by GT masks.
    Test input: a list of videos with lazily decoded ``frames``; frames run one at a time.
    """

    @configurable
    def __init__(
        self,
        *,
        num_ids: int,
        num_classes: int,
        new_id_trigger_in_training: bool,
        random_slots: bool,
        on_full: str,
        recycle_after: int,
        min_mask_keep: float,
        mask_threshold: float,
        video_topk: int,
        video_score_thresh: float,
        progress_bar: bool = False,
        **kwargs,
    ):
        """
        Args:
            num_ids: N, the number of ID channels (N-1 = "new", N = background).
            num_classes: number of foreground categories.
            new_id_trigger_in_training: write frames with new instances into the global memory
                during training too (the released code never does; spec quirk Q1).
            random_slots: in training, give a clip's instances distinct random slots instead of
                their rank in the clip, so every ID channel is trained and the ID head cannot
                rely on the slot prior.
            on_full, recycle_after: what to do with new instances when all slots are taken.
            min_mask_keep: drop a detection keeping less than this fraction of its mask after
                de-overlapping.
            mask_threshold: binarisation threshold of mask probabilities.
            video_topk, video_score_thresh: video-level (track, class) selection.
            progress_bar: show a per-frame progress bar during video inference.
            kwargs: arguments of :class:`GeneralizedRCNN`.
        """
        super().__init__(**kwargs)
        self.num_ids = num_ids
        self.num_classes = num_classes
        self.new_id_trigger_in_training = new_id_trigger_in_training
        self.random_slots = random_slots
        self.on_full = on_full
        self.recycle_after = recycle_after
        self.min_mask_keep = min_mask_keep
        self.mask_threshold = mask_threshold
        self.video_topk = video_topk
        self.video_score_thresh = video_score_thresh
        self.progress_bar = progress_bar

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        inf = cfg.MODEL.IAI.INFERENCE
        ret.update(
            num_ids=cfg.MODEL.IAI.NUM_IDS,
            num_classes=cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            new_id_trigger_in_training=cfg.MODEL.IAI.MEMORY.NEW_ID_TRIGGER_IN_TRAINING,
            random_slots=cfg.MODEL.IAI.RANDOM_SLOTS,
            on_full=cfg.MODEL.IAI.ON_FULL,
            recycle_after=cfg.MODEL.IAI.RECYCLE_AFTER,
            min_mask_keep=inf.MIN_MASK_KEEP,
            mask_threshold=inf.MASK_THRESH,
            video_topk=inf.VIDEO_TOPK,
            video_score_thresh=inf.VIDEO_SCORE_THRESH,
            progress_bar=cfg.TEST.PROGRESS_BAR,
        )
        return ret

    def forward(self, batched_inputs: List[Dict]):
        if not self.training:
            return [self.inference_video(video) for video in batched_inputs]
        return self.forward_clips(batched_inputs)

    # ------------------------------------------------------------------ training
    def forward_clips(self, clips: List[Dict]) -> Dict[str, torch.Tensor]:
        """
        Args:
            clips: B clip dicts, each with ``image`` (T tensors (3, h, w)) and ``instances``
                (T Instances with gt_boxes, gt_classes, gt_masks, gt_ids = clip slots).
        Returns:
            dict of losses, each the mean over the T frames.
        """
        num_frames = len(clips[0]["image"])
        if any(len(c["image"]) != num_frames for c in clips):
            raise ValueError("All clips of a batch must have the same number of frames.")
        batch = len(clips)
        # Frame-major order: [f0 of every clip, f1 of every clip, ...].
        frames = [{"image": c["image"][t]} for t in range(num_frames) for c in clips]
        images = self.preprocess_image(frames)
        gt = [[self._move_to_current_device(c["instances"][t]) for c in clips] for t in range(num_frames)]
        # slots[b][t]: memory slot of every instance of clip b in frame t; id_targets alike.
        slots = [
            self._clip_slots(c, [gt[t][b].gt_ids for t in range(num_frames)]) for b, c in enumerate(clips)
        ]
        id_targets = [clip_id_targets(s, self.num_ids) for s in slots]

        bottom_up = self.backbone.bottom_up(images.tensor)
        memory = self.backbone.new_memory()
        losses = defaultdict(list)
        for t in range(num_frames):
            sl = slice(t * batch, (t + 1) * batch)
            frame_images = ImageList(images.tensor[sl], images.image_sizes[sl])
            features = self.backbone.top_down(
                self.backbone.associate({k: v[sl] for k, v in bottom_up.items()}, memory)
            )
            targets = []
            for b in range(batch):
                target = Instances(gt[t][b].image_size, **gt[t][b].get_fields())
                target.gt_ids = id_targets[b][t]
                targets.append(target)
            proposals, proposal_losses = self.proposal_generator(frame_images, features, targets)
            _, detector_losses = self.roi_heads(frame_images, features, proposals, targets)
            for k, v in {**proposal_losses, **detector_losses}.items():
                losses[k].append(v)

            id_mask = build_id_mask(
                [g.gt_masks.tensor for g in gt[t]],
                [slots[b][t] for b in range(batch)],
                self.num_ids,
                tuple(images.tensor.shape[-2:]),
            )
            new_ids = (
                self.new_id_trigger_in_training
                and t > 0
                and any(bool((id_targets[b][t] == self.num_ids - 1).any()) for b in range(batch))
            )
            self.backbone.remember(memory, id_mask, new_ids=new_ids)
        return {k: torch.stack(v).mean() for k, v in losses.items()}

    def _clip_slots(self, clip: Dict, clip_ranks: List[torch.Tensor]) -> List[torch.Tensor]:
        """
        Memory slots of a clip's instances, per frame. ``clip_ranks`` are the mapper's ``gt_ids``
        (rank of each track in the clip); with ``random_slots`` the ranks are mapped to distinct
        random slots in 0..N-2 (drawn per clip), else the rank is the slot.
        """
        num_tracks = max((int(r.max()) + 1 for r in clip_ranks if len(r)), default=0)
        if num_tracks > self.num_ids - 1:
            raise ValueError(
                f"Video {clip.get('video_id')} (frames {clip.get('frame_indices')}): the clip has "
                f"{num_tracks} instances but MODEL.IAI.NUM_IDS={self.num_ids} holds at most "
                f"{self.num_ids - 1}. Increase MODEL.IAI.NUM_IDS."
            )
        if not self.random_slots:
            return clip_ranks
        slot_of_rank = torch.randperm(self.num_ids - 1, device=self.device)[:num_tracks]
        return [slot_of_rank[r] for r in clip_ranks]

    # ------------------------------------------------------------------ inference
    def new_video_state(self) -> VideoState:
        """A fresh state for a new video (empty memory, no tracks)."""
        return VideoState(
            memory=self.backbone.new_memory(),
            assigner=IDAssigner(self.num_ids, on_full=self.on_full, recycle_after=self.recycle_after),
        )

    @torch.no_grad()
    def inference_frame(self, state: VideoState, image: torch.Tensor, height: int, width: int) -> Instances:
        """
        Process the next frame of a video and update ``state``.

        Args:
            image: (3, h, w) frame in the model's input format, already resized.
            height, width: output resolution (the original frame size).
        Returns:
            Instances at (height, width) with pred_boxes, scores, pred_classes, class_probs (M, K),
            pred_masks (M, height, width) bool, and ID (M,) stable track identities.
        """
        first_frame = state.frame_idx == 0
        images = self.preprocess_image([{"image": image}])
        padded_size = tuple(images.tensor.shape[-2:])
        features = self.backbone.top_down(
            self.backbone.associate(self.backbone.bottom_up(images.tensor), state.memory)
        )
        proposals, _ = self.proposal_generator(images, features, None)
        detections = self.roi_heads.inference_frame(features, proposals, first_frame)[0]
        detections = detector_postprocess(detections, height, width, self.mask_threshold)

        keep, masks = remove_overlaps(detections.pred_masks, self.min_mask_keep)
        detections = detections[keep]
        detections.pred_masks = masks
        assignment = state.assigner.assign(detections.id_probs, state.frame_idx, first_frame)
        slots = torch.as_tensor(assignment.slots, dtype=torch.long, device=self.device)
        track_ids = torch.as_tensor(assignment.track_ids, dtype=torch.long, device=self.device)
        valid = slots >= 0
        detections = detections[valid]
        detections.ID = track_ids[valid]

        input_size = images.image_sizes[0]
        input_masks = F.interpolate(detections.pred_masks[:, None].float(), size=input_size, mode="nearest")
        id_mask = build_id_mask([input_masks[:, 0] > 0.5], [slots[valid]], self.num_ids, padded_size)
        self.backbone.remember(state.memory, id_mask, new_ids=assignment.new_ids)
        state.frame_idx += 1
        return detections

    def inference_video(self, video: Dict) -> Dict:
        """
        Args:
            video: a test record with ``frames`` (lazy sequence of (3, h, w) tensors), ``video_id``,
                ``length``, ``height``, ``width``.
        Returns:
            dict with video_id, length, height, width and ``predictions``: the video-level tracks
            (score, contiguous category_id, per-frame RLE or None).
        """
        frames = video["frames"]
        length, height, width = video["length"], video["height"], video["width"]
        if len(frames) != length:
            raise ValueError(f"Video {video['video_id']}: {len(frames)} frames but length={length}.")
        state = self.new_video_state()
        tracks = VideoTrackAggregator(
            self.num_classes, length, height, width, self.video_topk, self.video_score_thresh
        )
        progress = tqdm(
            total=length,
            desc=f"video {video['video_id']}",
            unit="frame",
            leave=False,
            disable=not (self.progress_bar and comm.is_main_process()),
        )
        for t in range(length):
            detections = self.inference_frame(state, frames[t], height, width)
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
