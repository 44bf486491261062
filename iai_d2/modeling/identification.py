"""Identification: the ID bank and the one-hot ID masks / ID targets it is trained with.

ID index space, with N = MODEL.IAI.NUM_IDS:
    0 .. N-2   memory slots of instances already seen earlier in the video (or clip),
    N-1        "new instance" (an ID target only; never written into a mask),
    N          background.
"""

from typing import List, Sequence, Tuple

import torch
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
    of the (s+1) x (s+1) pixel patch around it (the paper's E = Y^T D, generalised spatially).
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
            num_ids + 1, dim, kernel_size=stride + 1, stride=stride, padding=stride // 2
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


def build_id_mask(
    masks: Sequence[torch.Tensor],
    slots: Sequence[torch.Tensor],
    num_ids: int,
    padded_size: Tuple[int, int],
) -> torch.Tensor:
    """
    Rasterise the instances of a batch of frames into a one-hot ID mask.

    Args:
        masks: per image a bool tensor (K_i, H_i, W_i) with H_i <= Hp, W_i <= Wp (top-left aligned,
            as in an ImageList).
        slots: per image a long tensor (K_i,) with the memory slot (0 .. N-2) of each instance.
        num_ids: N.
        padded_size: (Hp, Wp).
    Returns:
        Y: (B, N+1, Hp, Wp) float one-hot. A pixel covered by several instances belongs to the one
        of smallest mask area; uncovered and padding pixels belong to the background channel N.
    """
    if len(masks) == 0 or len(masks) != len(slots):
        raise ValueError(
            f"build_id_mask needs one mask tensor and one slot tensor per image (>= 1 image), "
            f"got {len(masks)} and {len(slots)}"
        )
    Hp, Wp = padded_size
    device = masks[0].device
    labels = torch.full((len(masks), Hp, Wp), num_ids, dtype=torch.long, device=device)
    for i, (m, s) in enumerate(zip(masks, slots)):
        if m.dim() != 3 or m.shape[0] != s.numel():
            raise ValueError(
                f"image {i}: masks of shape {tuple(m.shape)} do not match {s.numel()} slots"
            )
        H, W = m.shape[1:]
        if H > Hp or W > Wp:
            raise ValueError(f"image {i}: mask size {(H, W)} exceeds the padded size {(Hp, Wp)}")
        _check_slots(s, num_ids, f"image {i}")
        m = m.to(device=device, dtype=torch.bool)
        s = s.to(device)
        area = m.flatten(1).sum(1)
        # Paint from the largest to the smallest instance: the smallest one ends up on top.
        for k in torch.argsort(area, descending=True, stable=True).tolist():
            labels[i, :H, :W][m[k]] = s[k]
    Y = torch.zeros(len(masks), num_ids + 1, Hp, Wp, device=device)
    return Y.scatter_(1, labels.unsqueeze(1), 1.0)


def clip_id_targets(slots_per_frame: Sequence[torch.Tensor], num_ids: int) -> List[torch.Tensor]:
    """
    ID targets of the instances of one clip.

    Args:
        slots_per_frame: per frame (temporal order) a long tensor (K_t,): each instance's clip slot.
        num_ids: N.
    Returns:
        per frame a long tensor (K_t,): the slot if that slot appeared in an earlier frame of the
        clip, else N-1 ("new instance"). Re-appearing instances keep their slot.
    """
    seen: set = set()
    targets = []
    for t, slots in enumerate(slots_per_frame):
        _check_slots(slots, num_ids, f"frame {t}")
        earlier = torch.tensor(sorted(seen), dtype=slots.dtype, device=slots.device)
        is_old = torch.isin(slots, earlier)
        targets.append(torch.where(is_old, slots, torch.full_like(slots, num_ids - 1)))
        seen.update(slots.tolist())
    return targets
