"""IAIRCNN on hand-built clips: a training step, the ID-capacity error, per-frame inference."""

import os

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Instances
from detectron2.utils.events import EventStorage

import iai_d2.modeling  # noqa: F401  (registers the architecture)
from iai_d2 import add_iai_config

TINY = os.path.join(os.path.dirname(__file__), "..", "configs", "synthetic", "iai_tiny.yaml")


def tiny_cfg():
    cfg = get_cfg()
    add_iai_config(cfg)
    cfg.merge_from_file(TINY)
    return cfg


def make_clip(video_id, slots_per_frame, height=96, width=128):
    """A clip whose frame t holds one 20x20 square per slot in ``slots_per_frame[t]``."""
    images, instances = [], []
    for t, slots in enumerate(slots_per_frame):
        images.append(torch.randint(0, 255, (3, height, width), dtype=torch.uint8))
        masks = torch.zeros(len(slots), height, width, dtype=torch.bool)
        for i, slot in enumerate(slots):
            y, x = 4 + 22 * (slot % 4), 4 + 22 * (slot // 4) + t
            masks[i, y : y + 20, x : x + 20] = True
        inst = Instances((height, width))
        inst.gt_masks = BitMasks(masks)
        inst.gt_boxes = inst.gt_masks.get_bounding_boxes()
        inst.gt_classes = torch.tensor([s % 4 for s in slots], dtype=torch.long)
        inst.gt_ids = torch.tensor(slots, dtype=torch.long)
        instances.append(inst)
    return {
        "video_id": video_id,
        "frame_indices": list(range(len(slots_per_frame))),
        "image": images,
        "instances": instances,
    }


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(tiny_cfg())


@pytest.mark.parametrize("decoder", ["dense", "dense+res2", "roi"])
def test_training_step_gives_finite_losses_and_gradients_on_id_modules(decoder):
    cfg = tiny_cfg()
    decoder, _, skip = decoder.partition("+")
    cfg.MODEL.IAI.ID_DECODER = decoder
    cfg.MODEL.IAI.DENSE_ID.LOSS_WEIGHT = 1.0 if decoder == "dense" else 0.0
    cfg.MODEL.IAI.DENSE_ID.SKIP_FEATURE = skip
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    clips = [make_clip(1, [[0, 1], [0, 1, 2], [1, 2]]), make_clip(2, [[0], [], [0, 1]])]
    with EventStorage(0):
        losses = model(clips)
    id_loss = "loss_id_dense" if decoder == "dense" else "loss_id"
    assert {id_loss, "loss_cls", "loss_mask", "loss_rpn_cls"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    model.zero_grad()
    sum(losses.values()).backward()
    association = model.backbone.association
    id_module = model.dense_id_head.predictor if decoder == "dense" else model.roi_heads.id_predictor
    for name, param in [
        ("id_bank", association.id_bank.conv.weight),
        ("hab", association.hab.linear_v.weight),
        ("id decoder", id_module.weight),
    ]:
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    if skip:
        assert model.dense_id_head.lateral.weight.grad.abs().sum() > 0
        model.eval()
        state = model.new_video_state()
        for image in clips[0]["image"]:
            out = model.inference_frame(state, image, 96, 128)
            assert len(out.ID) == out.pred_masks.shape[0]


def test_clip_with_more_instances_than_slots_is_a_clear_error(model):
    model.train()
    num_slots = model.num_ids  # one more than the N-1 slots available
    clip = make_clip(7, [list(range(num_slots))] * 2, height=128, width=256)
    with EventStorage(0), pytest.raises(ValueError, match=r"Video 7 .*MODEL.IAI.NUM_IDS"):
        model([clip])


@pytest.mark.parametrize("class_penalty", [0.0, 1.0])
def test_inference_frame_returns_tracked_instances_at_output_size(model, class_penalty, monkeypatch):
    model.eval()
    model.roi_heads.cls_score_thresh = model.roi_heads.id_score_thresh = 0.0  # untrained: keep detections
    model.birth_score = 0.0  # ... let them start tracks
    model.mask_threshold = 0.0  # ... and keep their (untrained, ~0.5) mask probabilities
    monkeypatch.setattr(model, "class_penalty", class_penalty)  # the matching gets the frame's classes
    state = model.new_video_state()
    assert state.assigner.class_penalty == class_penalty
    ids_seen = []
    for t in range(3):
        out = model.inference_frame(state, torch.randint(0, 255, (3, 96, 128), dtype=torch.uint8), 192, 256)
        assert out.image_size == (192, 256)
        assert out.pred_masks.shape[1:] == (192, 256) and out.pred_masks.dtype == torch.bool
        assert len(out) <= model.roi_heads.max_per_frame
        # Masks are disjoint after de-overlapping, IDs unique within the frame.
        if len(out):
            assert int(out.pred_masks.sum(0).max()) <= 1
        assert len(set(out.ID.tolist())) == len(out)
        ids_seen.append(out.ID.tolist())
    assert state.frame_idx == 3
    assert len(ids_seen[0]) > 0


def test_random_slots_are_distinct_consistent_across_frames_and_in_range(model):
    model.random_slots = True
    try:
        ranks = [torch.tensor([0, 1]), torch.tensor([1, 2, 3]), torch.tensor([3])]
        slots = model._clip_slots({"video_id": 3}, ranks)
    finally:
        model.random_slots = False
    slot_of_rank = {}
    for frame_ranks, frame_slots in zip(ranks, slots):
        for r, s in zip(frame_ranks.tolist(), frame_slots.tolist()):
            assert slot_of_rank.setdefault(r, s) == s  # a track keeps its slot in the whole clip
    assert len(set(slot_of_rank.values())) == 4
    assert all(0 <= s <= model.num_ids - 2 for s in slot_of_rank.values())
    # Default: slots in order of first appearance, as inference allocates them.
    slots = model._clip_slots({"video_id": 3}, [torch.tensor([5, 2]), torch.tensor([2, 7]), torch.tensor([7])])
    assert sorted(slots[0].tolist()) == [0, 1] and slots[1][1] == 2 and slots[2].tolist() == [2]


def test_position_embedding_key_reaches_the_association_block(model):
    """iai_tiny.yaml turns the HAB's sine position embedding off; the default keeps it (the paper)."""
    assert model.backbone.association.hab.position_embedding is False
    cfg = tiny_cfg()
    cfg.MODEL.IAI.ASSOCIATION.POSITION_EMBEDDING = True
    assert build_model(cfg).backbone.association.hab.position_embedding is True


def test_class_penalty_key_reaches_the_id_assigner():
    cfg = tiny_cfg()
    cfg.MODEL.IAI.INFERENCE.CLASS_PENALTY = 1.0
    assert build_model(cfg).new_video_state().assigner.class_penalty == 1.0


def test_dense_skip_level_must_be_at_half_the_association_stride():
    cfg = tiny_cfg()
    cfg.MODEL.IAI.DENSE_ID.SKIP_FEATURE = "res4"  # stride 16 under res3 association (stride 8)
    with pytest.raises(ValueError, match="SKIP_FEATURE='res4' must be a backbone output at half"):
        build_model(cfg)


def test_dense_decoder_without_its_loss_is_a_config_error():
    cfg = tiny_cfg()
    cfg.MODEL.IAI.DENSE_ID.LOSS_WEIGHT = 0.0
    with pytest.raises(ValueError, match="DENSE_ID.LOSS_WEIGHT > 0"):
        build_model(cfg)


def test_teacher_forced_targets_follow_the_memory_and_accuracy_counts_seen_instances(model, monkeypatch):
    from iai_d2.evaluation.diagnosis import run_video
    from iai_d2.evaluation.id_accuracy import InferenceMemoryProbe, id_head_summary
    from iai_d2.inference.relabel import as_rles

    model.eval()
    N = model.num_ids
    clip = make_clip(1, [[0], [0], [0, 1], [1]])
    state = model.new_video_state()
    targets = []
    for image, inst in zip(clip["image"], clip["instances"]):
        probs, target = model.teacher_forced_frame(state, image, inst.gt_masks.tensor, inst.gt_ids)
        assert probs.shape == (len(inst), N + 1)
        targets.append(target.tolist())
    # Frame 0: nothing held; then slot 0 is held; slot 1 is new at frame 2, held at frame 3.
    assert targets == [[N - 1], [0], [0, N - 1], [1]]

    # A decoder that always answers the right slot is 100% accurate on the seen instances only.
    answer = {}
    real_tf = model.teacher_forced_frame

    def teacher_forced_frame(state, image, masks, slots, bottom_up=None):
        probs, target = real_tf(state, image, masks, slots, bottom_up=bottom_up)
        answer["target"] = target
        return torch.nn.functional.one_hot(target, N + 1).float(), target

    monkeypatch.setattr(model, "teacher_forced_frame", teacher_forced_frame)
    gt = [{k: as_rles(m[None].numpy())[0] for k, m in zip(inst.gt_ids.tolist(), inst.gt_masks.tensor)}
          for inst in clip["instances"]]
    video = {"video_id": 1, "length": 4, "height": 96, "width": 128, "frames": clip["image"]}
    probe = InferenceMemoryProbe(model, gt, 0.5)
    run_video(model, video, probe)
    result = id_head_summary({"teacher_forced": probe.teacher_forced.answers, "inference": probe.answers}, N)
    assert result["teacher_forced"]["seen"] == 3 and result["teacher_forced"]["accuracy"] == 1.0
    assert result["teacher_forced"]["prior"] == 2 / 3


def test_teacher_forced_memory_reuses_the_inference_bottom_up_features(model, monkeypatch):
    """The diagnosis runs the teacher-forced memory in step with inference, on the bottom-up
    features inference computed for the same frame (they do not depend on the memory): the
    answers match a teacher-forced pass of its own, and the bottom-up runs once per frame."""
    from iai_d2.evaluation.id_accuracy import InferenceMemoryProbe
    from iai_d2.inference.relabel import as_rles

    model.eval()
    clip = make_clip(2, [[0], [0, 1], [1], [0, 1]])
    own, shared, infer = model.new_video_state(), model.new_video_state(), model.new_video_state()
    for image, inst in zip(clip["image"], clip["instances"]):
        masks, slots = inst.gt_masks.tensor, inst.gt_ids
        probs, targets = model.teacher_forced_frame(own, image, masks, slots)
        model.inference_frame(infer, image, 96, 128)
        bottom_up = infer.last_frame["bottom_up"]
        probs_shared, targets_shared = model.teacher_forced_frame(shared, image, masks, slots, bottom_up=bottom_up)
        assert torch.equal(targets_shared, targets)
        assert torch.allclose(probs_shared, probs, atol=1e-5)

    calls = []
    real_bottom_up = model.backbone.bottom_up.forward
    monkeypatch.setattr(model.backbone.bottom_up, "forward", lambda x: calls.append(1) or real_bottom_up(x))
    gt = [{k: as_rles(m[None].numpy())[0] for k, m in zip(inst.gt_ids.tolist(), inst.gt_masks.tensor)}
          for inst in clip["instances"]]
    probe = InferenceMemoryProbe(model, gt, 0.5)
    state = model.new_video_state()
    for t, image in enumerate(clip["image"]):
        probe.frame(state, t, image, 96, 128)
    assert len(calls) == 4
    # seen instances only: frame 1 holds track 0, frame 2 track 1, frame 3 both
    assert [y for y, _ in probe.teacher_forced.answers] == [0, 1, 0, 1]
