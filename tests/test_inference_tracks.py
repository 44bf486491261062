import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

from iai_d2.inference.tracks import VideoTrackAggregator

H, W = 6, 8


def mask(y0, y1, x0, x1):
    m = torch.zeros(H, W, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


def build(top_k=3, score_thresh=0.05):
    """Track 7 in frames 0, 1, 3; track 3 in frame 2 only (4 frames, 3 classes)."""
    agg = VideoTrackAggregator(3, 4, H, W, top_k=top_k, score_thresh=score_thresh)
    masks = {0: mask(0, 2, 0, 3), 1: mask(1, 3, 1, 4), 3: mask(2, 6, 5, 8)}
    agg.add_frame(0, [7], torch.tensor([[0.8, 0.1, 0.1]]), masks[0][None])
    agg.add_frame(1, [7], torch.tensor([[0.6, 0.3, 0.1]]), masks[1][None])
    agg.add_frame(2, [3], torch.tensor([[0.1, 0.9, 0.0]]), mask(0, 6, 0, 1)[None])
    agg.add_frame(3, [7], torch.tensor([[0.7, 0.2, 0.1]]), masks[3][None])
    return agg, masks


def decode(rle):
    return torch.from_numpy(mask_util.decode(rle).astype(bool))


def test_scores_are_means_over_all_frames_and_topk():
    agg, masks = build()
    assert agg.num_tracks == 2
    preds = agg.results()
    # track 7: (0.8+0.6+0.7)/4 = 0.525 (class 0), (0.1+0.3+0.2)/4 = 0.15 (class 1),
    # 0.3/4 = 0.075 (class 2); track 3: 0.9/4 = 0.225 (class 1), 0.1/4 = 0.025 (class 0)
    assert [p["category_id"] for p in preds] == [0, 1, 1]
    assert [p["score"] for p in preds] == pytest.approx([0.525, 0.225, 0.15])
    # track 7 appears twice (classes 0 and 1) with the same segmentations
    seg7 = preds[0]["segmentations"]
    assert preds[2]["segmentations"] == seg7
    assert len(seg7) == 4 and seg7[2] is None
    for t in (0, 1, 3):
        assert seg7[t]["size"] == [H, W] and isinstance(seg7[t]["counts"], str)
        assert torch.equal(decode(seg7[t]), masks[t])
    seg3 = preds[1]["segmentations"]
    assert [s is None for s in seg3] == [True, True, False, True]
    assert torch.equal(decode(seg3[2]), mask(0, 6, 0, 1))


def test_score_threshold_and_larger_topk():
    agg, _ = build(top_k=10, score_thresh=0.2)
    assert [p["score"] for p in agg.results()] == pytest.approx([0.525, 0.225])
    agg, _ = build(top_k=10, score_thresh=0.0)
    scores = [p["score"] for p in agg.results()]
    assert scores == pytest.approx([0.525, 0.225, 0.15, 0.075, 0.025])  # zero pair excluded


def test_several_tracks_per_frame_and_empty_video():
    agg = VideoTrackAggregator(2, 2, H, W, top_k=5, score_thresh=0.05)
    assert agg.results() == []
    masks = torch.stack([mask(0, 3, 0, 3), mask(3, 6, 3, 8)])
    agg.add_frame(0, [0, 1], torch.tensor([[0.9, 0.0], [0.0, 0.5]]), masks)
    agg.add_frame(1, [], torch.zeros(0, 2), torch.zeros(0, H, W, dtype=torch.bool))
    preds = agg.results()
    assert [(p["category_id"], p["score"]) for p in preds] == [(0, pytest.approx(0.45)), (1, 0.25)]
    assert torch.equal(decode(preds[1]["segmentations"][0]), masks[1])
    assert preds[1]["segmentations"][1] is None


def test_add_frame_validation():
    agg, _ = build()
    one = torch.tensor([[0.3, 0.3, 0.3]])
    with pytest.raises(ValueError, match="outside"):
        agg.add_frame(4, [9], one, mask(0, 1, 0, 1)[None])
    with pytest.raises(ValueError, match="already"):
        agg.add_frame(3, [7], one, mask(0, 1, 0, 1)[None])
    with pytest.raises(ValueError, match="arrived after"):
        agg.add_frame(1, [9], one, mask(0, 1, 0, 1)[None])
    with pytest.raises(ValueError, match="masks"):
        agg.add_frame(3, [9], one, torch.ones(1, H, W + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="class_probs"):
        agg.add_frame(3, [9], torch.ones(1, 2), mask(0, 1, 0, 1)[None])
    with pytest.raises(ValueError, match="duplicate"):
        agg.add_frame(3, [9, 9], one.repeat(2, 1), mask(0, 1, 0, 1)[None].repeat(2, 1, 1))
    # nothing was recorded by the failed calls
    assert agg.num_tracks == 2
    assert np.isclose(agg.results()[0]["score"], 0.525)
