import math

import pytest
import torch
import torch.nn.functional as F

from iai_d2.modeling.association import (
    HybridAssociationBlock,
    LocalAttention,
    distance_bias,
    global_attention,
)
from iai_d2.modeling.identification import IDBank
from iai_d2.modeling.memory import AssociationMemory


def _hab(**kwargs):
    args = dict(dim=32, self_heads=4, att_heads=2, ffn_dim=64, window=3, drop_path=0.0)
    args.update(kwargs)
    return HybridAssociationBlock(**args)


def _one_hot(B, num_ids, H, W):
    labels = torch.randint(0, num_ids + 1, (B, H, W))
    return F.one_hot(labels, num_ids + 1).permute(0, 3, 1, 2).float()


def _brute_force_local(la, q, k, v):
    """Dense L x L attention, masked outside the window, with relative and value biases."""
    B, C, h, w = q.shape
    H, W, L = la.num_heads, la.window, h * w
    d, r = C // H, la.window // 2
    # offset[p, p'] = window offset index of key p' seen from query p, -1 outside the window.
    offset = torch.full((L, L), -1, dtype=torch.long)
    for y in range(h):
        for x in range(w):
            for i in range(W):
                for j in range(W):
                    yy, xx = y - r + i, x - r + j
                    if 0 <= yy < h and 0 <= xx < w:
                        offset[y * w + x, yy * w + xx] = i * W + j
    inside = offset >= 0
    qf, kf, vf = (t.reshape(B, H, d, L) for t in (q, k, v))
    logits = torch.einsum("bhdp,bhdk->bhpk", qf, kf) / math.sqrt(d)
    rel = la.rel_bias(q).reshape(B, H, W * W, L)  # (B, H, offset, query)
    rel_dense = rel.gather(2, offset.clamp(min=0).t().reshape(1, 1, L, L).expand(B, H, L, L))
    logits = logits + rel_dense.transpose(2, 3)  # gathered as (.., key, query) -> (.., query, key)
    attn = logits.masked_fill(~inside, float("-inf")).softmax(-1)
    out = torch.einsum("bhpk,bhdk->bhdp", attn, vf)
    vbias = la.value_bias[:, :, offset.clamp(min=0)]  # (H, d, L, L)
    out = out + torch.einsum("bhpk,hdpk->bhdp", attn, vbias)
    return la.out_proj(out.reshape(B, C, L).permute(2, 0, 1))


@pytest.mark.parametrize("window,size", [(3, (5, 6)), (5, (4, 7)), (15, (4, 5))])
def test_local_attention_equals_masked_full_attention(window, size):
    torch.manual_seed(0)
    la = LocalAttention(dim=16, num_heads=2, window=window)
    with torch.no_grad():
        la.value_bias.normal_()
    q, k, v = (torch.randn(2, 16, *size) for _ in range(3))
    out = la(q, k, v)
    assert out.shape == (size[0] * size[1], 2, 16)
    torch.testing.assert_close(out, _brute_force_local(la, q, k, v), rtol=1e-4, atol=1e-5)


def test_global_attention_matches_manual():
    torch.manual_seed(0)
    q, k, v = torch.randn(6, 2, 8), torch.randn(12, 2, 8), torch.randn(12, 2, 8)
    out = global_attention(q, k, v, num_heads=2)
    for h in range(2):
        sl = slice(4 * h, 4 * h + 4)
        attn = torch.einsum("lbc,mbc->blm", q[..., sl], k[..., sl]).div(2.0).softmax(-1)
        torch.testing.assert_close(out[..., sl], torch.einsum("blm,mbc->lbc", attn, v[..., sl]))


def test_distance_bias_tells_identical_memory_tokens_apart_by_where_they_were():
    # Two stored tokens with the same key (look-alikes) but different values, at cells (0, 0)
    # and (3, 4) of a 4x5 grid; the query at (0, 1) sits next to the first.
    h, w, C = 4, 5, 8
    bias = distance_bias((h, w), 2, torch.tensor([0.0, 2.0]))
    assert bias.shape == (2, h * w, 2 * h * w) and torch.all(bias[0] == 0)
    query_cell, near, far = 1, 0, 3 * w + 4
    assert bias[1, query_cell, near] == pytest.approx(-2.0)
    assert bias[1, query_cell, far] == pytest.approx(-2.0 * math.hypot(3, 3))
    assert torch.equal(bias[:, :, : h * w], bias[:, :, h * w :])  # every stored frame alike

    q = torch.zeros(1, 1, C)
    k = torch.ones(2, 1, C)
    v = torch.stack([torch.full((C,), 1.0), torch.full((C,), -1.0)])[:, None]
    cells = [near, far]
    out = global_attention(q, k, v, num_heads=2, bias=bias[:, query_cell : query_cell + 1, cells])
    assert torch.allclose(out[..., :4], torch.zeros(4), atol=1e-6)  # slope 0: blind to position
    assert torch.all(out[..., 4:] > 0.99)  # slope 2: the stored token next to the query


def test_hab_global_distance_slopes():
    torch.manual_seed(0)
    size, B = (3, 4), 2
    x = torch.randn(12, B, 32)
    plain = _hab(window=3).eval()
    zero = _hab(window=3, global_distance_slopes=(0.0, 0.0)).eval()
    sloped = _hab(window=3, global_distance_slopes=(0.0, 1.0)).eval()
    zero.load_state_dict(plain.state_dict())  # the slopes are not parameters: same checkpoint
    sloped.load_state_dict(plain.state_dict())
    memory = ((torch.randn(24, B, 32), torch.randn(24, B, 32)),
              (torch.randn(B, 32, *size), torch.randn(B, 32, *size)))
    torch.testing.assert_close(zero(x, size, memory)[0], plain(x, size, memory)[0])
    assert not torch.allclose(sloped(x, size, memory)[0], plain(x, size, memory)[0])
    bad = ((torch.randn(13, B, 32), torch.randn(13, B, 32)), memory[1])
    with pytest.raises(ValueError, match="grid"):
        sloped(x, size, bad)
    with pytest.raises(ValueError, match="GLOBAL_DISTANCE_SLOPES"):
        _hab(global_distance_slopes=(1.0,))
    with pytest.raises(ValueError, match="GLOBAL_DISTANCE_SLOPES"):
        _hab(global_distance_slopes=(1.0, -0.5))


def _sine_reference(h, w, dim):
    pe = torch.zeros(h, w, dim)
    n = dim // 2
    for y in range(h):
        for x in range(w):
            for axis, (coord, count) in enumerate(((y + 1, h), (x + 1, w))):
                a = coord / count * 2 * math.pi
                for i in range(n):
                    f = a / 10000 ** (2 * (i // 2) / n)
                    pe[y, x, axis * n + i] = math.sin(f) if i % 2 == 0 else math.cos(f)
    return pe.reshape(h * w, 1, dim)


@pytest.mark.parametrize("position_embedding", [True, False])
def test_hab_without_memory_branches_is_a_plain_layer(position_embedding):
    torch.manual_seed(0)
    hab = _hab(use_local=False, use_global=False, position_embedding=position_embedding).eval()
    assert hab.global_out is None and hab.local_attn is None
    with torch.no_grad():  # exercise the GCT gate and the norms away from their init
        for p in list(hab.ffn.gct.parameters()) + [hab.norm_ffn.weight, hab.norm_out.bias]:
            p.normal_()
    h, w, B, C = 3, 4, 2, 32
    x = torch.randn(h * w, B, C)

    # Independent computation: self-attention + FFN + final norm.
    ln = lambda t, m: F.layer_norm(t, (C,), m.weight, m.bias)  # noqa: E731
    z = ln(x, hab.norm_self)
    qk = z + _sine_reference(h, w, C) if position_embedding else z
    wq, wk, wv = hab.self_attn.in_proj_weight.chunk(3)
    bq, bk, bv = hab.self_attn.in_proj_bias.chunk(3)
    heads = lambda t: t.reshape(h * w, B, 4, C // 4).permute(1, 2, 0, 3)  # noqa: E731
    Q, K, V = heads(qk @ wq.T + bq), heads(qk @ wk.T + bk), heads(z @ wv.T + bv)
    att = (Q @ K.transpose(-1, -2) / math.sqrt(C // 4)).softmax(-1) @ V
    att = att.permute(2, 0, 1, 3).reshape(h * w, B, C)
    x1 = x + hab.self_attn.out_proj(att)

    f = hab.ffn
    y = ln(x1, hab.norm_ffn) @ f.linear1.weight.T + f.linear1.bias
    y = y.permute(1, 2, 0).reshape(B, 64, h, w)
    y = F.gelu(F.group_norm(y, 32, f.norm.weight, f.norm.bias))
    g = f.gct
    emb = y.pow(2).sum((2, 3), keepdim=True).add(1e-5).sqrt() * g.alpha
    y = y * (
        1 + torch.tanh(emb * g.gamma / emb.pow(2).mean(1, keepdim=True).add(1e-5).sqrt() + g.beta)
    )
    y = F.conv2d(y, f.dwconv.weight, padding=2, groups=64)
    y = y.flatten(2).permute(2, 0, 1) @ f.linear2.weight.T + f.linear2.bias
    expected = ln(x1 + y, hab.norm_out)

    out, (k_cur, vraw) = hab(x, (h, w), id_emb=torch.zeros(C))
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    assert k_cur.shape == vraw.shape == (h * w, B, C)
    # The memory is irrelevant without memory branches.
    mem = ((torch.randn(2 * h * w, B, C),) * 2, (torch.randn(B, C, h, w),) * 2)
    torch.testing.assert_close(hab(x, (h, w), memory=mem)[0], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("local,glob", [(True, True), (True, False), (False, True), (False, False)])
def test_hab_shapes_with_switches(local, glob):
    torch.manual_seed(0)
    hab = _hab(use_local=local, use_global=glob, drop_path=0.1).train()
    h, w, B, C = 4, 5, 2, 32
    x = torch.randn(h * w, B, C)
    out, (k, vraw) = hab(x, (h, w), id_emb=torch.zeros(C))
    assert out.shape == k.shape == vraw.shape == (h * w, B, C)
    v = hab.fuse_value(vraw, torch.randn(h * w, B, C))
    memory = ((torch.cat([k, k]), torch.cat([v, v])), (k.permute(1, 2, 0).reshape(B, C, h, w),) * 2)
    assert hab(x, (h, w), memory=memory)[0].shape == (h * w, B, C)
    with pytest.raises(ValueError, match="exactly one"):
        hab(x, (h, w))


def test_hab_init_and_config_checks():
    hab = _hab()
    assert torch.all(hab.ffn.gct.alpha == 1) and torch.all(hab.ffn.gct.gamma == 0)
    assert torch.all(hab.local_attn.value_bias == 0)
    with pytest.raises(ValueError, match="FFN_DIM"):
        _hab(ffn_dim=48)
    with pytest.raises(ValueError, match="WINDOW"):
        _hab(window=4)
    with pytest.raises(ValueError, match="ATT_HEADS"):
        _hab(att_heads=3)


# ------------------------------------------------------------------------------- memory

H, W, S, NUM_IDS = 2, 3, 4, 4  # token grid, ID-bank stride, N


def _memory(interval=3, max_global=100, eviction="oldest", **hab_kwargs):
    torch.manual_seed(0)
    hab = _hab(**hab_kwargs)
    bank = IDBank(NUM_IDS, 32, stride=S)
    return AssociationMemory(hab, bank, global_interval=interval, max_global=max_global, eviction=eviction)


def _run(mem, steps, new_ids_at=()):
    """Reference + reset, then `steps` matched frames; returns global_frames after every frame."""
    x = torch.randn(H * W, 1, 32)
    Y = _one_hot(1, NUM_IDS, H * S, W * S)
    mem.reference(x, (H, W))
    assert mem.is_empty
    mem.reset_memory(Y)
    history = [mem.global_frames]
    for t in range(1, steps + 1):
        mem.match(x, (H, W))
        mem.update(Y, new_ids=t in new_ids_at)
        history.append(mem.global_frames)
    return history


def test_memory_global_interval_schedule():
    mem = _memory(interval=3)
    with torch.no_grad():
        history = _run(mem, 11)
    # Spec 4.3: frame 1 and 2 see G={f0}; frame 3 sees {f0, f2}; then every third frame.
    assert history[0] == [0] and history[1] == [0] and history[2] == [0, 2]
    assert history[-1] == [0, 2, 5, 8, 11]
    assert mem.frame_step == 12 and mem.last_mem_step == 12
    k, v = mem.global_kv()
    assert k.shape == v.shape == (5 * H * W, 1, 32)
    assert all(t.shape == (1, 32, H, W) for t in mem.local_kv())


def test_memory_new_id_trigger():
    mem = _memory(interval=3)
    with torch.no_grad():
        history = _run(mem, 8, new_ids_at={1, 6})
    assert history[1] == [0, 1]
    assert history[-1] == [0, 1, 4, 6]  # 1 (new), 4 (interval from 1), 6 (new)


def test_memory_bounded_with_first_frame_pinned():
    mem = _memory(interval=1, max_global=4, window=1)
    x = torch.randn(H * W, 2, 32)
    Y = _one_hot(2, NUM_IDS, H * S, W * S)
    held = []
    with torch.no_grad():
        mem.reference(x, (H, W))
        mem.reset_memory(Y)
        for t in range(1, 51):
            mem.match(x, (H, W))
            mem.update(Y)
            assert len(mem.global_frames) <= 4 and mem.global_frames[0] == 0
            held.append(sum(t.numel() for t in mem.global_kv() + mem.local_kv()))
    assert mem.global_frames == [0, 48, 49, 50]
    assert len(set(held[3:])) == 1  # constant memory once the bound is reached
    assert mem.global_kv()[0].shape == (4 * H * W, 2, 32)

    mem = _memory(interval=3, max_global=3, window=1)
    with torch.no_grad():
        history = _run(mem, 50)
    assert history[-1] == [0, 47, 50]
    assert {len(g) for g in history[5:]} == {3}


def test_memory_protocol_errors():
    mem = _memory()
    x = torch.randn(H * W, 1, 32)
    Y = _one_hot(1, NUM_IDS, H * S, W * S)
    with pytest.raises(RuntimeError, match="reference"):
        mem.match(x, (H, W))
    with pytest.raises(RuntimeError, match="reset_memory"):
        mem.update(Y)
    mem.reference(x, (H, W))
    with pytest.raises(ValueError, match="does not fit the frame"):
        mem.reset_memory(_one_hot(1, NUM_IDS, H * S + 2, W * S))
    mem.reset_memory(Y)
    with pytest.raises(RuntimeError, match="no attended frame"):
        mem.update(Y)
    with pytest.raises(ValueError, match="differs from the video's first frame"):
        mem.match(torch.randn(H * (W + 1), 1, 32), (H, W + 1))


@pytest.mark.parametrize("local,glob", [(True, True), (False, True), (True, False)])
def test_gradients_reach_earlier_frame_and_id_bank(local, glob):
    mem = _memory(use_local=local, use_global=glob)
    mem.hab.train()
    x0 = torch.randn(H * W, 1, 32, requires_grad=True)
    xs = [torch.randn(H * W, 1, 32) for _ in range(3)]
    mem.reference(x0, (H, W))
    mem.reset_memory(_one_hot(1, NUM_IDS, H * S, W * S))
    for x in xs:
        out = mem.match(x, (H, W))
        mem.update(_one_hot(1, NUM_IDS, H * S, W * S))
    out.pow(2).sum().backward()  # loss on the last frame only
    assert mem.id_bank.conv.weight.grad.abs().sum() > 0
    assert mem.hab.linear_v.weight.grad.abs().sum() > 0
    assert mem.hab.linear_q.weight.grad.abs().sum() > 0
    if glob:  # frame 0 is only reachable through the global memory three frames later
        assert x0.grad is not None and x0.grad.abs().sum() > 0


def _labels_Y(labels):
    """(B, Hp, Wp) long labels -> one-hot Y (B, NUM_IDS + 1, Hp, Wp)."""
    return torch.nn.functional.one_hot(labels, NUM_IDS + 1).permute(0, 3, 1, 2).float()


def test_memory_held_slots_and_forgetting_a_recycled_slot():
    """Defect: a recycled slot kept showing its old owner in the stored frames."""
    mem = _memory(interval=1)
    x = torch.randn(H * W, 1, 32)
    labels = torch.full((1, H * S, W * S), NUM_IDS, dtype=torch.long)
    labels[0, :S, :S] = 0  # slot 0 in the top-left token
    labels[0, S:, 2 * S:] = 2  # slot 2 in the bottom-right token
    with torch.no_grad():
        assert mem.held_slots(NUM_IDS - 1).numel() == 0
        mem.reference(x, (H, W))
        mem.reset_memory(_labels_Y(labels))
        assert mem.held_slots(NUM_IDS - 1).tolist() == [[True, False, True]]
        only_slot_2 = labels.masked_fill(labels == 0, NUM_IDS)
        mem.match(x, (H, W))
        mem.update(_labels_Y(only_slot_2))
        values_before = [v.clone() for v in mem.global_kv()]
        mem.forget_slots([0])
        assert mem.held_slots(NUM_IDS - 1).tolist() == [[False, False, True]]
        # Frame 0 now looks as if it had been written without slot 0.
        fresh = _memory(interval=1)
        fresh.reference(x, (H, W))
        fresh.reset_memory(_labels_Y(only_slot_2))
        L = H * W
        torch.testing.assert_close(mem.global_kv()[1][:L], fresh.global_kv()[1])
        # Frame 1 never held slot 0: unchanged.
        torch.testing.assert_close(mem.global_kv()[1][L:], values_before[1][L:])


@pytest.mark.parametrize("eviction,kept", [("oldest", [0, 3, 4]), ("keep_identities", [0, 1, 4])])
def test_memory_eviction_keeps_the_last_view_of_a_hidden_identity(eviction, kept):
    """Frame 0: slot 0 only; frame 1: slots 0 and 1; then slot 1 hides (frames 2-4: slot 0 only).
    With a bound of 3 frames, "oldest" forgets every view of slot 1; "keep_identities" evicts the
    frames whose identities a newer frame shows and keeps frame 1, slot 1's last view."""
    mem = _memory(interval=1, max_global=3, eviction=eviction, window=1)
    x = torch.randn(H * W, 1, 32)
    only_0 = torch.full((1, H * S, W * S), NUM_IDS, dtype=torch.long)
    only_0[0, :S, :S] = 0
    both = only_0.clone()
    both[0, S:, 2 * S:] = 1
    with torch.no_grad():
        mem.reference(x, (H, W))
        mem.reset_memory(_labels_Y(only_0))
        for labels in (both, only_0, only_0, only_0):
            mem.match(x, (H, W))
            mem.update(_labels_Y(labels))
    assert mem.global_frames == kept
    assert mem.held_slots(NUM_IDS - 1)[0, 1].item() is (eviction == "keep_identities")
    with pytest.raises(ValueError, match="MODEL.IAI.MEMORY.EVICTION"):
        _memory(eviction="newest")


@pytest.mark.parametrize("use_global,expected", [(True, [True, False, True]), (False, [False, False, True])])
def test_held_slots_count_only_the_memories_the_block_reads(use_global, expected):
    mem = _memory(interval=1, use_global=use_global)
    x = torch.randn(H * W, 1, 32)
    frame0 = torch.full((1, H * S, W * S), NUM_IDS, dtype=torch.long)
    frame0[0, :S, :S] = 0
    frame1 = torch.full((1, H * S, W * S), NUM_IDS, dtype=torch.long)
    frame1[0, S:, 2 * S:] = 2
    with torch.no_grad():
        mem.reference(x, (H, W))
        mem.reset_memory(_labels_Y(frame0))
        mem.match(x, (H, W))
        mem.update(_labels_Y(frame1))
    # Slot 0 is only in frame 0 (global memory); slot 2 is in frame 1 (also the local memory).
    assert mem.held_slots(NUM_IDS - 1).tolist() == [expected]
