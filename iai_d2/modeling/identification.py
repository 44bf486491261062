"""Identification: the ID bank and the one-hot ID masks / ID targets it is trained with.

ID index space, with N = MODEL.IAI.NUM_IDS:
    0 .. N-2   memory slots of instances already seen earlier in the video (or clip),
    N-1        "new instance" (an ID target only; never written into a mask),
    N          background.
"""

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn


def _check_slots(slots: torch.Tensor, num_ids: int, where: str) -> None:
    """Raise a ValueError when a memory slot lies outside [0, N-2]."""
    bad = (slots < 0) | (slots > num_ids - 2)
    if bool(bad.any()):
        raise ValueError(
            f"{where}: ID slot {int(slots[bad][0])} is outside [0, {num_ids - 2}]: the clip has "
            f"more instances than MODEL.IAI.NUM_IDS - 1 = {num_ids - 1} allows; raise "
            "MODEL.IAI.NUM_IDS."
        )


class IDBank(nn.Module):
    """
    Patch-wise ID bank: a strided conv that turns a full-resolution one-hot ID mask Y into an ID
    embedding on the stride-s grid. Each token receives a learned linear function of the ID content
    of the pixels around it (the paper's E = Y^T D, generalised spatially).

    Token i sits where the backbone's feature i sits (pixel s*i, as Detectron2's anchors assume),
    and its kernel of 2s-1 pixels reaches the centres of its neighbours: it sees pixels
    [s*i - s + 1, s*i + s - 1], so every pixel of Y reaches a token at any input size. The
    released kernel (s+1, padding s/2) had the same centre but left the last s/2 - 1 rows and
    columns of every frame unseen.
    """

    def __init__(self, num_ids: int, dim: int, stride: int = 32):
        """
        Args:
            num_ids: N; Y has N + 1 channels (channel N = background).
            dim: embedding width C.
            stride: stride s of the token grid the embedding lives on.
        """
        super().__init__()
        if num_ids < 2:
            raise ValueError(f"MODEL.IAI.NUM_IDS must be >= 2 (one slot + 'new'), got {num_ids}")
        self.num_ids = num_ids
        self.stride = stride
        self.conv = nn.Conv2d(
            num_ids + 1, dim, kernel_size=2 * stride - 1, stride=stride, padding=stride - 1
        )
        nn.init.xavier_uniform_(self.conv.weight)

    def forward(self, Y: torch.Tensor) -> torch.Tensor:
        """
        Args:
            Y: (B, N+1, Hp, Wp) float one-hot ID mask.
        Returns:
            E: (B, C, ceil(Hp / s), ceil(Wp / s)).
        """
        if Y.dim() != 4 or Y.shape[1] != self.num_ids + 1:
            raise ValueError(
                f"ID mask must have shape (B, N+1={self.num_ids + 1}, Hp, Wp), got {tuple(Y.shape)}"
            )
        return self.conv(Y)

    def empty_embedding(self) -> torch.Tensor:
        """(C,) embedding of an all-zero Y at every position (= the conv bias); reference pass."""
        return self.conv.bias


def paint_id_labels(
    masks: Sequence[torch.Tensor],
    ids: Sequence[torch.Tensor],
    num_ids: int,
    padded_size: Tuple[int, int],
) -> torch.Tensor:
    """
    Rasterise the instances of a batch of frames into an ID label map.

    Args:
        masks: per image a bool tensor (K_i, H_i, W_i) with H_i <= Hp, W_i <= Wp (top-left aligned,
            as in an ImageList).
        ids: per image a long tensor (K_i,) with the ID index (0 .. N-1) of each instance.
        num_ids: N.
        padded_size: (Hp, Wp).
    Returns:
        labels: (B, Hp, Wp) long. A pixel covered by several instances belongs to the one of
        smallest mask area; uncovered and padding pixels are background (N).
    """
    if len(masks) == 0 or len(masks) != len(ids):
        raise ValueError(
            f"ID masks need one mask tensor and one ID tensor per image (>= 1 image), "
            f"got {len(masks)} and {len(ids)}"
        )
    Hp, Wp = padded_size
    device = masks[0].device
    labels = torch.full((len(masks), Hp, Wp), num_ids, dtype=torch.long, device=device)
    for i, (m, s) in enumerate(zip(masks, ids)):
        if m.dim() != 3 or m.shape[0] != s.numel():
            raise ValueError(
                f"image {i}: masks of shape {tuple(m.shape)} do not match {s.numel()} IDs"
            )
        H, W = m.shape[1:]
        if H > Hp or W > Wp:
            raise ValueError(f"image {i}: mask size {(H, W)} exceeds the padded size {(Hp, Wp)}")
        m = m.to(device=device, dtype=torch.bool)
        s = s.to(device)
        area = m.flatten(1).sum(1)
        # Paint from the largest to the smallest instance: the smallest one ends up on top.
        for k in torch.argsort(area, descending=True, stable=True).tolist():
            labels[i, :H, :W][m[k]] = s[k]
    return labels


def build_id_mask(
    masks: Sequence[torch.Tensor],
    slots: Sequence[torch.Tensor],
    num_ids: int,
    padded_size: Tuple[int, int],
) -> torch.Tensor:
    """
    One-hot ID mask Y of a batch of frames (the ID bank's input), see :func:`paint_id_labels`.

    Args:
        slots: per image a long tensor (K_i,) with the memory slot (0 .. N-2) of each instance.
    Returns:
        Y: (B, N+1, Hp, Wp) float one-hot; channel N = background (uncovered and padding pixels).
    """
    for i, s in enumerate(slots):
        _check_slots(s, num_ids, f"image {i}")
    labels = paint_id_labels(masks, slots, num_ids, padded_size)
    return F.one_hot(labels, num_ids + 1).permute(0, 3, 1, 2).float()


def first_appearance_slots(
    track_ranks: Sequence[torch.Tensor], num_ids: int, generator: Optional[torch.Generator] = None
) -> List[torch.Tensor]:
    """
    Memory slots of one clip's tracks, allocated the way inference allocates them: in order of
    first appearance (slot 0 to the first track seen, ...), tracks first seen in the same frame in
    random order (at inference they arrive in detection-score order).

    Args:
        track_ranks: per frame (temporal order) a long tensor (K_t,) with each instance's track
            index in the clip (any distinct non-negative integers per track).
        num_ids: N; at most N-1 tracks fit.
        generator: random source of the within-frame order.
    Returns:
        per frame a long tensor (K_t,) of slots in 0..N-2.
    """
    slot_of: dict = {}
    for ranks in track_ranks:
        unseen = [r for r in dict.fromkeys(ranks.tolist()) if r not in slot_of]
        for j in torch.randperm(len(unseen), generator=generator).tolist():
            slot_of[unseen[j]] = len(slot_of)
    slots = [
        torch.as_tensor([slot_of[r] for r in ranks.tolist()], dtype=torch.long, device=ranks.device)
        for ranks in track_ranks
    ]
    for t, s in enumerate(slots):
        _check_slots(s, num_ids, f"frame {t}")
    return slots


def id_targets(slots: torch.Tensor, held: torch.Tensor, num_ids: int) -> torch.Tensor:
    """
    ID targets of one frame's instances given what the memory holds.

    Args:
        slots: (K,) memory slot of each instance.
        held: (N-1,) bool, which slots the memory holds (in any stored frame).
        num_ids: N.
    Returns:
        (K,) long: the slot where the memory holds it, else N-1 ("new instance"). A target never
        names a slot absent from the memory.
    """
    return torch.where(held[slots], slots, torch.full_like(slots, num_ids - 1))


def perturb_masks(
    masks: torch.Tensor, drop_prob: float, jitter: int, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """
    Imitate predicted masks with GT masks, for the training memory: each instance is dropped
    (written as background) with probability ``drop_prob`` and shifted by a random integer offset
    in [-jitter, jitter] pixels along each axis (pixels shifted out are lost).

    Args:
        masks: (K, H, W) bool.
    Returns:
        (K, H, W) bool.
    """
    if drop_prob <= 0 and jitter <= 0:
        return masks
    out = torch.zeros_like(masks)
    H, W = masks.shape[-2:]
    for k in range(masks.shape[0]):
        if float(torch.rand((), generator=generator)) < drop_prob:
            continue
        dy, dx = (torch.randint(-jitter, jitter + 1, (2,), generator=generator) if jitter > 0
                  else torch.zeros(2, dtype=torch.long)).tolist()
        out[k, max(dy, 0): H + min(dy, 0), max(dx, 0): W + min(dx, 0)] = masks[
            k, max(-dy, 0): H + min(-dy, 0), max(-dx, 0): W + min(-dx, 0)
        ]
    return out
