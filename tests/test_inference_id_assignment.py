import pytest
import torch

from iai_d2.inference.id_assignment import IDAssigner, remove_overlaps

N = 5  # slots 0..3, "new" column 4, background column 5
NEW, BG = N - 1, N


def probs(*rows):
    """rows: dicts {column: prob}; unspecified columns share the rest equally."""
    out = torch.zeros(len(rows), N + 1)
    for i, row in enumerate(rows):
        rest = (1.0 - sum(row.values())) / (N + 1 - len(row))
        out[i] = rest
        for col, p in row.items():
            out[i, col] = p
    return out


def empty(num_ids=N):
    return torch.zeros(0, num_ids + 1)


def rows(*values):
    """Explicit (K, N+1) probability rows."""
    return torch.tensor(values)


# ---------------------------------------------------------------- IDAssigner
def test_first_frame_everything_new():
    assigner = IDAssigner(N)
    # even a confident "slot 2" prediction is new on the first frame
    out = assigner.assign(probs({2: 0.9}, {NEW: 0.9}), frame_idx=0, first_frame=True)
    assert out.slots == [0, 1] and out.track_ids == [0, 1] and out.new_ids
    assert assigner.num_tracks == 2


def test_reidentification_after_occlusion():
    assigner = IDAssigner(N)
    assigner.assign(probs({NEW: 0.9}, {NEW: 0.9}), 0, True)
    out = assigner.assign(probs({1: 0.8}), 1, False)
    assert out.slots == [1] and out.track_ids == [1] and not out.new_ids
    for t in (2, 3, 4):  # both tracks occluded
        out = assigner.assign(empty(), t, False)
        assert out.slots == [] and out.track_ids == [] and not out.new_ids
    # both come back, in swapped detection order
    out = assigner.assign(probs({1: 0.7}, {0: 0.6}), 5, False)
    assert out.slots == [1, 0] and out.track_ids == [1, 0] and not out.new_ids


def _square(y, x, size=(8, 8), side=3):
    mask = torch.zeros(size, dtype=torch.bool)
    mask[y : y + side, x : x + side] = True
    return mask


def test_mask_iou_weight_adds_the_last_mask_overlap_to_the_slot_scores():
    """Two tracks; the ID head mildly prefers the swapped slots, the masks overlap the tracks'
    last masks: IoU fusion (w = 1) keeps the identities, w = 0 swaps them."""
    a, b = _square(0, 0), _square(4, 4)
    swapped = probs({1: 0.45, 0: 0.35}, {0: 0.45, 1: 0.35})
    for weight, expected in ((0.0, [1, 0]), (1.0, [0, 1])):
        assigner = IDAssigner(N, mask_iou_weight=weight)
        assigner.assign(probs({NEW: 0.9}, {NEW: 0.9}), 0, True, masks=torch.stack([a, b]))
        out = assigner.assign(swapped, 1, False, masks=torch.stack([_square(0, 1), _square(4, 5)]))
        assert out.track_ids == expected
    # The last masks follow the tracks: frame 2 matches frame 1's masks, not frame 0's.
    out = assigner.assign(swapped, 2, False, masks=torch.stack([_square(0, 2), _square(4, 6)]))
    assert out.track_ids == [0, 1]
    with pytest.raises(ValueError, match="needs the masks of the 2 detections of frame 3"):
        assigner.assign(swapped, 3, False)
    with pytest.raises(ValueError, match="mask_iou_weight must be >= 0"):
        IDAssigner(N, mask_iou_weight=-1)


def test_class_penalty_keeps_a_returning_detection_off_another_class_track():
    """Track 0 (class 2) is hidden, track 1 (class 1) is gone; a class-2 detection returns whose ID
    head prefers slot 1: the penalty gives it back slot 0; without it, it takes track 1's id."""
    for penalty, expected in ((0.0, [1]), (1.0, [0])):
        assigner = IDAssigner(N, class_penalty=penalty)
        assigner.assign(probs({NEW: 0.9}, {NEW: 0.9}), 0, True, classes=torch.tensor([2, 1]))
        assigner.assign(empty(), 1, False, classes=torch.zeros(0, dtype=torch.long))
        out = assigner.assign(probs({1: 0.5, 0: 0.3}), 2, False, classes=torch.tensor([2]))
        assert out.track_ids == expected
    # "new" is not penalised: a class-3 detection that prefers slot 1 starts a track instead.
    out = assigner.assign(probs({1: 0.6, NEW: 0.2}), 3, False, classes=torch.tensor([3]))
    assert out.track_ids == [2] and out.new_ids
    # Slots of other classes (track 1: class 1, track 2: class 3) lose to track 0's.
    out = assigner.assign(probs({0: 0.4, 1: 0.45}), 4, False, classes=torch.tensor([2]))
    assert out.track_ids == [0]
    with pytest.raises(ValueError, match="needs the classes of the 1 detections of frame 5"):
        assigner.assign(probs({0: 0.9}), 5, False)
    with pytest.raises(ValueError, match="class_penalty must be >= 0"):
        IDAssigner(N, class_penalty=-1)


def test_two_detections_want_the_same_slot():
    assigner = IDAssigner(N)
    assigner.assign(probs({NEW: 0.9}, {NEW: 0.9}), 0, True)
    # A -> slot 0 (0.6) + B -> bg (0.2) = 0.8  <  B -> slot 0 (0.7) + A -> new (0.3) = 1.0
    a = {0: 0.6, NEW: 0.3, BG: 0.1}
    b = {0: 0.7, NEW: 0.1, BG: 0.2}
    out = assigner.assign(probs(a, b), 1, False)
    assert out.track_ids == [2, 0]
    assert out.slots == [2, 0]  # the loser is new and takes the lowest free slot
    assert out.new_ids


def test_new_instances_mid_video_and_unallocated_slot_column():
    assigner = IDAssigner(N)
    assigner.assign(probs({NEW: 0.9}), 0, True)  # track 0 in slot 0
    # det 0: track 0; det 1: "new"; det 2: wins slot 3, which holds no track -> new as well
    out = assigner.assign(probs({0: 0.9}, {NEW: 0.8}, {3: 0.8}), 1, False)
    assert out.track_ids == [0, 1, 2]
    assert out.slots == [0, 1, 2]
    assert out.new_ids
    # track ids keep counting; the new tracks are re-identified later
    out = assigner.assign(probs({2: 0.9}, {1: 0.9}), 2, False)
    assert out.track_ids == [2, 1] and not out.new_ids


def test_background_does_not_compete_with_identities():
    """Defect: a detection whose background probability beat its true slot became a birth."""
    assigner = IDAssigner(N)
    assigner.assign(probs({NEW: 0.9}), 0, True)
    out = assigner.assign(rows([0.3, 0.0, 0.0, 0.0, 0.1, 0.6]), 1, False)
    assert out.slots == [0] and out.track_ids == [0] and not out.new_ids


def test_birth_needs_a_confident_detection():
    """Defect: low-score false positives filled every slot on frame 0."""
    assigner = IDAssigner(N, birth_score=0.5)
    scores = torch.tensor([0.9, 0.2, 0.1])
    out = assigner.assign(probs({NEW: 0.9}, {NEW: 0.9}, {NEW: 0.9}), 0, True, scores=scores)
    assert out.track_ids == [0, -1, -1] and out.slots == [0, -1, -1]
    # A weak detection may continue a track, never start one.
    out = assigner.assign(
        probs({0: 0.9}, {NEW: 0.9}, {NEW: 0.9}), 1, False, scores=torch.tensor([0.1, 0.2, 0.7])
    )
    assert out.track_ids == [0, -1, 1] and out.slots == [0, -1, 1] and out.new_ids


def test_recycled_slot_is_reported_and_a_dropped_confident_detection_is_logged(caplog):
    assigner = IDAssigner(3, on_full="recycle", recycle_after=1)  # slots 0, 1
    assigner.assign(rows([0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 0.0]), 0, True)
    with caplog.at_level("WARNING", logger="iai_d2.inference.id_assignment"):
        out = assigner.assign(rows([0.9, 0.0, 0.1, 0.0], [0.0, 0.0, 1.0, 0.0]), 1, False)
    assert out.track_ids == [0, -1] and out.recycled == []
    assert "frame 1: a confident new detection was dropped" in caplog.text
    assigner.assign(rows([0.9, 0.0, 0.1, 0.0]), 2, False)  # track 1 (slot 1) missed frames 1, 2
    out = assigner.assign(rows([0.9, 0.0, 0.1, 0.0], [0.0, 0.0, 1.0, 0.0]), 3, False)
    assert out.slots == [0, 1] and out.track_ids == [0, 2] and out.recycled == [1]


def test_full_slots_recycle_only_after_recycle_after_frames():
    assigner = IDAssigner(3, on_full="recycle", recycle_after=2)  # slots 0, 1; new column 2
    out = assigner.assign(rows([0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 0.0]), 0, True)
    assert out.track_ids == [0, 1]
    assigner.assign(rows([0.0, 0.9, 0.1, 0.0]), 1, False)  # track 1 seen, track 0 missed frame 1
    # track 0 has missed 1 frame (< 2): no slot for the new detection -> discarded
    out = assigner.assign(rows([0.0, 0.9, 0.1, 0.0], [0.0, 0.1, 0.9, 0.0]), 2, False)
    assert out.track_ids == [1, -1] and out.slots == [1, -1] and not out.new_ids
    # track 0 has now missed frames 1 and 2 -> its slot 0 goes to the new track 2
    out = assigner.assign(rows([0.1, 0.0, 0.9, 0.0]), 3, False)
    assert out.slots == [0] and out.track_ids == [2] and out.new_ids
    # slot 0 now means track 2; track 0 is retired
    out = assigner.assign(rows([0.9, 0.0, 0.1, 0.0]), 4, False)
    assert out.slots == [0] and out.track_ids == [2]
    assert assigner.num_tracks == 3


def test_recycling_never_takes_a_slot_matched_in_the_same_frame():
    assigner = IDAssigner(3, recycle_after=0)
    assigner.assign(rows([0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 0.0]), 0, True)
    # det 0 is new (ranked first), det 1 re-identifies track 0 (slot 0, the oldest by index)
    out = assigner.assign(rows([0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]), 1, False)
    assert out.slots == [1, 0] and out.track_ids == [2, 0]


def test_full_slots_discard():
    assigner = IDAssigner(3, on_full="discard", recycle_after=0)
    assigner.assign(rows([0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 0.0]), 0, True)
    for t in range(1, 5):
        assigner.assign(empty(3), t, False)
    out = assigner.assign(rows([0.0, 0.0, 1.0, 0.0]), 5, False)
    assert out.slots == [-1] and out.track_ids == [-1] and not out.new_ids


def test_first_frame_resets_the_video():
    assigner = IDAssigner(N)
    assigner.assign(probs({NEW: 0.9}, {NEW: 0.9}), 0, True)
    out = assigner.assign(probs({NEW: 0.9}), 0, True)
    assert out.track_ids == [0] and assigner.num_tracks == 1
    assigner.reset()
    assert assigner.num_tracks == 0


def test_assigner_validation():
    with pytest.raises(ValueError, match="on_full"):
        IDAssigner(N, on_full="drop")
    assigner = IDAssigner(N)
    with pytest.raises(ValueError, match=r"shape \(K, 6\)"):
        assigner.assign(torch.zeros(2, N), 0, True)
    assigner.assign(probs({NEW: 0.9}), 3, True)
    with pytest.raises(ValueError, match="increasing"):
        assigner.assign(probs({0: 0.9}), 3, False)


# ---------------------------------------------------------------- remove_overlaps
def box_mask(y0, y1, x0, x1, size=10):
    m = torch.zeros(size, size, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


def test_nested_masks():
    big, small = box_mask(0, 6, 0, 6), box_mask(2, 4, 2, 4)
    # the better mask contains the worse one: the worse one loses everything
    keep, out = remove_overlaps(torch.stack([big, small]), 0.1)
    assert keep.tolist() == [0] and torch.equal(out[0], big)
    # the better mask is inside the worse one: the worse one keeps a ring (32 of 36 px)
    keep, out = remove_overlaps(torch.stack([small, big]), 0.1)
    assert keep.tolist() == [0, 1]
    assert torch.equal(out[0], small) and torch.equal(out[1], big & ~small)
    assert out[1].sum() == 32 and not (out[0] & out[1]).any()


def test_masks_keeping_less_than_min_keep_are_dropped():
    a = box_mask(0, 10, 0, 9)  # 90 px
    b = box_mask(0, 10, 7, 10)  # 30 px, 10 outside a: 10 / 30 >= 0.3 -> kept
    c = box_mask(0, 10, 8, 10)  # 20 px, 10 outside a but claimed by b -> dropped
    keep, out = remove_overlaps(torch.stack([a, b, c]), 0.3)
    assert keep.tolist() == [0, 1]
    assert out[1].sum() == 10
    d = box_mask(0, 10, 0, 10)  # 100 px, 10 unclaimed: 10% >= 10% kept, < 11% dropped
    assert remove_overlaps(torch.stack([a, d]), 0.1)[0].tolist() == [0, 1]
    assert remove_overlaps(torch.stack([a, d]), 0.11)[0].tolist() == [0]


def test_empty_and_dropped_masks_claim_nothing():
    empty_mask = torch.zeros(10, 10, dtype=torch.bool)
    a = box_mask(0, 5, 0, 5)
    b = box_mask(0, 5, 0, 6)  # 30 px, 5 unclaimed -> dropped at min_keep 0.5
    c = box_mask(0, 5, 5, 6)  # exactly b's leftover, which b did not claim
    keep, out = remove_overlaps(torch.stack([empty_mask, a, b, c]), 0.5)
    assert keep.tolist() == [1, 3]
    assert torch.equal(out[1], c)
    keep, out = remove_overlaps(torch.zeros(0, 4, 4, dtype=torch.bool), 0.1)
    assert keep.numel() == 0 and out.shape == (0, 4, 4)
    with pytest.raises(ValueError):
        remove_overlaps(torch.zeros(2, 4, 4), 0.1)
