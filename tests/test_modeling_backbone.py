import pytest
import torch
import torch.nn.functional as F
from torch import nn

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone
from detectron2.modeling.backbone.fpn import build_resnet_fpn_backbone

import iai_d2.modeling.backbone  # noqa: F401  (registers build_iai_resnet_fpn_backbone)
from iai_d2.config import add_iai_config
from iai_d2.modeling.backbone import IAIFPN

NUM_IDS = 5


def _cfg(depth=18, dim=64, **association):
    cfg = get_cfg()
    add_iai_config(cfg)
    cfg.MODEL.BACKBONE.NAME = "build_iai_resnet_fpn_backbone"
    cfg.MODEL.RESNETS.DEPTH = depth
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64 if depth < 50 else 256
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.IAI.NUM_IDS = NUM_IDS
    cfg.MODEL.IAI.ASSOCIATION.DIM = dim
    cfg.MODEL.IAI.ASSOCIATION.FFN_DIM = 256
    cfg.MODEL.IAI.ASSOCIATION.DROP_PATH = 0.0
    for key, value in association.items():
        cfg.MODEL.IAI.ASSOCIATION[key] = value
    return cfg


def _Y(B, H, W):
    labels = torch.randint(0, NUM_IDS + 1, (B, H, W))
    return F.one_hot(labels, NUM_IDS + 1).permute(0, 3, 1, 2).float()


def test_shapes_through_every_stage():
    torch.manual_seed(0)
    backbone = build_backbone(_cfg()).eval()
    assert isinstance(backbone, IAIFPN)
    assert backbone.association.cls_projector.out_channels == 512 - 2 * 64
    assert backbone.association.id_bank.stride == 32 and backbone.size_divisibility == 32
    frames = torch.randn(2, 3, 128, 160)
    with torch.no_grad():
        feats = backbone.bottom_up(frames)
        assert feats["res5"].shape == (2, 512, 4, 5)
        memory = backbone.new_memory()
        f0 = {k: v[:1] for k, v in feats.items()}
        assoc = backbone.associate(f0, memory)
        assert assoc["res5"].shape == (1, 512, 4, 5)
        assert all(assoc[k] is f0[k] for k in ("res2", "res3", "res4"))
        res5 = f0["res5"]
        torch.testing.assert_close(
            assoc["res5"][:, :64], backbone.association.encoder_projector(res5)
        )
        torch.testing.assert_close(assoc["res5"][:, 128:], backbone.association.cls_projector(res5))
        p = backbone.top_down(assoc)
        expected = {"p2": (32, 40), "p3": (16, 20), "p4": (8, 10), "p5": (4, 5), "p6": (2, 3)}
        assert {k: tuple(v.shape) for k, v in p.items()} == {
            k: (1, 256, *hw) for k, hw in expected.items()
        }
        # forward == top_down(associate(bottom_up(x), new_memory())) for single frames. The ResNet
        # ran on a batch of 2 above and on 1 frame here: CPU kernels may sum in another order per
        # batch size (differences up to ~3e-5 seen), so compare at 1e-4, not float32 defaults.
        direct = backbone(frames[:1])
        for k in p:
            torch.testing.assert_close(direct[k], p[k], rtol=1e-4, atol=1e-4)

        backbone.remember(memory, _Y(1, 128, 160), new_ids=False)
        assert memory.global_frames == [0]
        f1 = {k: v[1:] for k, v in feats.items()}
        assert backbone.top_down(backbone.associate(f1, memory))["p2"].shape == (1, 256, 32, 40)
        backbone.remember(memory, _Y(1, 128, 160), new_ids=True)
        assert memory.global_frames == [0, 1]


def test_associate_with_switches_off():
    torch.manual_seed(0)
    backbone = build_backbone(_cfg(LOCAL=False, GLOBAL=False, CLS_PROJECTOR=False)).eval()
    assert backbone.association.cls_projector is None
    with torch.no_grad():
        feats = backbone.bottom_up(torch.randn(2, 3, 128, 160))
        memory = backbone.new_memory()
        out = backbone.associate(feats, memory)["res5"]
        assert out.shape == (2, 512, 4, 5)
        assert torch.all(out[:, 128:] == 0)
        backbone.remember(memory, _Y(2, 128, 160), new_ids=False)
        out = backbone.associate(feats, memory)["res5"]
        assert out.shape == (2, 512, 4, 5)
        assert backbone.top_down(backbone.associate(feats, memory))["p6"].shape == (2, 256, 2, 3)


def test_bad_sizes_raise_clear_errors():
    with pytest.raises(ValueError, match="more channels than 2 \\* MODEL.IAI.ASSOCIATION.DIM"):
        build_backbone(_cfg(dim=256))
    backbone = build_backbone(_cfg()).eval()
    with pytest.raises(ValueError, match="not a multiple of the res5 stride 32"):
        backbone(torch.randn(1, 3, 100, 160))
    memory = backbone.new_memory()
    with torch.no_grad():
        backbone.associate(backbone.bottom_up(torch.randn(1, 3, 128, 160)), memory)
        with pytest.raises(ValueError, match="\\(B=1, N\\+1, 128, 160\\)"):
            backbone.remember(memory, _Y(1, 120, 160), new_ids=False)


class _Model(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone


def test_plain_fpn_checkpoint_loads(tmp_path):
    torch.manual_seed(0)
    cfg = _cfg(dim=128)
    plain = build_resnet_fpn_backbone(cfg, ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN)))
    iai = build_backbone(cfg)
    assert iai.association.cls_projector.out_channels == 256
    result = iai.load_state_dict(plain.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert result.missing_keys and all(k.startswith("association.") for k in result.missing_keys)
    assert set(result.missing_keys) == {k for k in iai.state_dict() if k.startswith("association.")}

    # Through Detectron2's checkpointer, as when loading a COCO Mask R-CNN.
    path = tmp_path / "plain.pth"
    torch.save({"model": _Model(plain).state_dict()}, path)
    model = _Model(build_backbone(cfg))
    DetectionCheckpointer(model).load(str(path))
    for name, tensor in plain.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[name], tensor), name


def test_r50_keeps_2048_channel_fpn_input():
    backbone = build_backbone(_cfg(depth=50, dim=256))
    assert backbone.fpn_lateral5.in_channels == 2048
    assert backbone.association.encoder_projector.out_channels == 256
    assert backbone.association.cls_projector.out_channels == 1536


def test_gradients_from_a_later_frame_reach_the_first_frame():
    torch.manual_seed(0)
    backbone = build_backbone(_cfg()).train()
    frames = torch.randn(2, 3, 64, 96, requires_grad=True)
    feats = backbone.bottom_up(frames)
    memory = backbone.new_memory()
    backbone.associate({k: v[:1] for k, v in feats.items()}, memory)
    backbone.remember(memory, _Y(1, 64, 96), new_ids=False)
    p = backbone.top_down(backbone.associate({k: v[1:] for k, v in feats.items()}, memory))
    p["p3"].pow(2).mean().backward()
    assoc = backbone.association
    assert assoc.id_bank.conv.weight.grad.abs().sum() > 0
    assert assoc.hab.linear_v.weight.grad.abs().sum() > 0
    assert assoc.hab.local_attn.rel_bias.weight.grad.abs().sum() > 0
    assert frames.grad[0].abs().sum() > 0  # memory of frame 0 is not detached
