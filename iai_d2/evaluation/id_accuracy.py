"""
ID-head accuracy on GT instances: does the ID decoder name the right memory slot, with the memory
training uses (teacher forced: GT masks under first-appearance slots) and with the memory inference
writes (the model's own detections and IDs)? The gap between the two is what the train / test
memory mismatch costs; the slot prior (always answering the most frequent correct slot) is the
accuracy of a decoder that ignores the memory.

Only "seen" instances count: GT instances whose identity the memory holds. Teacher forced: the
training target is a slot (not "new"). Inference memory: the GT track was matched (mask IoU >= the
GT threshold) to a detection in an earlier frame, and that detection's track still owns a slot the
memory holds. An answer is the argmax over the N identity columns (background excluded, as in the
Hungarian assignment).

A model qualifies if it has ``new_video_state``, ``inference_frame``, ``identify`` and
``teacher_forced_frame`` (:class:`~iai_d2.modeling.IAIRCNN`).
"""
from collections import Counter, OrderedDict
from typing import Dict, List, Optional, Tuple

import numpy as np
import pycocotools.mask as mask_util
import torch
import torch.nn.functional as F

from ..inference.relabel import as_rles

__all__ = ["MODES", "InferenceMemoryProbe", "TeacherForcedRun", "id_head_summary"]

# mode key -> table row name
MODES = OrderedDict([("teacher_forced", "teacher-forced memory (GT)"), ("inference", "inference memory")])


def _input_masks(rles: List[dict], size) -> torch.Tensor:
    """(K, h, w) bool masks of K RLEs resized (nearest) to the network input size."""
    if not rles:
        return torch.zeros((0, *size), dtype=torch.bool)
    masks = torch.from_numpy(mask_util.decode(rles)).permute(2, 0, 1).float()
    return F.interpolate(masks[:, None], size=tuple(size), mode="nearest")[:, 0] > 0.5


class TeacherForcedRun:
    """
    One video with a teacher-forced memory (GT masks under slots in order of first appearance, as
    training and inference allocate them), one frame at a time: :meth:`frame` collects the
    (target slot, answered column) pairs of the seen GT instances in ``answers``.
    """

    def __init__(self, model, gt_frames: List[Dict[int, dict]]):
        """gt_frames: per frame {GT track id: RLE at the original size}."""
        self.model, self.gt_frames = model, gt_frames
        self.answers: List[Tuple[int, int]] = []
        self._state = model.new_video_state()
        self._slot_of = {}  # GT track -> memory slot

    def frame(self, t: int, image: torch.Tensor, bottom_up: Optional[Dict[str, torch.Tensor]] = None) -> None:
        """Frame t (``image`` (3, h, w) at the network input size); ``bottom_up``: its bottom-up
        features if computed already (see ``teacher_forced_frame``)."""
        num_ids, gt = self.model.num_ids, self.gt_frames[t]
        for track in gt:
            if track not in self._slot_of and len(self._slot_of) < num_ids - 1:
                self._slot_of[track] = len(self._slot_of)
        tracks = [k for k in gt if k in self._slot_of]
        masks = _input_masks([gt[k] for k in tracks], image.shape[-2:])
        slots = torch.as_tensor([self._slot_of[k] for k in tracks], dtype=torch.long)
        probs, targets = self.model.teacher_forced_frame(self._state, image, masks, slots, bottom_up=bottom_up)
        picks = probs[:, :num_ids].argmax(1).tolist()
        self.answers += [(y, a) for y, a in zip(targets.tolist(), picks) if y < num_ids - 1]


class InferenceMemoryProbe:
    """
    The "inference memory" answers of one video, collected while the video runs online (the
    tracking diagnosis' own pass, so the model does not run the video again): wrap each
    ``inference_frame`` call in :meth:`frame`; GT instances are probed with ``identify`` against
    the memory the model's own detections and IDs wrote. The teacher-forced memory
    (:class:`TeacherForcedRun`, ``teacher_forced``) runs in step on the same frames and reuses
    their bottom-up features (they do not depend on the memory), so the backbone's bottom-up runs
    once per frame for both modes.
    """

    def __init__(self, model, gt_frames: List[Dict[int, dict]], gt_iou_thresh: float):
        """gt_frames: per frame {GT track id: RLE at the original size}."""
        self.model, self.gt_frames, self.gt_iou_thresh = model, gt_frames, gt_iou_thresh
        self.answers: List[Tuple[int, int]] = []
        self.teacher_forced = TeacherForcedRun(model, gt_frames)
        self._track_of = {}  # GT track -> model track id it was last matched to

    def frame(self, state, t: int, image: torch.Tensor, height: int, width: int):
        """``model.inference_frame(state, image, height, width)`` for frame t, probed; returns its output."""
        model, num_ids, gt = self.model, self.model.num_ids, self.gt_frames[t]
        slot_of_track = {track: slot for slot, track in state.assigner.slot_tracks.items()}
        held = None if state.memory.is_empty else state.memory.held_slots(num_ids - 1)[0].tolist()
        out = model.inference_frame(state, image, height, width)
        gts = list(gt)
        if held is not None and gts:
            probs = model.identify(state, _input_masks([gt[k] for k in gts], image.shape[-2:]))
            picks = probs[:, :num_ids].argmax(1).tolist()
            for k, answer in zip(gts, picks):
                slot = slot_of_track.get(self._track_of.get(k, -1), -1)
                if slot >= 0 and held[slot]:
                    self.answers.append((slot, answer))
        det_rles = as_rles(out.pred_masks.cpu().numpy())
        if gts and det_rles:
            ious = mask_util.iou(det_rles, [gt[k] for k in gts], [0] * len(gts))
            for g, k in enumerate(gts):
                d = int(np.argmax(ious[:, g]))
                if ious[d, g] >= self.gt_iou_thresh:
                    self._track_of[k] = int(out.ID[d])
        self.teacher_forced.frame(t, image, bottom_up=state.last_frame["bottom_up"])
        return out


def id_head_summary(pairs: Dict[str, List[Tuple[int, int]]], num_ids: int) -> Dict:
    """
    Args:
        pairs: {mode: (target slot, answered column) pairs of the seen GT instances}, modes in
            :data:`MODES` order.
        num_ids: N, the model's ID columns (the last one, N-1, is "new").
    Returns:
        {mode: {seen, accuracy, prior, answered_new, answered_other}} (fractions of ``seen``;
        NaN when nothing was seen). ``prior``: the share of the most frequent target slot.
    """
    new_column = num_ids - 1
    result = OrderedDict()
    for mode, got in pairs.items():
        n = len(got)
        frac = (lambda c: c / n) if n else (lambda c: float("nan"))
        prior = Counter(y for y, _ in got).most_common(1)[0][1] if n else 0
        result[mode] = OrderedDict(
            seen=n,
            accuracy=frac(sum(y == a for y, a in got)),
            prior=frac(prior),
            answered_new=frac(sum(a == new_column for _, a in got)),
            answered_other=frac(sum(a != y and a != new_column for y, a in got)),
        )
    return result
