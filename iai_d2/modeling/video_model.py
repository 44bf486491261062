"""
The model-agnostic half of IAI: everything between a detector and its identities. A video model
is a detector with an :class:`IAIFPN` backbone that mixes in :class:`IAIVideoModel` and supplies
two detector hooks; the association memory, the ID targets, the dense ID decoder and loss, the
per-frame ID assignment and memory update and the teacher-forced diagnosis live here once, for
every detector, on the machinery every online video model shares (:class:`OnlineVideoModel`: the
clip training loop, de-overlapping, video inference).

    class MyIAIDetector(IAIVideoModel, MyDetector):
        def _frame_detector_losses(self, images, features, targets): ...   # dict of losses
        def _frame_detections(self, images, features, first_frame, height, width): ...  # Instances

Both hooks see one frame per stream: ``images`` (ImageList), ``features`` the IAIFPN outputs
(after association); targets carry ``gt_ids`` (the ID targets: the memory slot holding the
instance, or N-1 "new"). Detections are Instances at (height, width) with pred_boxes, scores,
pred_classes, class_probs (M, K), pred_masks (M, height, width) bool, sorted by score, and
``id_probs`` (M, N+1) when the detector decodes identities itself (ID_DECODER other than "dense").

Users: :class:`iai_d2.modeling.IAIRCNN` (Mask R-CNN) and ``IAICondInst`` (projects/CondInst).
"""

import logging
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.structures import ImageList, Instances

from ..inference.id_assignment import IDAssigner
from .dense_id import DenseIDHead
from .identification import (
    build_id_mask,
    first_appearance_slots,
    id_targets,
    paint_id_labels,
    perturb_masks,
)
from .online import OnlineVideoModel, online_config

__all__ = ["ClipMemory", "IAIVideoModel", "VideoState", "video_config"]

logger = logging.getLogger(__name__)


@dataclass
class VideoState:
    """Everything IAI carries from one frame of a video to the next at inference."""

    memory: object  # AssociationMemory of the backbone
    assigner: IDAssigner
    frame_idx: int = 0
    # The last frame's ID-decoder inputs (see IAIVideoModel._associate_frame), kept for the
    # diagnosis (IAIVideoModel.identify) until the next frame.
    last_frame: Optional[Dict] = None


@dataclass
class ClipMemory:
    """What IAI carries from one frame of a training batch of clips to the next."""

    slots: List[List[torch.Tensor]]  # slots[b][t]: memory slot of every instance of clip b in frame t
    memory: object  # AssociationMemory of the backbone, shared by the B clips


def video_config(cfg, backbone, num_classes: int) -> Dict:
    """
    The keyword arguments of :meth:`IAIVideoModel._setup_video` from ``cfg.MODEL.IAI`` (builds
    the dense ID head, so call it after the backbone is built: the initialisation order is part of
    a seeded model's weights).
    """
    if not hasattr(backbone, "associate"):
        raise ValueError(
            f"{cfg.MODEL.META_ARCHITECTURE} needs an IAI backbone: set MODEL.BACKBONE.NAME to one of "
            "'build_iai_resnet_fpn_backbone' (Mask R-CNN), 'build_iai_retinanet_resnet_fpn_backbone' (CondInst), "
            f"'build_iai_resnet_backbone' (Mask2Former); got {cfg.MODEL.BACKBONE.NAME!r}"
        )
    iai = cfg.MODEL.IAI
    inf = iai.INFERENCE
    use_dense = iai.ID_DECODER == "dense" or iai.DENSE_ID.LOSS_WEIGHT > 0
    stride = backbone.association.id_bank.stride
    skip = iai.DENSE_ID.SKIP_FEATURE
    skip_channels = None
    if use_dense and skip:
        shapes = backbone.bottom_up.output_shape()
        if skip not in shapes or shapes[skip].stride * 2 != stride:
            raise ValueError(
                f"MODEL.IAI.DENSE_ID.SKIP_FEATURE={skip!r} must be a backbone output at half the "
                f"association stride {stride}; backbone outputs: "
                + ", ".join(f"{k} (stride {v.stride})" for k, v in shapes.items())
            )
        skip_channels = shapes[skip].channels
    return dict(
        num_ids=iai.NUM_IDS,
        num_classes=num_classes,
        new_id_trigger=iai.MEMORY.NEW_ID_TRIGGER,
        random_slots=iai.RANDOM_SLOTS,
        memory_drop_prob=iai.MEMORY.TRAIN_DROP_PROB,
        memory_jitter=iai.MEMORY.TRAIN_JITTER,
        dense_id_head=DenseIDHead(cfg, stride=stride, skip_channels=skip_channels) if use_dense else None,
        dense_id_skip=skip if use_dense else "",
        dense_id_loss_weight=iai.DENSE_ID.LOSS_WEIGHT,
        id_decoder=iai.ID_DECODER,
        on_full=iai.ON_FULL,
        recycle_after=iai.RECYCLE_AFTER,
        birth_score=inf.BIRTH_SCORE_THRESH,
        mask_iou_weight=inf.MASK_IOU_WEIGHT,
        class_penalty=inf.CLASS_PENALTY,
        **online_config(cfg, inf),
    )


class IAIVideoModel(OnlineVideoModel):
    """
    Mixin (put it before the detector class) giving a detector with an :class:`IAIFPN` backbone
    the IAI video behaviour. The detector provides ``backbone``, ``device`` and
    ``preprocess_image``; the subclass provides the hooks :meth:`_frame_detector_losses`,
    :meth:`_frame_detections` and, for a detector-side ID decoder, :meth:`_detector_id_probs`.
    ``ID_DECODERS`` lists the MODEL.IAI.ID_DECODER values the model accepts; ``IDENTITY_MODULES``
    the module paths of the identity pathway IAI adds to the image model (the optimizer's
    SOLVER.IMAGE_MODEL_MULTIPLIER and SOLVER.IDENTITY_WARMUP_ITERS tell them apart).

    Training input: a list of clips (see ``YTVISClipDatasetMapper``); the backbone's bottom-up runs
    once on all B*T frames, then frames are processed in order (:meth:`OnlineVideoModel.forward_clips`)
    with the memory written from GT masks (dropped and shifted as MEMORY.TRAIN_* say). The B clips share one memory schedule: a birth in any clip
    adds that frame to the global memory of all B (inference runs one video at a time).
    Test input: a list of videos with lazily decoded ``frames``; frames run one at a time.
    """

    ID_DECODERS: Tuple[str, ...] = ("dense",)
    IDENTITY_MODULES: Tuple[str, ...] = ("backbone.association", "dense_id_head")

    def _setup_video(
        self,
        *,
        num_ids: int,
        num_classes: int,
        new_id_trigger: bool,
        random_slots: bool,
        memory_drop_prob: float,
        memory_jitter: int,
        dense_id_head: Optional[DenseIDHead],
        dense_id_loss_weight: float,
        id_decoder: str,
        dense_id_skip: str = "",
        on_full: str,
        recycle_after: int,
        birth_score: float,
        mask_iou_weight: float = 0.0,
        class_penalty: float = 0.0,
        **online,
    ) -> None:
        """
        Args:
            num_ids: N, the number of ID channels (N-1 = "new", N = background).
            num_classes: number of foreground categories.
            new_id_trigger: a frame with a birth (a GT instance new to the memory in training, a
                new track at inference) joins the global memory; one policy for both.
            random_slots: in training, give a clip's tracks distinct random slots instead of
                slots in order of first appearance (the order inference allocates them in).
            memory_drop_prob, memory_jitter: in training, write GT masks into the memory the way
                inference writes predictions: instances dropped with this probability and
                shifted by up to this many pixels.
            dense_id_head: the dense ID decoder on the HAB output, or None.
            dense_id_loss_weight: weight of its pixel-wise ID loss ``loss_id_dense``.
            dense_id_skip: the bottom-up level the dense decoder fuses ("" for none).
            id_decoder: "dense" (the dense decoder's probabilities averaged inside each mask) or
                a detector-side decoder of the model (``ID_DECODERS``).
            on_full, recycle_after: what to do with new instances when all slots are taken.
            birth_score: a detection must score at least this to start a track.
            mask_iou_weight: weight of the IoU with a track's last mask in the ID matching (an
                inference option, MaskTrack's cue; 0 = IAI alone), see :class:`IDAssigner`.
            class_penalty: lowers a live track's slot in the ID matching for a detection of
                another class (an inference option, MaskTrack's class cue; 0 = IAI alone).
            online: arguments of :meth:`OnlineVideoModel._setup_online` (de-overlapping, mask
                threshold, video-level selection).
        """
        if id_decoder not in self.ID_DECODERS:
            raise ValueError(f"MODEL.IAI.ID_DECODER must be one of {self.ID_DECODERS}, got {id_decoder!r}")
        if id_decoder == "dense" and (dense_id_head is None or dense_id_loss_weight <= 0):
            raise ValueError(
                "MODEL.IAI.ID_DECODER 'dense' decides identities with the dense ID head, which only "
                f"the dense ID loss trains: set MODEL.IAI.DENSE_ID.LOSS_WEIGHT > 0 (got {dense_id_loss_weight})"
            )
        self.num_ids = num_ids
        self.num_classes = num_classes
        self.new_id_trigger = new_id_trigger
        self.random_slots = random_slots
        self.memory_drop_prob = memory_drop_prob
        self.memory_jitter = memory_jitter
        self.dense_id_head = dense_id_head
        self.dense_id_loss_weight = dense_id_loss_weight
        self.dense_id_skip = dense_id_skip
        self.id_decoder = id_decoder
        self.on_full = on_full
        self.recycle_after = recycle_after
        self.birth_score = birth_score
        self.mask_iou_weight = mask_iou_weight
        self.class_penalty = class_penalty
        self._setup_online(**online)

    # ------------------------------------------------------------------ detector hooks
    def _frame_detector_losses(
        self, images: ImageList, features: Dict[str, torch.Tensor], targets: List[Instances]
    ) -> Dict[str, torch.Tensor]:
        """Detector (and detector-side ID) losses of one frame per stream; targets have gt_ids."""
        raise NotImplementedError

    def _frame_detections(
        self, images: ImageList, features: Dict[str, torch.Tensor], first_frame: bool, height: int, width: int
    ) -> Instances:
        """Detections of one frame (eval mode) at (height, width), see the module docstring."""
        raise NotImplementedError

    def _detector_id_probs(self, frame: Dict, masks: torch.Tensor) -> torch.Tensor:
        """(K, N+1) ID probabilities of the detector-side ID decoder for given masks (identify)."""
        raise NotImplementedError(f"identify() has no implementation for ID_DECODER {self.id_decoder!r}")

    # ------------------------------------------------------------------ training (clip hooks)
    def _start_clips(self, clips: List[Dict], targets: List[List[Instances]]) -> ClipMemory:
        """
        An empty memory and the memory slots of the clips' instances. ID targets follow what the
        memory holds: an instance is "new" (N-1) unless its slot is painted in a stored frame,
        exactly as at inference.
        """
        slots = [
            self._clip_slots(c, [targets[t][b].gt_ids for t in range(len(targets))]) for b, c in enumerate(clips)
        ]
        return ClipMemory(slots=slots, memory=self.backbone.new_memory())

    def _clip_features(self, images: ImageList) -> Dict[str, torch.Tensor]:
        """The bottom-up features of all frames: association and top-down run frame by frame."""
        return self.backbone.bottom_up(images.tensor)

    def _clip_frame_losses(
        self, state: ClipMemory, t: int, images: ImageList, bottom_up: Dict[str, torch.Tensor], gt: List[Instances]
    ) -> Dict[str, torch.Tensor]:
        """
        Frame t of every clip: association against the memory, the detector's losses with ID
        targets, the dense ID loss; then the memory is written from the GT masks.
        """
        memory, padded_size = state.memory, tuple(images.tensor.shape[-2:])
        associated = self.backbone.associate(bottom_up, memory)
        hab = associated.pop("association")
        features = self.backbone.top_down(associated)
        held = memory.held_slots(self.num_ids - 1)
        targets = []
        for b, frame_gt in enumerate(gt):
            target = Instances(frame_gt.image_size, **frame_gt.get_fields())
            if memory.is_empty:
                target.gt_ids = torch.full_like(state.slots[b][t], self.num_ids - 1)
            else:
                target.gt_ids = id_targets(state.slots[b][t], held[b], self.num_ids)
            targets.append(target)
        losses = self._frame_detector_losses(images, features, targets)
        masks = [g.gt_masks.tensor for g in gt]
        if self.dense_id_head is not None and self.dense_id_loss_weight > 0:
            labels = paint_id_labels(masks, [x.gt_ids for x in targets], self.num_ids, padded_size)
            logits = self._dense_id_logits(hab, bottom_up)
            losses["loss_id_dense"] = self.dense_id_head.loss(logits, labels) * self.dense_id_loss_weight

        id_mask = build_id_mask(
            [perturb_masks(m, self.memory_drop_prob, self.memory_jitter) for m in masks],
            [state.slots[b][t] for b in range(len(gt))],
            self.num_ids,
            padded_size,
        )
        births = any(bool((x.gt_ids == self.num_ids - 1).any()) for x in targets)
        self.backbone.remember(memory, id_mask, new_ids=self.new_id_trigger and births)
        return losses

    def _dense_id_logits(self, hab: torch.Tensor, bottom_up: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Dense ID logits (B, N+1, h', w') from the HAB output and, with a skip level, its features."""
        return self.dense_id_head(hab, bottom_up[self.dense_id_skip] if self.dense_id_skip else None)

    def _clip_slots(self, clip: Dict, clip_tracks: List[torch.Tensor]) -> List[torch.Tensor]:
        """
        Memory slots of a clip's instances, per frame. ``clip_tracks`` are the mapper's ``gt_ids``
        (index of each track in the clip). Slots are allocated in order of first appearance, as
        inference allocates them (ties within a frame in random order); with ``random_slots``,
        distinct random slots in 0..N-2 are drawn per clip.
        """
        num_tracks = len(set(torch.cat(clip_tracks).tolist())) if clip_tracks else 0
        if num_tracks > self.num_ids - 1:
            raise ValueError(
                f"Video {clip.get('video_id')} (frames {clip.get('frame_indices')}): the clip has "
                f"{num_tracks} instances but MODEL.IAI.NUM_IDS={self.num_ids} holds at most "
                f"{self.num_ids - 1}. Increase MODEL.IAI.NUM_IDS."
            )
        slots = first_appearance_slots(clip_tracks, self.num_ids)
        if not self.random_slots:
            return slots
        slot_perm = torch.randperm(self.num_ids - 1, device=self.device)
        return [slot_perm[s] for s in slots]

    # ------------------------------------------------------------------ inference
    def new_video_state(self) -> VideoState:
        """A fresh state for a new video (empty memory, no tracks)."""
        return VideoState(
            memory=self.backbone.new_memory(),
            assigner=IDAssigner(
                self.num_ids,
                on_full=self.on_full,
                recycle_after=self.recycle_after,
                birth_score=self.birth_score,
                mask_iou_weight=self.mask_iou_weight,
                class_penalty=self.class_penalty,
            ),
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
        frame = self._associate_frame(state, image)
        images, features = frame["images"], frame["features"]
        padded_size = tuple(images.tensor.shape[-2:])
        detections = self._frame_detections(images, features, first_frame, height, width)

        detections = self._remove_overlaps(detections)
        masks = detections.pred_masks
        input_size = images.image_sizes[0]
        input_masks = F.interpolate(masks[:, None].float(), size=input_size, mode="nearest")[:, 0] > 0.5
        if self.id_decoder == "dense":
            logits = self._dense_id_logits(frame["association"], frame["bottom_up"])
            detections.id_probs = self.dense_id_head.detection_probs(logits, input_masks)
        assignment = state.assigner.assign(
            detections.id_probs, state.frame_idx, first_frame, scores=detections.scores, masks=input_masks,
            classes=detections.pred_classes,
        )
        slots = torch.as_tensor(assignment.slots, dtype=torch.long, device=self.device)
        track_ids = torch.as_tensor(assignment.track_ids, dtype=torch.long, device=self.device)
        valid = slots >= 0
        detections = detections[valid]
        detections.ID = track_ids[valid]

        state.memory.forget_slots(assignment.recycled)
        id_mask = build_id_mask([input_masks[valid]], [slots[valid]], self.num_ids, padded_size)
        self.backbone.remember(state.memory, id_mask, new_ids=self.new_id_trigger and assignment.new_ids)
        state.frame_idx += 1
        return detections

    def _associate_frame(
        self, state: VideoState, image: torch.Tensor, bottom_up: Optional[Dict[str, torch.Tensor]] = None
    ) -> Dict:
        """
        Backbone + association of the next frame of a video against ``state.memory`` (which then
        waits for the frame's ID mask: ``backbone.remember``). ``bottom_up``: the frame's bottom-up
        features if computed already (they do not depend on the memory), else computed here.
        Returns (and keeps in ``state.last_frame``) a dict with ``images`` (ImageList of one frame),
        ``bottom_up``, ``association`` (the HAB output (1, C, h, w)) and ``features`` (the FPN features).
        """
        images = self.preprocess_image([{"image": image}])
        if bottom_up is None:
            bottom_up = self.backbone.bottom_up(images.tensor)
        associated = self.backbone.associate(bottom_up, state.memory)
        hab = associated.pop("association")
        state.last_frame = {
            "images": images,
            "bottom_up": bottom_up,
            "association": hab,
            "features": self.backbone.top_down(associated),
        }
        return state.last_frame

    @torch.no_grad()
    def identify(self, state: VideoState, masks: torch.Tensor) -> torch.Tensor:
        """
        ID probabilities the ID decoder gives to arbitrary instances (e.g. GT instances) of the
        frame processed last, against the memory as it was before that frame: the dense decoder
        averages its map inside each mask, a detector-side decoder answers
        :meth:`_detector_id_probs`.

        Args:
            masks: (K, H, W) bool at the network input size of that frame (unpadded).
        Returns:
            (K, N+1) probabilities (slots, "new", background).
        """
        frame = state.last_frame
        if frame is None:
            raise RuntimeError("identify() needs a processed frame (inference_frame / teacher_forced_frame)")
        masks = masks.to(self.device)
        if self.id_decoder == "dense":
            logits = self._dense_id_logits(frame["association"], frame["bottom_up"])
            return self.dense_id_head.detection_probs(logits, masks)
        return self._detector_id_probs(frame, masks)

    @torch.no_grad()
    def teacher_forced_frame(
        self,
        state: VideoState,
        image: torch.Tensor,
        masks: torch.Tensor,
        slots: torch.Tensor,
        bottom_up: Optional[Dict[str, torch.Tensor]] = None,
    ):
        """
        One frame with a teacher-forced memory: the ID decoder classifies the given (GT)
        instances, then the memory is written with them under the given slots, as in training
        (no perturbation) and with the same insert policy.

        Args:
            image: (3, h, w) frame in the model's input format, already resized.
            masks: (K, h, w) bool instance masks at that size.
            slots: (K,) long memory slots (0 .. N-2) of the instances.
            bottom_up: the frame's bottom-up features if computed already, e.g. by
                ``inference_frame`` on the same frame (``state.last_frame["bottom_up"]`` of its
                state): they do not depend on the memory, so the backbone's bottom-up is skipped.
        Returns:
            id_probs (K, N+1) (see :meth:`identify`) and targets (K,): the slot where the memory
            held it before this frame, else N-1 ("new"), as the training targets.
        """
        masks, slots = masks.to(self.device), slots.to(self.device)
        first_frame = state.memory.is_empty
        frame = self._associate_frame(state, image, bottom_up)
        held = None if first_frame else state.memory.held_slots(self.num_ids - 1)[0]
        id_probs = self.identify(state, masks)
        if held is None:
            targets = torch.full_like(slots, self.num_ids - 1)
        else:
            targets = id_targets(slots, held, self.num_ids)
        padded_size = tuple(frame["images"].tensor.shape[-2:])
        id_mask = build_id_mask([masks], [slots], self.num_ids, padded_size)
        births = bool((targets == self.num_ids - 1).any())
        self.backbone.remember(state.memory, id_mask, new_ids=self.new_id_trigger and births)
        state.frame_idx += 1
        return id_probs, targets
