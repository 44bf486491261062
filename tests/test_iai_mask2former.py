"""IAI + Mask2Former (projects/Mask2Former, IAIMask2Former): the IAIResNet backbone, one identity
pathway with IAIRCNN, query ID targets from a hand-built matching, a training step on hand-built
clips (dense and query ID decoders), online inference in bounded memory, a memorised two-object
video whose identities stay distinct and stable, and train_net.py writing a valid submission."""
import json
import os
import subprocess
import sys
import zipfile

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Instances
from detectron2.utils.events import EventStorage

from iai_d2.evaluation import validate_results
from iai_d2.modeling import IAIRCNN, IAIResNet, IAIVideoModel

from test_modeling_meta_arch import make_clip

PROJECT = os.path.join(os.path.dirname(__file__), "..", "projects", "Mask2Former")
sys.path.insert(0, PROJECT)
from mask2former import IAIMask2Former, add_mask2former_config, query_id_targets  # noqa: E402

CONFIGS = os.path.join(PROJECT, "configs")
TINY = os.path.join(CONFIGS, "iai_mask2former_tiny.yaml")


def tiny_cfg(decoder="dense", *opts):
    """iai_mask2former_tiny.yaml made smaller still (32 channels, 2 decoder layers, HAB width 32)."""
    cfg = get_cfg()
    add_mask2former_config(cfg)
    cfg.merge_from_file(TINY)
    cfg.merge_from_list([
        "MODEL.MASK2FORMER.CONV_DIM", "32", "MODEL.MASK2FORMER.MASK_DIM", "32", "MODEL.MASK2FORMER.HIDDEN_DIM", "32",
        "MODEL.MASK2FORMER.DIM_FEEDFORWARD", "64", "MODEL.MASK2FORMER.DEC_DIM_FEEDFORWARD", "64",
        "MODEL.MASK2FORMER.ENCODER_LAYERS", "1", "MODEL.MASK2FORMER.DEC_LAYERS", "2",
        "MODEL.MASK2FORMER.TRAIN_NUM_POINTS", "1024", "MODEL.IAI.ASSOCIATION.DIM", "32",
        "MODEL.IAI.ASSOCIATION.FFN_DIM", "64", "MODEL.IAI.DENSE_ID.CONV_DIM", "32", "MODEL.IAI.ID_DECODER", decoder,
        *opts,
    ])
    return cfg


def build(decoder="dense", *opts, seed=0):
    torch.manual_seed(seed)
    return build_model(tiny_cfg(decoder, *opts))


def test_identity_pathway_is_shared_with_iai_rcnn():
    assert issubclass(IAIMask2Former, IAIVideoModel)
    for name in ("forward", "forward_clips", "inference_frame", "new_video_state", "identify",
                 "teacher_forced_frame", "inference_video"):
        assert getattr(IAIMask2Former, name) is getattr(IAIRCNN, name) is getattr(IAIVideoModel, name), name


def test_iai_resnet_fuses_the_association_level_and_keeps_the_image_model_shapes(one_torch_thread):
    """res2-res5 keep their shapes (res3 is the fused map), "association" is the HAB output,
    top_down is the identity, and a checkpoint of the image model on the plain ResNet loads."""
    model = build()
    backbone = model.backbone
    assert isinstance(backbone, IAIResNet) and backbone.size_divisibility == 32
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        bottom_up = backbone.bottom_up(x)
        out = backbone(x)
    assert set(out) == {"res2", "res3", "res4", "res5", "association"}
    for name in ("res2", "res3", "res4", "res5"):
        assert out[name].shape == bottom_up[name].shape, name
    assert out["association"].shape == (1, 32, 8, 12)
    assert torch.equal(out["res2"], bottom_up["res2"]) and not torch.equal(out["res3"], bottom_up["res3"])
    assert {k: v.stride for k, v in backbone.output_shape().items()}["association"] == 8
    features = {k: v for k, v in out.items() if k != "association"}
    assert backbone.top_down(features) is features
    with pytest.raises(ValueError, match="not a multiple of the res5 stride 32"):
        backbone(torch.randn(1, 3, 60, 96))

    # the tiny image model's checkpoint (ResNet keys at backbone.*) loads: only IAI modules are new
    image_cfg = tiny_cfg()
    image_cfg.MODEL.META_ARCHITECTURE, image_cfg.MODEL.BACKBONE.NAME = "Mask2Former", "build_resnet_backbone"
    torch.manual_seed(1)
    image_state = build_model(image_cfg).state_dict()
    assert "backbone.stem.conv1.weight" in image_state
    missing, unexpected = model.load_state_dict(image_state, strict=False)
    assert not unexpected and missing
    assert all(k.startswith(("backbone.association.", "dense_id_head.")) for k in missing), missing
    loaded = model.state_dict()
    assert torch.equal(loaded["backbone.bottom_up.stem.conv1.weight"], image_state["backbone.stem.conv1.weight"])
    assert torch.equal(loaded["transformer_decoder.query_feat.weight"], image_state["transformer_decoder.query_feat.weight"])


def test_bare_mask2former_of_the_inference_benchmark_takes_every_weight_from_iai(one_torch_thread):
    """benchmarks/inference.py times IAI + Mask2Former against Mask2Former with the same weights:
    every parameter of the bare model comes from IAI's (ResNet keys out of ``bottom_up``), and its
    backbone computes IAIResNet's un-fused ResNet features."""
    sys.path.insert(0, os.path.join(PROJECT, "..", "..", "benchmarks"))
    from common import as_mask2former, plain_resnet_state_dict

    iai = build().eval()
    bare = build_model(as_mask2former(tiny_cfg())).eval()
    missing, unexpected = bare.load_state_dict(plain_resnet_state_dict(iai.state_dict()), strict=False)
    assert not missing
    assert unexpected and all(k.startswith(("backbone.association.", "dense_id_head.")) for k in unexpected)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        plain, nested = bare.backbone(x), iai.backbone.bottom_up(x)
    assert set(plain) == set(nested) and all(torch.equal(plain[k], nested[k]) for k in plain)


def test_config_errors_are_one_line():
    with pytest.raises(ValueError, match="ID_DECODER must be one of"):
        build_model(tiny_cfg("roi"))
    with pytest.raises(ValueError, match="needs an IAI backbone"):
        build_model(tiny_cfg("dense", "MODEL.BACKBONE.NAME", "build_resnet_backbone"))


def test_query_id_targets_from_a_hand_built_matching():
    num_ids = 5  # slots 0-3, "new" 4, background 5
    matching = [(torch.tensor([3, 0]), torch.tensor([1, 0])), (torch.zeros(0, dtype=torch.long),) * 2]
    gt_ids = [torch.tensor([2, 4]), torch.zeros(0, dtype=torch.long)]
    targets = query_id_targets(matching, gt_ids, num_queries=4, num_ids=num_ids)
    # image 0: query 3 <- GT 1 ("new"), query 0 <- GT 0 (slot 2), queries 1, 2 background; image 1: all background
    assert targets.tolist() == [[2, 5, 5, 4], [5, 5, 5, 5]]


@pytest.mark.parametrize("decoder", ["dense", "query"])
def test_training_step_gives_finite_losses_and_gradients_on_id_modules(decoder, one_torch_thread):
    model = build(decoder, "MODEL.IAI.DENSE_ID.LOSS_WEIGHT", "1.0" if decoder == "dense" else "0.0")
    model.train()
    clips = [make_clip(1, [[0, 1], [0, 1, 2], [1, 2]], 64, 96), make_clip(2, [[0], [], [0, 1]], 64, 96)]
    with EventStorage(0):
        losses = model(clips)
    id_loss = "loss_id_dense" if decoder == "dense" else "loss_id_query"
    assert {"loss_ce", "loss_mask", "loss_dice", "loss_ce_0", "loss_dice_1", id_loss} <= set(losses)
    assert len(losses) == 3 * 3 + 1, sorted(losses)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    model.zero_grad()
    sum(losses.values()).backward()
    association = model.backbone.association
    id_module = model.dense_id_head.predictor if decoder == "dense" else model.id_head
    for name, param in [
        ("id_bank", association.id_bank.conv.weight),
        ("hab", association.hab.linear_v.weight),
        ("id decoder", id_module.weight),
        ("queries", model.transformer_decoder.query_feat.weight),
    ]:
        assert param.grad is not None and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("decoder", ["dense", "query"])
def test_online_inference_in_bounded_memory(decoder, one_torch_thread):
    model = build(decoder)
    model.eval()
    model.frame_score_thresh = 0.0  # untrained: keep every query ...
    model.birth_score = 0.0  # ... let them start tracks
    model.mask_threshold = 0.2  # ... and keep some of their (untrained) masks
    model.max_per_frame = 4
    state = model.new_video_state()
    torch.manual_seed(2)
    seen = set()
    for t in range(7):
        out = model.inference_frame(state, torch.randint(0, 255, (3, 64, 96), dtype=torch.uint8), 128, 192)
        assert isinstance(out, Instances) and out.image_size == (128, 192)
        assert out.pred_masks.shape[1:] == (128, 192) and out.pred_masks.dtype == torch.bool
        assert out.class_probs.shape == (len(out), 4) and out.id_probs.shape == (len(out), model.num_ids + 1)
        assert len(out) <= 4 and (out.scores[:-1] >= out.scores[1:]).all()
        if len(out):
            assert int(out.pred_masks.sum(0).max()) <= 1  # de-overlapped
        assert len(set(out.ID.tolist())) == len(out)
        seen.update(out.ID.tolist())
        assert len(state.memory.global_frames) <= model.backbone.max_global  # MAX_GLOBAL 4: bounded
    assert state.frame_idx == 7 and seen
    probs = model.identify(state, torch.ones(2, 64, 96, dtype=torch.bool))
    assert probs.shape == (2, model.num_ids + 1) and torch.allclose(probs.sum(1), torch.ones(2))


def two_squares_video(num_frames, height=64, width=96):
    """Frames (3, h, w) and Instances (gt_ids = track 0 / 1) of a red and a blue square moving apart."""
    g = torch.Generator().manual_seed(0)
    frames, instances = [], []
    for t in range(num_frames):
        image = torch.full((3, height, width), 100.0) + 8 * torch.randn(3, height, width, generator=g)
        masks = torch.zeros(2, height, width, dtype=torch.bool)
        masks[0, 10:30, 8 + 3 * t : 28 + 3 * t] = True
        masks[1, 32:56, 60 - 3 * t : 84 - 3 * t] = True
        image[:, masks[0]] = torch.tensor([230.0, 40.0, 40.0])[:, None]
        image[:, masks[1]] = torch.tensor([40.0, 40.0, 230.0])[:, None]
        inst = Instances((height, width))
        inst.gt_masks = BitMasks(masks)
        inst.gt_boxes = inst.gt_masks.get_bounding_boxes()
        inst.gt_classes = torch.tensor([0, 2])
        inst.gt_ids = torch.tensor([0, 1])
        frames.append(image.clamp(0, 255))
        instances.append(inst)
    return frames, instances


def test_memorised_video_keeps_two_distinct_stable_identities(one_torch_thread):
    """60 iterations on 3-frame clips of a 4-frame video (query ID head and dense decoder trained
    together): the query ID loss falls, and online, the dense decoder gives each square one
    identity across all frames (the two distinct). Seen: mask IoU > 0.98, scores > 0.97, ID losses
    2.4 / 2.8 -> 0.1 / 0.2."""
    model = build("query", "MODEL.IAI.DENSE_ID.LOSS_WEIGHT", "1.0", "MODEL.IAI.MEMORY.TRAIN_DROP_PROB", "0.0",
                  "MODEL.IAI.MEMORY.TRAIN_JITTER", "0")
    frames, instances = two_squares_video(4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    history = []
    model.train()
    with EventStorage(0):
        for it in range(60):
            s = it % 2
            clip = {"video_id": 1, "frame_indices": [s, s + 1, s + 2], "image": frames[s : s + 3],
                    "instances": instances[s : s + 3]}
            losses = model([clip])
            optimizer.zero_grad()
            sum(losses.values()).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            history.append(losses["loss_id_query"].item())
    assert sum(history[-5:]) / 5 < 0.4 * history[0], history

    model.eval()
    model.id_decoder = "dense"  # identities from the dense decoder inside each mask
    state = model.new_video_state()
    identities = []
    with torch.no_grad():
        for t, (frame, gt) in enumerate(zip(frames, instances)):
            out = model.inference_frame(state, frame, 64, 96)
            masks = gt.gt_masks.tensor
            inter = (masks[:, None] & out.pred_masks[None]).flatten(2).sum(-1).float()
            union = (masks[:, None] | out.pred_masks[None]).flatten(2).sum(-1).float()
            iou, best = (inter / union.clamp(min=1)).max(1)
            assert (iou > 0.5).all(), f"frame {t}: mask IoU {iou.tolist()}"
            identities.append(out.ID[best].tolist())
    assert identities[0][0] != identities[0][1], identities
    assert all(ids == identities[0] for ids in identities), identities


def test_train_net_trains_on_clips_and_writes_a_valid_submission(synthetic_vis_root, e2e_settings, tmp_path):
    """Two iterations on synthetic_vis_train clips, then the final evaluation on the val videos."""
    out = tmp_path / "train"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", DETECTRON2_DATASETS=str(synthetic_vis_root))
    opts = [*e2e_settings.input_opts, "SOLVER.MAX_ITER", 2, "SOLVER.WARMUP_ITERS", 1, "SOLVER.STEPS", "(100,)",
            "SOLVER.IMS_PER_BATCH", 1, "INPUT.SAMPLING_FRAME_NUM", 2, "MODEL.MASK2FORMER.FRAME_SCORE_THRESH", 0.0,
            "MODEL.IAI.INFERENCE.BIRTH_SCORE_THRESH", 0.0, "OUTPUT_DIR", out]
    proc = subprocess.run(
        [sys.executable, os.path.join(PROJECT, "train_net.py"), "--config-file", TINY, *map(str, opts)],
        env=env, cwd=e2e_settings.repo, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (out / "model_final.pth").is_file()
    assert "copypaste: AP," in proc.stdout + proc.stderr  # scored against the val annotations
    with zipfile.ZipFile(out / "inference" / "submission.zip") as zf:
        assert zf.namelist() == ["results.json"]
        results = json.loads(zf.read("results.json"))
    with open(synthetic_vis_root / "synthetic_vis" / "valid.json") as f:
        validate_results(results, json.load(f))  # raises on any malformed entry


@pytest.mark.parametrize("dataset", ["youtubevis_2019", "youtubevis_2021", "ovis"])
def test_r50_configs_start_from_the_query_matching_image_model(dataset, one_torch_thread):
    """The recipe of Base-IAI-Mask2Former.yaml: the dataset's query_matching_R50.yaml checkpoint (a
    plain Mask2Former R50) loads into IAI + Mask2Former R50 with only the IAI modules new, and one
    training step on a small clip gives finite losses (res5, 2048 channels, feeds the association)."""
    def r50_cfg(name):
        cfg = get_cfg()
        add_mask2former_config(cfg)
        cfg.merge_from_file(os.path.join(CONFIGS, dataset, name))
        cfg.MODEL.WEIGHTS, cfg.MODEL.DEVICE = "", "cpu"
        return cfg

    iai_cfg, image_cfg = r50_cfg("iai_R50.yaml"), r50_cfg("query_matching_R50.yaml")
    assert iai_cfg.MODEL.MASK2FORMER.NUM_CLASSES == image_cfg.MODEL.MASK2FORMER.NUM_CLASSES
    assert iai_cfg.MODEL.RESNETS.DEPTH == 50 and iai_cfg.MODEL.IAI.ASSOCIATION.IN_FEATURE == "res5"
    torch.manual_seed(0)
    model = build_model(iai_cfg)
    image_state = build_model(image_cfg).state_dict()
    missing, unexpected = model.load_state_dict(image_state, strict=False)  # ResNet keys move under bottom_up
    assert not unexpected
    assert missing and all(k.startswith(("backbone.association.", "dense_id_head.")) for k in missing), missing
    model.train()
    with EventStorage(0):
        losses = model([make_clip(1, [[0, 1], [1]], 64, 96)])
    assert "loss_id_dense" in losses and all(torch.isfinite(v) for v in losses.values()), losses
