"""
Association memory of one video (or one batch of training clips processed in lockstep).

Per frame t the HAB reads a global memory (frame 0, frames reached by the GLOBAL_INTERVAL rule and
frames that allocated new IDs) and a local memory (frame t-1). A memory entry of frame m is the key
K_m = W_Q LN(x_m) and the value V_m = W_V(LN(x_m) + E(Y_m)), where Y_m is the one-hot ID mask of
frame m (ground truth in training, predictions at test time) and E the ID bank.

Protocol (spec section 4.4 / Appendix A):
    frame 0:  out = reference(x0)      # attends to itself, all-zero Y
              reset_memory(Y0)         # global := {f0}, local := f0
    frame t:  out = match(xt)          # reads global + local memory
              update(Yt, new_ids)      # local := ft; ft joins the global memory on interval/new ID

The global memory is bounded to MAX_GLOBAL frames with the first frame pinned, so the memory is
constant for any video length. Beyond the bound, EVICTION "oldest" evicts the oldest other frame;
"keep_identities" evicts the oldest other frame whose every identity is painted in a newer stored
frame, so that the last stored view of an identity that left the picture (hidden, out of frame,
missed) stays until its slot is recycled or no such frame exists (then the oldest goes), as
XMem / Cutie keep long-term memory of objects not seen lately. Every stored frame keeps its ID
labels, so the memory knows which slots it holds (`held_slots`: ID targets never name a slot
absent from it) and can forget a slot that inference recycles (`forget_slots`). Nothing is detached: in training
gradients flow from later frames into earlier frames' features and into the ID bank.
"""

from dataclasses import dataclass
from typing import Iterable, List, Optional, Tuple

import torch
import torch.nn.functional as F

from .association import HybridAssociationBlock, tokens_to_map
from .identification import IDBank

__all__ = ["AssociationMemory", "EVICTION_POLICIES"]

EVICTION_POLICIES = ("oldest", "keep_identities")


@dataclass
class _StoredFrame:
    """One remembered frame: key K (L, B, C), raw value (L, B, C), ID labels (B, Hp, Wp) and the
    fused value V = W_V(raw + E(Y)) (L, B, C)."""

    frame: int
    key: torch.Tensor
    raw_value: torch.Tensor
    labels: torch.Tensor
    value: torch.Tensor

    def painted(self, num_slots: int) -> torch.Tensor:
        """(B, num_slots) bool: which of the slots 0 .. num_slots-1 are painted in the frame."""
        hit = torch.zeros(self.labels.shape[0], num_slots + 1, dtype=torch.bool, device=self.labels.device)
        return hit.scatter_(1, self.labels.flatten(1).long().clamp(max=num_slots), True)[:, :num_slots]


class AssociationMemory:
    """
    Memory state of one HAB layer for B streams (tensors are (L, B, C) tokens, (B, C, h, w) maps).

    Counters follow the released code: `frame_step` is 1 after frame 0 and t + 1 once frame t has
    been matched; `last_mem_step` is the `frame_step` of the last global insertion (0 for frame 0).
    With GLOBAL_INTERVAL 3 and no new IDs the global memory holds frames {0, 2, 5, 8, ...}.
    """

    def __init__(
        self,
        hab: HybridAssociationBlock,
        id_bank: IDBank,
        global_interval: int = 3,
        max_global: int = 8,
        eviction: str = "oldest",
    ):
        """
        Args:
            hab: the block whose memories are held.
            id_bank: the ID bank embedding the ID masks passed to reset_memory / update.
            global_interval: a frame joins the global memory when this many frames passed since
                the last insertion (MODEL.IAI.MEMORY.GLOBAL_INTERVAL).
            max_global: bound on the global memory in frames, first frame included
                (MODEL.IAI.MEMORY.MAX_GLOBAL).
            eviction: "oldest" or "keep_identities" (MODEL.IAI.MEMORY.EVICTION, see the module
                docstring).
        """
        if global_interval < 1:
            raise ValueError(
                f"MODEL.IAI.MEMORY.GLOBAL_INTERVAL must be >= 1, got {global_interval}"
            )
        if max_global < 1:
            raise ValueError(f"MODEL.IAI.MEMORY.MAX_GLOBAL must be >= 1, got {max_global}")
        if eviction not in EVICTION_POLICIES:
            raise ValueError(f"MODEL.IAI.MEMORY.EVICTION must be one of {EVICTION_POLICIES}, got {eviction!r}")
        self.hab = hab
        self.id_bank = id_bank
        self.global_interval = global_interval
        self.max_global = max_global
        self.eviction = eviction
        self.size: Optional[Tuple[int, int]] = None
        self.frame_step = 0
        self.last_mem_step = 0
        # Global memory in time order; entry 0 = the pinned first frame.
        self._global: List[_StoredFrame] = []
        # The previous frame (local memory).
        self._local: Optional[_StoredFrame] = None
        # (K_cur, Vraw_cur) (L, B, C) of the frame attended last, waiting for its ID mask.
        self._current: Optional[Tuple[torch.Tensor, torch.Tensor]] = None

    @property
    def is_empty(self) -> bool:
        """True until a frame is remembered (reset_memory): the next frame is a reference pass."""
        return not self._global

    @property
    def global_frames(self) -> List[int]:
        """Frame indices held in the global memory, in time order (the first one is pinned)."""
        return [entry.frame for entry in self._global]

    def global_kv(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Global memory keys and values, each (M*L, B, C) for M frames."""
        return (
            torch.cat([e.key for e in self._global], dim=0),
            torch.cat([e.value for e in self._global], dim=0),
        )

    def local_kv(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Local memory (previous frame) keys and values, each (B, C, h, w)."""
        return tokens_to_map(self._local.key, self.size), tokens_to_map(self._local.value, self.size)

    def held_slots(self, num_slots: int) -> torch.Tensor:
        """
        Slots the block can read: painted in a stored frame of a memory it attends to (global
        and / or local, per ASSOCIATION.GLOBAL / LOCAL).

        Returns:
            (B, num_slots) bool; (0, num_slots) while the memory is empty.
        """
        if self.is_empty:
            return torch.zeros(0, num_slots, dtype=torch.bool)
        entries = (self._global if self.hab.global_out is not None else []) + (
            [self._local] if self.hab.local_attn is not None else []
        )
        held = self._global[0].painted(num_slots).zero_()  # (B, num_slots); none read without memories
        for entry in entries:
            held |= entry.painted(num_slots)
        return held

    def forget_slots(self, slots: Iterable[int]) -> None:
        """
        Repaint the given slots as background in every stored frame (a recycled slot must not
        show its old owner to the new one). Values of the frames concerned are recomputed.
        """
        slots = list(slots)
        if not slots:
            return
        background = self.id_bank.num_ids
        for entry in {id(e): e for e in self._global + [self._local] if e is not None}.values():
            hit = torch.isin(entry.labels, torch.as_tensor(slots, device=entry.labels.device))
            if bool(hit.any()):
                entry.labels = entry.labels.masked_fill(hit, background)
                Y = F.one_hot(entry.labels.long(), background + 1).permute(0, 3, 1, 2)
                entry.value = self._fused_value(entry.raw_value, Y)

    def reference(self, x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        """
        Reference pass of the first frame: forget everything, attend to the frame itself with the
        embedding of an all-zero ID mask.

        Args:
            x: (L, B, C) tokens of an (h, w) grid.
        Returns:
            (L, B, C)
        """
        out, current = self.hab(x, size, id_emb=self.id_bank.empty_embedding())
        self._global, self._local = [], None
        self.frame_step = self.last_mem_step = 0
        self.size = tuple(size)
        self._current = current
        return out

    def match(self, x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        """
        Attend the frame to the global and local memory.

        Args:
            x: (L, B, C) tokens of an (h, w) grid (same grid as the first frame).
        Returns:
            (L, B, C)
        """
        if self.is_empty:
            raise RuntimeError(
                "match() needs a remembered first frame: call reference() and reset_memory()"
            )
        if x.shape[1] != self._global[0].key.shape[1]:
            raise ValueError(
                f"batch of {x.shape[1]} streams, but the memory holds {self._global[0].key.shape[1]}"
            )
        if tuple(size) != self.size:
            raise ValueError(
                f"frame grid {tuple(size)} differs from the video's first frame {self.size}: all "
                "frames of a video must be resized and padded to the same size"
            )
        out, current = self.hab(x, size, memory=(self.global_kv(), self.local_kv()))
        self.frame_step += 1
        self._current = current
        return out

    def reset_memory(self, Y: torch.Tensor) -> None:
        """
        Remember the reference frame with its ID mask: global := {frame 0}, local := frame 0.
        Uses the reference pass's (K_cur, Vraw_cur), i.e. the layer is not re-run.

        Args:
            Y: (B, N+1, Hp, Wp) one-hot ID mask of the reference frame, Hp = h * stride.
        """
        entry = self._store_current(0, Y)
        self._global = [entry]
        self._local = entry
        self.frame_step, self.last_mem_step = 1, 0

    def update(self, Y: torch.Tensor, new_ids: bool = False) -> None:
        """
        Remember the frame matched last: it replaces the local memory, and joins the global
        memory when GLOBAL_INTERVAL frames passed since the last insertion or when `new_ids`
        (it allocated new IDs). Beyond MAX_GLOBAL frames one frame after the first one is evicted
        (EVICTION, see the module docstring).

        Args:
            Y: (B, N+1, Hp, Wp) one-hot ID mask of that frame.
            new_ids: whether new IDs were allocated in that frame.
        """
        if self.is_empty:
            raise RuntimeError("update() needs a remembered first frame: call reset_memory() first")
        entry = self._store_current(self.frame_step - 1, Y)
        self._local = entry
        if new_ids or self.frame_step - self.last_mem_step >= self.global_interval:
            self._global.append(entry)
            if len(self._global) > self.max_global:
                del self._global[self._evictable()]
            self.last_mem_step = self.frame_step

    def _evictable(self) -> int:
        """Index (>= 1) in the global memory of the frame to evict."""
        if self.eviction == "oldest":
            return 1
        # painted[i]: (B, N) identities (slots and "new") painted in stored frame i, per stream.
        painted = [entry.painted(self.id_bank.num_ids) for entry in self._global]
        for i in range(1, len(self._global) - 1):
            newer = torch.stack(painted[i + 1:]).any(0)
            if bool((newer | ~painted[i]).all()):
                return i
        return 1

    def _fused_value(self, raw_value: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        """W_V(raw + E(Y)) for a one-hot ID mask Y (B, N+1, Hp, Wp) -> (L, B, C)."""
        emb = self.id_bank(Y.to(raw_value.dtype)).flatten(2).permute(2, 0, 1)
        return self.hab.fuse_value(raw_value, emb)

    def _store_current(self, frame: int, Y: torch.Tensor) -> _StoredFrame:
        """The frame attended last, fused with its ID mask Y (B, N+1, Hp, Wp); consumes it."""
        if self._current is None:
            raise RuntimeError(
                "no attended frame is waiting for its ID mask: call reference() / match() before "
                "reset_memory() / update() (once per frame)"
            )
        h, w = self.size
        s = self.id_bank.stride
        k, vraw = self._current
        if Y.dim() != 4 or Y.shape[0] != k.shape[1] or tuple(Y.shape[-2:]) != (h * s, w * s):
            raise ValueError(
                f"ID mask of shape {tuple(Y.shape)} does not fit the frame: expected "
                f"(B={k.shape[1]}, N+1, {h * s}, {w * s}) (the padded image size, a multiple of "
                f"{s})"
            )
        self._current = None
        labels = Y.argmax(1).to(torch.uint8 if Y.shape[1] <= 256 else torch.int16)
        return _StoredFrame(frame, k, vraw, labels, self._fused_value(vraw, Y))
