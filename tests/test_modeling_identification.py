import pytest
import torch

from iai_d2.modeling.identification import IDBank, build_id_mask, clip_id_targets


def _long(*values):
    return torch.tensor(values, dtype=torch.long)


def test_id_bank_shapes_and_empty_embedding():
    torch.manual_seed(0)
    bank = IDBank(num_ids=5, dim=16, stride=32)
    assert bank.conv.kernel_size == (33, 33) and bank.conv.padding == (16, 16)
    Y = torch.zeros(2, 6, 128, 160)
    Y[:, 5] = 1.0
    assert bank(Y).shape == (2, 16, 4, 5)
    # An all-zero mask embeds to the bias at every position.
    zero = bank(torch.zeros(1, 6, 64, 96))
    assert torch.allclose(zero, bank.empty_embedding().view(1, 16, 1, 1).expand_as(zero))
    with pytest.raises(ValueError, match="N\\+1=6"):
        bank(torch.zeros(1, 5, 64, 64))


def test_build_id_mask_smallest_area_wins_and_padding_is_background():
    big = torch.zeros(4, 6, dtype=torch.bool)
    big[0:4, 0:4] = True  # area 16, slot 2
    small = torch.zeros(4, 6, dtype=torch.bool)
    small[1:3, 1:5] = True  # area 8, slot 0, overlaps `big`
    Y = build_id_mask(
        [torch.stack([small, big]), torch.zeros(0, 3, 3, dtype=torch.bool)],
        [_long(0, 2), _long()],
        num_ids=4,
        padded_size=(5, 8),
    )
    assert Y.shape == (2, 5, 5, 8) and Y.dtype == torch.float32
    assert torch.equal(Y.sum(1), torch.ones(2, 5, 8))  # one-hot
    label = Y.argmax(1)
    assert label[0, 1, 1] == 0 and label[0, 1, 4] == 0  # overlap -> smaller instance
    assert label[0, 0, 0] == 2 and label[0, 3, 3] == 2
    assert label[0, 0, 5] == 4  # uncovered -> background
    assert (label[0, 4:, :] == 4).all() and (label[0, :, 6:] == 4).all()  # padding -> background
    assert (label[1] == 4).all()  # image without instances

    # Same result when the smaller instance comes first or last.
    Y2 = build_id_mask([torch.stack([big, small])], [_long(2, 0)], num_ids=4, padded_size=(5, 8))
    assert torch.equal(Y2[0], Y[0])


def test_build_id_mask_rejects_bad_input():
    m = torch.ones(1, 4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="more instances than MODEL.IAI.NUM_IDS - 1 = 3"):
        build_id_mask(
            [m], [_long(3)], num_ids=4, padded_size=(4, 4)
        )  # slot N-1 is "new", not a slot
    with pytest.raises(ValueError, match="outside"):
        build_id_mask([m], [_long(-1)], num_ids=4, padded_size=(4, 4))
    with pytest.raises(ValueError, match="exceeds the padded size"):
        build_id_mask([m], [_long(0)], num_ids=4, padded_size=(3, 4))
    with pytest.raises(ValueError, match="do not match"):
        build_id_mask([m], [_long(0, 1)], num_ids=4, padded_size=(4, 4))


def test_clip_id_targets_appear_vanish_reappear_new():
    N = 6
    new = N - 1
    slots = [
        _long(0, 1),  # frame 0: both new
        _long(1),  # slot 0 vanishes, slot 1 tracked
        _long(2, 1),  # slot 2 appears mid-clip
        _long(0, 2),  # slot 0 reappears after a gap, slot 1 vanishes
        _long(),  # empty frame
        _long(1, 3),  # slot 1 reappears, slot 3 new
    ]
    targets = clip_id_targets(slots, N)
    expected = [_long(new, new), _long(1), _long(new, 1), _long(0, 2), _long(), _long(1, new)]
    assert len(targets) == len(expected)
    for t, e in zip(targets, expected):
        assert t.dtype == torch.long and torch.equal(t, e)
    with pytest.raises(ValueError, match="frame 1.*more instances"):
        clip_id_targets([_long(0), _long(5)], N)
