import pytest
import torch

from iai_d2.modeling.dense_id import DenseIDHead

N = 4  # slots 0..2, new 3, background 4


def _head():
    torch.manual_seed(0)
    return DenseIDHead(in_channels=8, num_ids=N, conv_dim=16, stride=4)


def test_shapes_and_loss_balances_foreground_and_background():
    head = _head()
    logits = head(torch.randn(2, 8, 3, 5))
    assert logits.shape == (2, N + 1, 3, 5)
    labels = torch.full((2, 12, 20), N, dtype=torch.long)
    labels[0, :4, :4] = 1
    loss = head.loss(logits, labels)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert head.predictor.weight.grad.abs().sum() > 0
    # All-background frames still give a finite loss.
    assert torch.isfinite(head.loss(logits.detach(), torch.full_like(labels, N)))


def test_detection_probs_average_inside_each_mask():
    head = _head()
    logits = torch.full((1, N + 1, 2, 2), -10.0)
    logits[0, 0, 0, 0] = 10.0  # top-left token: slot 0
    logits[0, 2, 1, 1] = 10.0  # bottom-right token: slot 2
    masks = torch.zeros(3, 7, 8, dtype=torch.bool)  # network input smaller than the 8x8 padded grid
    masks[0, :2, :2] = True
    masks[1, 6:, 6:] = True
    probs = head.detection_probs(logits, masks)
    assert probs.shape == (3, N + 1)
    torch.testing.assert_close(probs.sum(1), torch.ones(3))
    assert probs[0].argmax() == 0 and probs[0, 0] > 0.9
    assert probs[1].argmax() == 2 and probs[1, 2] > 0.9
    torch.testing.assert_close(probs[2], torch.full((N + 1,), 1.0 / (N + 1)))  # empty mask


def test_skip_level_decodes_at_half_the_stride():
    torch.manual_seed(0)
    head = DenseIDHead(in_channels=8, num_ids=N, conv_dim=16, stride=4, skip_channels=6)
    assert head.stride == 2
    logits = head(torch.randn(2, 8, 3, 5), torch.randn(2, 6, 6, 10))
    assert logits.shape == (2, N + 1, 6, 10)
    with pytest.raises(ValueError, match="skip"):
        head(torch.randn(2, 8, 3, 5))
    labels = torch.full((2, 12, 20), N, dtype=torch.long)
    labels[1, 4:8, 4:8] = 0
    head.loss(logits, labels).backward()
    assert head.lateral.weight.grad.abs().sum() > 0 and head.conv.weight.grad.abs().sum() > 0


def test_skip_upsampling_puts_association_token_i_on_skip_token_2i():
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    up = DenseIDHead._upsample2x(x)
    assert up.shape == (1, 1, 6, 8)
    torch.testing.assert_close(up[..., ::2, ::2], x)
    torch.testing.assert_close(up[0, 0, 0, 1], (x[0, 0, 0, 0] + x[0, 0, 0, 1]) / 2)
    torch.testing.assert_close(up[0, 0, 5, 7], x[0, 0, 2, 3])  # held constant past the last token
