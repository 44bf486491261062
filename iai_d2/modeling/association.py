"""
Hybrid Association Block (HAB): one pre-norm long/short-term transformer layer (AOT's LSTT) that
lets the current frame attend to a global memory (selected earlier frames) and a local memory (the
previous frame, within a window) whose values carry the ID embedding of those frames.

Tokens are (L, B, C) with L = h * w flattened row-major; maps are (B, C, h, w).
"""

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable

__all__ = [
    "sine_position_embedding",
    "DropPath",
    "GatedChannelTransform",
    "FeedForward",
    "LocalAttention",
    "global_attention",
    "distance_bias",
    "tokens_to_map",
    "HybridAssociationBlock",
]


def tokens_to_map(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """(h*w, B, C) tokens -> (B, C, h, w) map."""
    L, B, C = x.shape
    return x.permute(1, 2, 0).reshape(B, C, *size)


def sine_position_embedding(
    size: Tuple[int, int],
    dim: int,
    device: Optional[torch.device] = None,
    dtype: torch.dtype = torch.float32,
    temperature: float = 10000.0,
) -> torch.Tensor:
    """
    Normalised sine position embedding of an (h, w) grid.

    dim / 2 channels per axis (y first, then x); the 1-based row / column index is divided by the
    last index and scaled by 2*pi; frequencies temperature^(2*floor(i/2) / (dim/2)), sin and cos
    interleaved.

    Returns:
        (h*w, 1, dim) tokens (broadcast over the batch).
    """
    h, w = size
    num_feats = dim // 2
    freq = torch.arange(num_feats, device=device, dtype=torch.float32)
    freq = temperature ** (2 * torch.div(freq, 2, rounding_mode="floor") / num_feats)

    def encode(n: int) -> torch.Tensor:  # (n, num_feats)
        coord = (
            torch.arange(1, n + 1, device=device, dtype=torch.float32) / (n + 1e-6) * 2 * math.pi
        )
        angle = coord[:, None] / freq
        return torch.stack((angle[:, 0::2].sin(), angle[:, 1::2].cos()), dim=2).flatten(1)

    pos_y = encode(h)[:, None, :].expand(h, w, num_feats)
    pos_x = encode(w)[None, :, :].expand(h, w, num_feats)
    return torch.cat((pos_y, pos_x), dim=2).reshape(h * w, 1, dim).to(dtype)


class DropPath(nn.Module):
    """
    Stochastic depth on a residual branch of (L, B, C) tokens. As in the released IAI code (spec
    quirk Q3) the keep mask has shape (L, 1, 1): whole tokens are dropped, shared across the batch.
    """

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty(x.shape[0], 1, 1).bernoulli_(keep)
        return x * mask / keep


class GatedChannelTransform(nn.Module):
    """
    Gated channel transformation (GCT), l2 mode, on (B, C, H, W) maps:
    x * (1 + tanh(gamma * e / rms_C(e) + beta)) with e = alpha * ||x||_2 over H, W.
    alpha = 1, gamma = beta = 0 at init, so the gate starts as the identity.
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embedding = (x.pow(2).sum((2, 3), keepdim=True) + self.eps).sqrt() * self.alpha
        norm = self.gamma / (embedding.pow(2).mean(dim=1, keepdim=True) + self.eps).sqrt()
        return x * (1.0 + torch.tanh(embedding * norm + self.beta))


class FeedForward(nn.Module):
    """Linear dim->ffn, GroupNorm(32) + GELU, GCT, depthwise 5x5 conv, Linear ffn->dim."""

    def __init__(self, dim: int, ffn_dim: int):
        super().__init__()
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.norm = nn.GroupNorm(32, ffn_dim)
        self.gct = GatedChannelTransform(ffn_dim)
        self.dwconv = nn.Conv2d(ffn_dim, ffn_dim, 5, padding=2, groups=ffn_dim, bias=False)
        self.linear2 = nn.Linear(ffn_dim, dim)

    def forward(self, x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        """x: (L, B, C) tokens of an (h, w) grid -> (L, B, C)."""
        y = tokens_to_map(self.linear1(x), size)
        y = self.dwconv(self.gct(F.gelu(self.norm(y))))
        return self.linear2(y.flatten(2).permute(2, 0, 1))


def global_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    num_heads: int,
    bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """
    Multi-head attention without in/out projections, logits scaled by 1/sqrt(C / heads).

    Args:
        q: (L, B, C) queries; k, v: (M, B, C) memory keys and values.
        bias: optional (heads, L, M) added to the logits.
    Returns:
        (L, B, C)
    """
    L, B, C = q.shape

    def split(t):  # (n, B, C) -> (B, heads, n, C/heads)
        return t.reshape(t.shape[0], B, num_heads, C // num_heads).permute(1, 2, 0, 3)

    out = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=bias)
    return out.permute(2, 0, 1, 3).reshape(L, B, C)


def distance_bias(
    size: Tuple[int, int], num_frames: int, slopes: torch.Tensor
) -> torch.Tensor:
    """
    ALiBi-style bias of the global memory attention: head h's logit of a memory token is lowered
    by slopes[h] per token of Euclidean distance between its grid cell and the query's, in every
    stored frame alike (a relative cue: no absolute position enters the features).

    Args:
        size: (h, w) grid of the current frame and of every stored frame.
        num_frames: M, stored frames in the global memory (keys are M * h * w tokens).
        slopes: (heads,) non-negative.
    Returns:
        (heads, h*w, M*h*w)
    """
    h, w = size
    ys, xs = torch.meshgrid(
        torch.arange(h, device=slopes.device, dtype=slopes.dtype),
        torch.arange(w, device=slopes.device, dtype=slopes.dtype),
        indexing="ij",
    )
    cells = torch.stack((ys.flatten(), xs.flatten()), dim=1)  # (L, 2)
    dist = torch.cdist(cells, cells)  # (L, L)
    return (-slopes[:, None, None] * dist).repeat(1, 1, num_frames)


class LocalAttention(nn.Module):
    """
    Multi-head local attention: every query position attends to the window x window neighbourhood
    around the same position of a key/value map (zero padded; padded positions get no weight).
    No in-projections. Logits = q.k / sqrt(C/heads) + a relative-position bias predicted from the
    query (grouped 1x1 conv); aggregated values = v + a learned per-head, per-offset value bias.
    Implemented with F.unfold (pure PyTorch).
    """

    def __init__(self, dim: int, num_heads: int, window: int):
        super().__init__()
        self.num_heads = num_heads
        self.window = window
        self.rel_bias = nn.Conv2d(dim, num_heads * window * window, 1, groups=num_heads)
        self.value_bias = nn.Parameter(torch.zeros(num_heads, dim // num_heads, window * window))
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """
        Args:
            q, k, v: (B, C, h, w) maps.
        Returns:
            (h*w, B, C) tokens (after the output projection).
        """
        B, C, h, w = q.shape
        heads, d, W2, L = self.num_heads, C // self.num_heads, self.window**2, h * w
        pad = self.window // 2

        def windows(t):  # (B, C, h, w) -> (B, heads, d, W2, L); offset index = dy * window + dx
            return F.unfold(t, self.window, padding=pad).view(B, heads, d, W2, L)

        logits = torch.einsum(
            "bhdl,bhdwl->bhwl", q.reshape(B, heads, d, L) / math.sqrt(d), windows(k)
        )
        logits = logits + self.rel_bias(q).view(B, heads, W2, L)
        inside = F.unfold(q.new_ones(1, 1, h, w), self.window, padding=pad).view(1, 1, W2, L) > 0
        attn = logits.masked_fill(~inside, float("-inf")).softmax(dim=2)
        out = torch.einsum("bhwl,bhdwl->bhdl", attn, windows(v))
        out = out + torch.einsum("bhwl,hdw->bhdl", attn, self.value_bias)
        return self.out_proj(out.reshape(B, C, L).permute(2, 0, 1))


class HybridAssociationBlock(nn.Module):
    """
    One pre-norm LSTT layer (spec section 4.1):
        x = x + DropPath(SelfAttn(LN(x) + pos, LN(x) + pos, LN(x)))          # SELF_HEADS, sine pos
        z = LN(x); q = W_Q z                                                # keys = queries
        x = x + GlobalAttn(q, K_G, V_G) + DropPath(LocalAttn(q, K_S, V_S))  # ATT_HEADS, no in-proj
        x = x + DropPath(FFN(LN(x)))
        out = LN(x)
    Memory values are W_V(z_m + E(Y_m)) (`fuse_value`) of earlier frames m. The global branch is not
    dropped (first layer, as in the released code). ASSOCIATION.GLOBAL / LOCAL remove the branches;
    ASSOCIATION.POSITION_EMBEDDING False drops the sine position embedding;
    ASSOCIATION.GLOBAL_DISTANCE_SLOPES adds `distance_bias` to the global attention's logits.
    """

    @configurable
    def __init__(
        self,
        *,
        dim: int = 256,
        self_heads: int = 4,
        att_heads: int = 2,
        ffn_dim: int = 1024,
        window: int = 15,
        drop_path: float = 0.1,
        use_local: bool = True,
        use_global: bool = True,
        position_embedding: bool = True,
        global_distance_slopes: Tuple[float, ...] = (),
    ):
        super().__init__()
        if dim % 4 != 0 or dim % self_heads != 0 or dim % att_heads != 0:
            raise ValueError(
                f"MODEL.IAI.ASSOCIATION.DIM={dim} must be divisible by 4 (sine position "
                f"embedding), SELF_HEADS={self_heads} and ATT_HEADS={att_heads}"
            )
        if ffn_dim % 32 != 0:
            raise ValueError(
                f"MODEL.IAI.ASSOCIATION.FFN_DIM={ffn_dim} must be a multiple of 32 (GroupNorm)"
            )
        if window < 1 or window % 2 == 0:
            raise ValueError(f"MODEL.IAI.ASSOCIATION.WINDOW={window} must be a positive odd number")
        if global_distance_slopes and (
            len(global_distance_slopes) != att_heads or min(global_distance_slopes) < 0
        ):
            raise ValueError(
                f"MODEL.IAI.ASSOCIATION.GLOBAL_DISTANCE_SLOPES={list(global_distance_slopes)} must "
                f"be empty or hold ATT_HEADS={att_heads} non-negative values"
            )
        self.dim = dim
        self.att_heads = att_heads
        self.position_embedding = position_embedding
        self.register_buffer(
            "global_distance_slopes",
            torch.tensor(global_distance_slopes, dtype=torch.float32) if global_distance_slopes else None,
            persistent=False,
        )

        self.norm_self = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, self_heads)
        self.norm_mem = nn.LayerNorm(dim)
        self.linear_q = nn.Linear(dim, dim)
        self.linear_v = nn.Linear(dim, dim)
        self.global_out = nn.Linear(dim, dim) if use_global else None
        self.local_attn = LocalAttention(dim, att_heads, window) if use_local else None
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_dim)
        self.norm_out = nn.LayerNorm(dim)
        self.drop_path = DropPath(drop_path)
        self._reset_parameters()

    @classmethod
    def from_config(cls, cfg):
        a = cfg.MODEL.IAI.ASSOCIATION
        return {
            "dim": a.DIM,
            "self_heads": a.SELF_HEADS,
            "att_heads": a.ATT_HEADS,
            "ffn_dim": a.FFN_DIM,
            "window": a.WINDOW,
            "drop_path": a.DROP_PATH,
            "use_local": a.LOCAL,
            "use_global": a.GLOBAL,
            "position_embedding": a.POSITION_EMBEDDING,
            "global_distance_slopes": tuple(a.GLOBAL_DISTANCE_SLOPES),
        }

    def _reset_parameters(self):
        """Xavier-uniform for all >= 2-D parameters but GCT (identity) and the value bias (zero)."""
        own_init = {id(p) for p in self.ffn.gct.parameters()}
        if self.local_attn is not None:
            own_init.add(id(self.local_attn.value_bias))
        for p in self.parameters():
            if p.dim() > 1 and id(p) not in own_init:
                nn.init.xavier_uniform_(p)

    def fuse_value(self, vraw: torch.Tensor, id_emb: torch.Tensor) -> torch.Tensor:
        """Memory value W_V(vraw + E): vraw (L, B, C), id_emb broadcastable to it -> (L, B, C)."""
        return self.linear_v(vraw + id_emb)

    def forward(
        self,
        x: torch.Tensor,
        size: Tuple[int, int],
        memory: Optional[
            Tuple[Tuple[torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]
        ] = None,
        id_emb: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """
        Args:
            x: (L, B, C) tokens of the current frame on an (h, w) grid, L = h * w.
            size: (h, w).
            memory: ((K_G, V_G), (K_S, V_S)) built from earlier frames: global tokens (M*L, B, C)
                and local maps (B, C, h, w). None for the reference pass.
            id_emb: reference pass only: ID embedding (anything broadcastable to (L, B, C)); the
                frame then attends to itself with values W_V(LN(x) + id_emb).
        Returns:
            out: (L, B, C).
            (K_cur, Vraw_cur): (L, B, C) each: this frame's memory key and its value before the ID
                embedding is fused (`fuse_value`).
        """
        if (memory is None) == (id_emb is None):
            raise ValueError("pass exactly one of `memory` (match) and `id_emb` (reference pass)")
        if x.shape[0] != size[0] * size[1]:
            raise ValueError(f"{x.shape[0]} tokens do not form a grid of size {tuple(size)}")
        z = self.norm_self(x)
        qk = z
        if self.position_embedding:
            qk = z + sine_position_embedding(size, self.dim, x.device, x.dtype)
        x = x + self.drop_path(self.self_attn(qk, qk, z, need_weights=False)[0])

        z = self.norm_mem(x)
        q = self.linear_q(z)
        if memory is None:
            v = self.fuse_value(z, id_emb)
            memory = ((q, v), (tokens_to_map(q, size), tokens_to_map(v, size)))
        (k_global, v_global), (k_local, v_local) = memory
        if self.global_out is not None:
            bias = None
            if self.global_distance_slopes is not None:
                if k_global.shape[0] % q.shape[0]:
                    raise ValueError(
                        f"GLOBAL_DISTANCE_SLOPES needs stored frames on the current {tuple(size)} "
                        f"grid; got {k_global.shape[0]} global memory tokens"
                    )
                slopes = self.global_distance_slopes.to(q.dtype)
                bias = distance_bias(size, k_global.shape[0] // q.shape[0], slopes)
            x = x + self.global_out(global_attention(q, k_global, v_global, self.att_heads, bias))
        if self.local_attn is not None:
            x = x + self.drop_path(self.local_attn(tokens_to_map(q, size), k_local, v_local))

        x = x + self.drop_path(self.ffn(self.norm_ffn(x), size))
        return self.norm_out(x), (q, z)
