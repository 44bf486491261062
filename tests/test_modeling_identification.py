import pytest
import torch

from iai_d2.modeling.identification import (
    IDBank,
    build_id_mask,
    first_appearance_slots,
    id_targets,
    perturb_masks,
)


def _long(*values):
    return torch.tensor(values, dtype=torch.long)


def test_id_bank_shapes_and_empty_embedding():
    torch.manual_seed(0)
    bank = IDBank(num_ids=5, dim=16, stride=32)
    assert bank.conv.kernel_size == (63, 63) and bank.conv.padding == (31, 31)
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


@pytest.mark.parametrize("stride,size", [(32, (128, 160)), (32, (96, 64)), (16, (80, 48))])
def test_id_bank_every_pixel_reaches_a_token(stride, size):
    """Defect: the released padding left the last stride/2 - 1 rows and columns unseen."""
    bank = IDBank(num_ids=3, dim=2, stride=stride)
    Y = torch.zeros(1, 4, *size, requires_grad=True)
    bank(Y).abs().sum().backward()
    with torch.no_grad():
        bank.conv.weight.fill_(1.0)
    Y.grad = None
    bank(Y).sum().backward()
    reached = Y.grad[0, 0] != 0
    assert bool(reached.all()), f"{int((~reached).sum())} pixels reach no token"


def test_id_bank_token_sits_where_the_backbone_feature_sits():
    """Token (i, j) is centred on pixel (s*i, s*j), like ResNet features and Detectron2 anchors."""
    s = 16
    bank = IDBank(num_ids=3, dim=1, stride=s)
    with torch.no_grad():
        bank.conv.weight.zero_()
        bank.conv.bias.zero_()
        bank.conv.weight[0, 0, s - 1, s - 1] = 1.0  # the kernel's centre tap only
        Y = torch.zeros(1, 4, 5 * s, 6 * s)
        Y[0, 0, 2 * s, 3 * s] = 1.0
        out = bank(Y)[0, 0]
    assert out.nonzero().tolist() == [[2, 3]]


def test_first_appearance_slots_follow_inference_order():
    """Defect: slots were the rank of the annotation id, not the order inference allocates."""
    tracks = [_long(7), _long(3, 7), _long(), _long(5, 3)]
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        slots = first_appearance_slots(tracks, num_ids=6, generator=g)
        assert [s.tolist() for s in slots] == [[0], [1, 0], [], [2, 1]]
    # Tracks first seen together take the next slots in random order, each slot used once.
    orders = set()
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        s = first_appearance_slots([_long(4, 9)], num_ids=6, generator=g)[0].tolist()
        assert sorted(s) == [0, 1]
        orders.add(tuple(s))
    assert orders == {(0, 1), (1, 0)}
    with pytest.raises(ValueError, match="more instances"):
        first_appearance_slots([_long(0, 1, 2)], num_ids=3)


def test_id_targets_never_name_a_slot_absent_from_memory():
    held = torch.tensor([True, False, True, False, False])
    targets = id_targets(_long(0, 1, 2, 3), held, num_ids=6)
    assert targets.tolist() == [0, 5, 2, 5]


def test_perturb_masks_drops_and_shifts():
    masks = torch.zeros(3, 20, 20, dtype=torch.bool)
    masks[:, 5:10, 5:10] = True
    assert perturb_masks(masks, 0.0, 0) is masks
    dropped = perturb_masks(masks, 1.0, 0)
    assert not dropped.any()
    g = torch.Generator().manual_seed(0)
    shifted = perturb_masks(masks, 0.0, 3, generator=g)
    for k in range(3):
        ys, xs = shifted[k].nonzero(as_tuple=True)
        assert shifted[k].sum() == 25  # moved inside the frame, not resized
        assert 2 <= int(ys.min()) <= 8 and 2 <= int(xs.min()) <= 8
