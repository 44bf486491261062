"""Per-frame identity assignment at inference: mask de-overlapping, Hungarian unique IDs,
new-ID allocation and memory-slot recycling.

ID index space (N = num_ids): columns 0..N-2 are memory slots, N-1 "new instance", N background.
Memory slots (what the association memory sees) are distinct from track ids (the stable
output identities, 0, 1, 2, ... per video, never reused).
"""
import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

__all__ = ["remove_overlaps", "pairwise_mask_iou", "IDAssignment", "IDAssigner"]

logger = logging.getLogger(__name__)

_ON_FULL = ("recycle", "discard")


def remove_overlaps(masks: torch.Tensor, min_keep: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    Make masks disjoint, better detections first.

    Visiting the masks in the given order (score descending), each mask keeps only the pixels
    not claimed by an earlier kept mask. A mask is dropped when it is empty or when less than
    ``min_keep`` of its own area survives; dropped masks claim no pixels.

    Args:
        masks: BoolTensor (K, H, W), sorted by score descending.
        min_keep: fraction in [0, 1] of a mask's area that must survive.

    Returns:
        keep: LongTensor (K',) indices of the kept masks, increasing.
        masks: BoolTensor (K', H, W), the de-overlapped kept masks.
    """
    if masks.dim() != 3 or masks.dtype != torch.bool:
        raise ValueError(
            "remove_overlaps expects a BoolTensor (K, H, W), "
            f"got {masks.dtype} {tuple(masks.shape)}"
        )
    claimed = torch.zeros(masks.shape[1:], dtype=torch.bool, device=masks.device)
    keep, kept_masks = [], []
    for k, mask in enumerate(masks):
        area = mask.sum().item()
        own = mask & ~claimed
        if area == 0 or own.sum().item() < min_keep * area:
            continue
        claimed |= own
        keep.append(k)
        kept_masks.append(own)
    keep = torch.as_tensor(keep, dtype=torch.long, device=masks.device)
    if not kept_masks:
        return keep, masks.new_zeros((0,) + tuple(masks.shape[1:]))
    return keep, torch.stack(kept_masks)


def pairwise_mask_iou(masks_a: torch.Tensor, masks_b: torch.Tensor) -> torch.Tensor:
    """
    Args:
        masks_a, masks_b: bool (K, H, W) and (M, H, W) on one device.
    Returns:
        (K, M) float mask IoU (0 where both masks are empty).
    """
    a, b = masks_a.flatten(1).float(), masks_b.flatten(1).float()
    inter = a @ b.t()
    union = a.sum(1, keepdim=True) + b.sum(1)[None] - inter
    return inter / union.clamp(min=1)


@dataclass
class IDAssignment:
    """
    Result of :meth:`IDAssigner.assign` for one frame, one entry per detection.

    Attributes:
        slots: memory slot in 0..N-2, or -1 if the detection was discarded.
        track_ids: output identity, or -1 if the detection was discarded.
        new_ids: whether a new track was started in this frame.
        recycled: slots taken from retired tracks in this frame (the memory must forget them).
    """

    slots: List[int]
    track_ids: List[int]
    new_ids: bool
    recycled: List[int] = field(default_factory=list)


class IDAssigner:
    """
    Online identity bookkeeping of one video.

    First frame: every detection starts a track. Later frames: Hungarian matching on
    ``-[P | K-1 copies of the "new" column]``, where P is the ID probabilities renormalised over
    the N identity columns (slots and "new"; background does not compete with identities), gives
    each detection a distinct column; a column that is a slot of a live track re-identifies that
    track, any other column (the "new" column or its copies, an unallocated slot) is a birth.
    A birth needs a confident detection (score >= ``birth_score``); a weak one may continue a
    track but never starts one and is dropped. A new track takes the lowest free slot; when none
    is free, ``on_full="recycle"`` takes the slot of the live track unseen for the longest time,
    provided it missed at least ``recycle_after`` consecutive frames (that track is retired and
    the slot is reported in ``IDAssignment.recycled``), otherwise (or with ``on_full="discard"``)
    the detection is discarded with a log line.

    With ``mask_iou_weight`` w > 0 (an inference option, MaskTrack's cue added to IAI's; not IAI
    itself), the Hungarian score of a detection for a live track's slot is P + w * IoU(its mask,
    the mask the track had when it was last seen), so the assigner keeps each live track's last
    mask (N-1 masks at most).

    With ``class_penalty`` c > 0 (an inference option, MaskTrack's class-consistency cue; not IAI
    itself), the score of a detection for a live track's slot is lowered by c when the
    detection's class differs from the class the track had when it was last seen (c >= 1: a
    detection never takes the identity of a track of another class; the "new" column is
    unchanged, so births are not discouraged).
    """

    def __init__(
        self,
        num_ids: int,
        on_full: str = "recycle",
        recycle_after: int = 30,
        birth_score: float = 0.0,
        mask_iou_weight: float = 0.0,
        class_penalty: float = 0.0,
    ):
        """
        Args:
            num_ids: N; slots 0..N-2 are available to tracks.
            on_full: "recycle" or "discard", see the class docstring.
            recycle_after: frames a track must have missed in a row before its slot can be
                reused (seen at frame 3, recycle_after=2: recyclable from frame 6 on).
            birth_score: minimum detection score to start a track.
            mask_iou_weight: weight of the last-mask IoU in the matching score (0: off).
            class_penalty: subtracted from a live slot's score for a detection of another class
                (0: off).
        """
        if num_ids < 2:
            raise ValueError(f"IDAssigner: num_ids must be >= 2 (one slot + 'new'), got {num_ids}")
        if on_full not in _ON_FULL:
            raise ValueError(f"IDAssigner: on_full must be one of {_ON_FULL}, got {on_full!r}")
        if recycle_after < 0:
            raise ValueError(f"IDAssigner: recycle_after must be >= 0, got {recycle_after}")
        if mask_iou_weight < 0:
            raise ValueError(f"IDAssigner: mask_iou_weight must be >= 0, got {mask_iou_weight}")
        if class_penalty < 0:
            raise ValueError(f"IDAssigner: class_penalty must be >= 0, got {class_penalty}")
        self.num_ids = num_ids
        self.on_full = on_full
        self.recycle_after = recycle_after
        self.birth_score = birth_score
        self.mask_iou_weight = mask_iou_weight
        self.class_penalty = class_penalty
        self.reset()

    def reset(self) -> None:
        """Forget every track; the next track id is 0."""
        self._slot_track: Dict[int, int] = {}  # live slot -> track id
        self._slot_last_seen: Dict[int, int] = {}  # live slot -> last frame it was detected
        self._slot_mask: Dict[int, torch.Tensor] = {}  # live slot -> its last mask (mask_iou_weight > 0)
        self._slot_class: Dict[int, int] = {}  # live slot -> its last class (class_penalty > 0)
        self._next_track_id = 0
        self._last_frame = None

    @property
    def slot_tracks(self) -> Dict[int, int]:
        """Live slot -> track id (a copy)."""
        return dict(self._slot_track)

    @property
    def num_tracks(self) -> int:
        """Number of tracks started since the last reset."""
        return self._next_track_id

    def assign(
        self,
        id_probs: torch.Tensor,
        frame_idx: int,
        first_frame: bool,
        scores: Optional[torch.Tensor] = None,
        masks: Optional[torch.Tensor] = None,
        classes: Optional[torch.Tensor] = None,
    ) -> IDAssignment:
        """
        Args:
            id_probs: (K, N+1) ID probabilities of the frame's detections, in ranking order
                (new tracks are allocated in this order).
            frame_idx: index of the frame in the video; must increase between calls.
            first_frame: True on the first frame of a video; implies :meth:`reset`.
            scores: (K,) detection scores compared with ``birth_score``; None = all confident.
            masks: (K, H, W) bool masks of the detections (same size in every frame); needed
                when ``mask_iou_weight`` > 0, unused otherwise.
            classes: (K,) predicted class of each detection; needed when ``class_penalty`` > 0.

        Returns:
            IDAssignment with K entries.
        """
        if id_probs.dim() != 2 or id_probs.shape[1] != self.num_ids + 1:
            raise ValueError(
                f"IDAssigner: id_probs must have shape (K, {self.num_ids + 1}), "
                f"got {tuple(id_probs.shape)} at frame {frame_idx}"
            )
        if first_frame:
            self.reset()
        elif self._last_frame is not None and frame_idx <= self._last_frame:
            raise ValueError(
                f"IDAssigner: frame {frame_idx} comes after frame {self._last_frame}; "
                "frames must be assigned in increasing order"
            )
        self._last_frame = frame_idx
        use_iou = self.mask_iou_weight > 0
        if use_iou and (masks is None or len(masks) != id_probs.shape[0]):
            raise ValueError(
                f"IDAssigner: mask_iou_weight > 0 needs the masks of the {id_probs.shape[0]} detections "
                f"of frame {frame_idx}, got {None if masks is None else tuple(masks.shape)}"
            )

        use_class = self.class_penalty > 0
        if use_class and (classes is None or len(classes) != id_probs.shape[0]):
            raise ValueError(
                f"IDAssigner: class_penalty > 0 needs the classes of the {id_probs.shape[0]} detections "
                f"of frame {frame_idx}, got {None if classes is None else tuple(classes.shape)}"
            )

        num_dets = id_probs.shape[0]
        if first_frame or num_dets == 0:
            columns = [self.num_ids - 1] * num_dets
        else:
            bonus = np.zeros((num_dets, self.num_ids - 1), dtype=np.float32)
            if use_iou:
                bonus += self._mask_iou_bonus(masks)
            if use_class:
                bonus -= self._class_penalty(classes)
            columns = self._hungarian(id_probs.detach().float().cpu().numpy(), bonus)

        confident = (
            [True] * num_dets if scores is None else (scores >= self.birth_score).tolist()
        )
        reidentified = [col in self._slot_track for col in columns]
        slots, track_ids = [-1] * num_dets, [-1] * num_dets
        # Re-identifications first, so that recycling never takes a slot matched in this frame.
        for det, col in enumerate(columns):
            if reidentified[det]:
                slots[det], track_ids[det] = col, self._slot_track[col]
                self._slot_last_seen[col] = frame_idx
        new_ids, recycled = False, []
        for det in range(num_dets):
            if reidentified[det] or not confident[det]:
                continue
            slot = self._free_slot(frame_idx)
            if slot < 0:
                reason = (
                    "MODEL.IAI.ON_FULL is 'discard'"
                    if self.on_full == "discard"
                    else f"every track was seen in the last {self.recycle_after} frames"
                )
                logger.warning(
                    f"frame {frame_idx}: a confident new detection was dropped: all "
                    f"{self.num_ids - 1} ID slots are taken and {reason}; raise MODEL.IAI.NUM_IDS"
                )
                continue
            if slot in self._slot_track:
                recycled.append(slot)
            slots[det], track_ids[det] = slot, self._next_track_id
            self._slot_track[slot] = self._next_track_id
            self._slot_last_seen[slot] = frame_idx
            self._next_track_id += 1
            new_ids = True
        if use_iou:
            for det, slot in enumerate(slots):
                if slot >= 0:
                    self._slot_mask[slot] = masks[det].detach().cpu()
        if use_class:
            for det, slot in enumerate(slots):
                if slot >= 0:
                    self._slot_class[slot] = int(classes[det])
        return IDAssignment(slots=slots, track_ids=track_ids, new_ids=new_ids, recycled=recycled)

    def _mask_iou_bonus(self, masks: torch.Tensor) -> np.ndarray:
        """(K, N-1) ``mask_iou_weight`` * IoU of each detection mask with each live slot's last mask."""
        bonus = np.zeros((len(masks), self.num_ids - 1), dtype=np.float32)
        live = [s for s in self._slot_track if s in self._slot_mask]
        if live and len(masks):
            last = torch.stack([self._slot_mask[s] for s in live])
            bonus[:, live] = (self.mask_iou_weight * pairwise_mask_iou(masks.detach().cpu(), last)).numpy()
        return bonus

    def _class_penalty(self, classes: torch.Tensor) -> np.ndarray:
        """(K, N-1) ``class_penalty`` where a live slot's last class differs from the detection's."""
        penalty = np.zeros((len(classes), self.num_ids - 1), dtype=np.float32)
        live = [s for s in self._slot_track if s in self._slot_class]
        if live and len(classes):
            det_classes = np.asarray(classes.detach().cpu().tolist())
            slot_classes = np.asarray([self._slot_class[s] for s in live])
            penalty[:, live] = self.class_penalty * (det_classes[:, None] != slot_classes[None, :])
        return penalty

    def _hungarian(self, probs: np.ndarray, bonus: np.ndarray) -> List[int]:
        """
        Args:
            probs: (K, N+1) ID probabilities.
            bonus: (K, N-1) added to the slot columns after renormalisation (cues other than
                the ID head's; zeros for IAI alone).

        Returns:
            K distinct columns of ``[P | K-1 copies of column N-1]`` maximising the total
            probability, P = probs renormalised over the N identity columns (no background).
        """
        num_dets = probs.shape[0]
        probs = probs[:, : self.num_ids]
        probs = probs / np.maximum(probs.sum(axis=1, keepdims=True), 1e-12)
        probs[:, : self.num_ids - 1] += bonus
        new_col = probs[:, self.num_ids - 1 : self.num_ids]
        scores = np.concatenate([probs, np.repeat(new_col, num_dets - 1, axis=1)], axis=1)
        rows, cols = linear_sum_assignment(-scores)
        columns = [0] * num_dets
        for r, c in zip(rows.tolist(), cols.tolist()):
            columns[r] = c
        return columns

    def _free_slot(self, frame_idx: int) -> int:
        """Lowest unallocated slot, else a recyclable one (see class docstring), else -1."""
        for slot in range(self.num_ids - 1):
            if slot not in self._slot_track:
                return slot
        if self.on_full == "discard":
            return -1
        slot = min(self._slot_last_seen, key=lambda s: (self._slot_last_seen[s], s))
        missed = frame_idx - self._slot_last_seen[slot] - 1
        return slot if missed >= self.recycle_after else -1
