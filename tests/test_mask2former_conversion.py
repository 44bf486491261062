"""Conversion of reference Mask2Former checkpoints (facebookresearch/Mask2Former names) to this
port: reference names and shapes of the R50 COCO instance model written out by hand (from the
reference source: MaskFormer / MaskFormerHead / MSDeformAttnPixelDecoder /
MultiScaleMaskedTransformerDecoder), a synthetic reference checkpoint of the whole model loaded
strictly, the class-head options, bad checkpoints, and the command line."""
import os
import pickle
import sys

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_model

PROJECT = os.path.join(os.path.dirname(__file__), "..", "projects", "Mask2Former")
sys.path.insert(0, PROJECT)
from convert_reference_checkpoint import main, parse_args  # noqa: E402
from mask2former import (  # noqa: E402
    add_mask2former_config,
    convert_reference_state_dict,
    load_reference_checkpoint,
    sine_position_embedding,
)
from mask2former.checkpoint_conversion import rename_reference_keys  # noqa: E402

CONFIGS = os.path.join(PROJECT, "configs")
PD, PR = "sem_seg_head.pixel_decoder.", "sem_seg_head.predictor."

# Reference key -> (shape, this port's key) for every module type of the R50 instance model
# (maskformer2_R50_bs16_50ep: 256 channels, 8 heads, 4 points, 3 levels res5/res4/res3, 6 encoder
# layers, DEC_LAYERS 10 = 9 layers, 100 queries, 80 classes).
R50_REFERENCE_SAMPLE = {
    "backbone.stem.conv1.weight": ((64, 3, 7, 7), "backbone.stem.conv1.weight"),
    "backbone.stem.conv1.norm.running_var": ((64,), "backbone.stem.conv1.norm.running_var"),
    "backbone.res2.0.shortcut.norm.bias": ((256,), "backbone.res2.0.shortcut.norm.bias"),
    "backbone.res5.2.conv3.weight": ((2048, 512, 1, 1), "backbone.res5.2.conv3.weight"),
    PD + "input_proj.0.0.weight": ((256, 2048, 1, 1), "pixel_decoder.input_proj.0.0.weight"),  # res5 first
    PD + "input_proj.1.0.bias": ((256,), "pixel_decoder.input_proj.1.0.bias"),
    PD + "input_proj.2.0.weight": ((256, 512, 1, 1), "pixel_decoder.input_proj.2.0.weight"),  # res3 last
    PD + "input_proj.2.1.weight": ((256,), "pixel_decoder.input_proj.2.1.weight"),  # GroupNorm
    PD + "transformer.level_embed": ((3, 256), "pixel_decoder.level_embed"),
    PD + "transformer.encoder.layers.0.self_attn.sampling_offsets.weight":
        ((192, 256), "pixel_decoder.encoder.0.attn.sampling_offsets.weight"),  # 8 heads x 3 levels x 4 points x 2
    PD + "transformer.encoder.layers.5.self_attn.sampling_offsets.bias":
        ((192,), "pixel_decoder.encoder.5.attn.sampling_offsets.bias"),
    PD + "transformer.encoder.layers.1.self_attn.attention_weights.weight":
        ((96, 256), "pixel_decoder.encoder.1.attn.attention_weights.weight"),
    PD + "transformer.encoder.layers.2.self_attn.value_proj.weight":
        ((256, 256), "pixel_decoder.encoder.2.attn.value_proj.weight"),
    PD + "transformer.encoder.layers.3.self_attn.output_proj.bias":
        ((256,), "pixel_decoder.encoder.3.attn.output_proj.bias"),
    PD + "transformer.encoder.layers.4.norm1.weight": ((256,), "pixel_decoder.encoder.4.norm1.weight"),
    PD + "transformer.encoder.layers.4.linear1.weight": ((1024, 256), "pixel_decoder.encoder.4.ffn.0.weight"),
    PD + "transformer.encoder.layers.4.linear2.weight": ((256, 1024), "pixel_decoder.encoder.4.ffn.3.weight"),
    PD + "transformer.encoder.layers.5.norm2.bias": ((256,), "pixel_decoder.encoder.5.norm2.bias"),
    PD + "adapter_1.weight": ((256, 256, 1, 1), "pixel_decoder.lateral_convs.0.weight"),  # res2, no bias (GN)
    PD + "adapter_1.norm.weight": ((256,), "pixel_decoder.lateral_convs.0.norm.weight"),
    PD + "layer_1.weight": ((256, 256, 3, 3), "pixel_decoder.output_convs.0.weight"),
    PD + "layer_1.norm.bias": ((256,), "pixel_decoder.output_convs.0.norm.bias"),
    PD + "mask_features.weight": ((256, 256, 1, 1), "pixel_decoder.mask_features.weight"),
    PD + "mask_features.bias": ((256,), "pixel_decoder.mask_features.bias"),
    PR + "transformer_cross_attention_layers.0.multihead_attn.in_proj_weight":
        ((768, 256), "transformer_decoder.cross_attention.0.attn.in_proj_weight"),
    PR + "transformer_cross_attention_layers.8.multihead_attn.in_proj_bias":
        ((768,), "transformer_decoder.cross_attention.8.attn.in_proj_bias"),
    PR + "transformer_cross_attention_layers.3.multihead_attn.out_proj.weight":
        ((256, 256), "transformer_decoder.cross_attention.3.attn.out_proj.weight"),
    PR + "transformer_cross_attention_layers.3.norm.weight":
        ((256,), "transformer_decoder.cross_attention.3.norm.weight"),
    PR + "transformer_self_attention_layers.8.self_attn.in_proj_weight":
        ((768, 256), "transformer_decoder.self_attention.8.attn.in_proj_weight"),
    PR + "transformer_self_attention_layers.0.self_attn.out_proj.bias":
        ((256,), "transformer_decoder.self_attention.0.attn.out_proj.bias"),
    PR + "transformer_self_attention_layers.0.norm.bias": ((256,), "transformer_decoder.self_attention.0.norm.bias"),
    PR + "transformer_ffn_layers.2.linear1.weight": ((2048, 256), "transformer_decoder.ffn.2.ffn.0.weight"),
    PR + "transformer_ffn_layers.2.linear2.bias": ((256,), "transformer_decoder.ffn.2.ffn.3.bias"),
    PR + "transformer_ffn_layers.8.norm.weight": ((256,), "transformer_decoder.ffn.8.norm.weight"),
    PR + "decoder_norm.weight": ((256,), "transformer_decoder.decoder_norm.weight"),
    PR + "query_feat.weight": ((100, 256), "transformer_decoder.query_feat.weight"),
    PR + "query_embed.weight": ((100, 256), "transformer_decoder.query_embed.weight"),
    PR + "level_embed.weight": ((3, 256), "transformer_decoder.level_embed.weight"),
    PR + "class_embed.weight": ((81, 256), "transformer_decoder.class_embed.weight"),
    PR + "class_embed.bias": ((81,), "transformer_decoder.class_embed.bias"),
    PR + "mask_embed.layers.0.weight": ((256, 256), "transformer_decoder.mask_embed.0.weight"),
    PR + "mask_embed.layers.1.bias": ((256,), "transformer_decoder.mask_embed.2.bias"),
    PR + "mask_embed.layers.2.weight": ((256, 256), "transformer_decoder.mask_embed.4.weight"),
}


def model_cfg(config="Base-Mask2Former.yaml", *opts):
    cfg = get_cfg()
    add_mask2former_config(cfg)
    cfg.merge_from_file(os.path.join(CONFIGS, config))
    cfg.merge_from_list(["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", *opts])
    return cfg


@pytest.fixture(scope="module")
def r50():
    """(model, cfg) of Base-Mask2Former.yaml on CPU, built once."""
    cfg = model_cfg()
    return build_model(cfg), cfg


def reference_state(cfg, model, seed=0):
    """A reference-named checkpoint of ``model`` (built from ``cfg``; numpy float32, every tensor
    distinct), from the reference modules' names: MSDeformAttnPixelDecoder (input_proj from the
    coarsest level, transformer.encoder.layers, adapter_/layer_ numbered from the finest FPN
    level), MultiScaleMaskedTransformerDecoder, SetCriterion's empty_weight. The backbone is
    Detectron2's ResNet on both sides: its keys are taken as they are."""
    m, rng = cfg.MODEL.MASK2FORMER, np.random.default_rng(seed)
    c, heads, points = m.CONV_DIM, m.NHEADS, m.DEFORM_POINTS
    channels = {f: s.channels for f, s in model.backbone.output_shape().items()}
    backbone_state = {k: v for k, v in model.state_dict().items() if k.startswith("backbone.")}
    shapes = {k: tuple(v.shape) for k, v in backbone_state.items()}
    levels = ["res5", "res4", "res3"]

    def linear(prefix, out_dim, in_dim):
        shapes[prefix + "weight"], shapes[prefix + "bias"] = (out_dim, in_dim), (out_dim,)

    def norm(prefix, dim):
        shapes[prefix + "weight"], shapes[prefix + "bias"] = (dim,), (dim,)

    for lvl, f in enumerate(levels):
        shapes[f"{PD}input_proj.{lvl}.0.weight"], shapes[f"{PD}input_proj.{lvl}.0.bias"] = (c, channels[f], 1, 1), (c,)
        norm(f"{PD}input_proj.{lvl}.1.", c)
    shapes[PD + "transformer.level_embed"] = (len(levels), c)
    for i in range(m.ENCODER_LAYERS):
        layer = f"{PD}transformer.encoder.layers.{i}."
        linear(layer + "self_attn.sampling_offsets.", heads * len(levels) * points * 2, c)
        linear(layer + "self_attn.attention_weights.", heads * len(levels) * points, c)
        linear(layer + "self_attn.value_proj.", c, c)
        linear(layer + "self_attn.output_proj.", c, c)
        norm(layer + "norm1.", c)
        linear(layer + "linear1.", m.DIM_FEEDFORWARD, c)
        linear(layer + "linear2.", c, m.DIM_FEEDFORWARD)
        norm(layer + "norm2.", c)
    shapes[PD + "adapter_1.weight"] = (c, channels["res2"], 1, 1)
    norm(PD + "adapter_1.norm.", c)
    shapes[PD + "layer_1.weight"] = (c, c, 3, 3)
    norm(PD + "layer_1.norm.", c)
    shapes[PD + "mask_features.weight"], shapes[PD + "mask_features.bias"] = (m.MASK_DIM, c, 1, 1), (m.MASK_DIM,)
    h = m.HIDDEN_DIM
    for i in range(m.DEC_LAYERS):
        for layer, attn in (("transformer_cross_attention_layers", "multihead_attn"),
                            ("transformer_self_attention_layers", "self_attn")):
            prefix = f"{PR}{layer}.{i}."
            shapes[f"{prefix}{attn}.in_proj_weight"], shapes[f"{prefix}{attn}.in_proj_bias"] = (3 * h, h), (3 * h,)
            linear(f"{prefix}{attn}.out_proj.", h, h)
            norm(prefix + "norm.", h)
        linear(f"{PR}transformer_ffn_layers.{i}.linear1.", m.DEC_DIM_FEEDFORWARD, h)
        linear(f"{PR}transformer_ffn_layers.{i}.linear2.", h, m.DEC_DIM_FEEDFORWARD)
        norm(f"{PR}transformer_ffn_layers.{i}.norm.", h)
    norm(PR + "decoder_norm.", h)
    shapes[PR + "query_feat.weight"] = shapes[PR + "query_embed.weight"] = (m.NUM_OBJECT_QUERIES, h)
    shapes[PR + "level_embed.weight"] = (3, h)
    linear(PR + "class_embed.", m.NUM_CLASSES + 1, h)
    for j in range(3):
        linear(f"{PR}mask_embed.layers.{j}.", m.MASK_DIM if j == 2 else h, h)
    shapes["criterion.empty_weight"] = (m.NUM_CLASSES + 1,)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


@pytest.fixture(scope="module")
def r50_reference(r50):
    model, cfg = r50
    return reference_state(cfg, model)


def test_reference_names_and_shapes_of_every_module_type_map_onto_the_r50_model(r50):
    model, _ = r50
    state = model.state_dict()
    sample = {k: np.zeros(shape, np.float32) for k, (shape, _) in R50_REFERENCE_SAMPLE.items()}
    converted, unknown = rename_reference_keys(sample)
    assert unknown == []
    for reference_key, (shape, ours) in R50_REFERENCE_SAMPLE.items():
        assert ours in converted, reference_key
        assert tuple(state[ours].shape) == shape, (reference_key, ours, tuple(state[ours].shape))
    assert len(converted) == len(sample)


def test_full_synthetic_reference_checkpoint_loads_strictly_with_values_in_place(r50, r50_reference):
    model, _ = r50
    converted = convert_reference_state_dict(r50_reference, model.state_dict())
    model.load_state_dict(converted, strict=True)
    ref = {k: torch.from_numpy(v) for k, v in r50_reference.items()}
    pd, td = model.pixel_decoder, model.transformer_decoder
    # The pixel decoder's level 0 is res5 on both sides (2048 input channels), level 2 res3.
    assert torch.equal(pd.input_proj[0][0].weight, ref[PD + "input_proj.0.0.weight"])
    assert torch.equal(pd.input_proj[2][1].bias, ref[PD + "input_proj.2.1.bias"])
    assert torch.equal(pd.level_embed, ref[PD + "transformer.level_embed"])
    assert torch.equal(pd.encoder[3].attn.sampling_offsets.weight,
                       ref[PD + "transformer.encoder.layers.3.self_attn.sampling_offsets.weight"])
    assert torch.equal(pd.encoder[5].ffn[3].weight, ref[PD + "transformer.encoder.layers.5.linear2.weight"])
    assert torch.equal(pd.lateral_convs[0].norm.weight, ref[PD + "adapter_1.norm.weight"])
    assert torch.equal(pd.output_convs[0].weight, ref[PD + "layer_1.weight"])
    # Attention's packed q/k/v projection is copied whole; the MLP's layers skip the ReLUs.
    assert torch.equal(td.cross_attention[7].attn.in_proj_weight,
                       ref[PR + "transformer_cross_attention_layers.7.multihead_attn.in_proj_weight"])
    assert torch.equal(td.self_attention[2].attn.out_proj.bias,
                       ref[PR + "transformer_self_attention_layers.2.self_attn.out_proj.bias"])
    assert torch.equal(td.ffn[4].ffn[0].weight, ref[PR + "transformer_ffn_layers.4.linear1.weight"])
    assert torch.equal(td.mask_embed[4].weight, ref[PR + "mask_embed.layers.2.weight"])
    assert torch.equal(td.level_embed.weight, ref[PR + "level_embed.weight"])
    assert torch.equal(td.class_embed.weight, ref[PR + "class_embed.weight"])
    assert torch.equal(model.backbone.res4[5].conv2.norm.running_mean, ref["backbone.res4.5.conv2.norm.running_mean"])
    # Every reference tensor but the skipped criterion buffer is used exactly once.
    assert len(converted) == len(r50_reference) - 1


def test_r50_config_uses_the_reference_sine_positions(r50):
    """The reference's PositionEmbeddingSine (normalize=True) puts row i at (i + 1) / H * 2 pi;
    the tiny configs keep Deformable DETR's cell centres, (i + 0.5) / H * 2 pi. Channel 0 is
    sin of the row position at frequency 1."""
    model, _ = r50
    assert not model.pixel_decoder.position_cell_centres and not model.transformer_decoder.position_cell_centres
    h = 5
    rows = torch.arange(h, dtype=torch.float32)
    x = torch.zeros(1, 8, h, 3)
    reference = sine_position_embedding(x, 4, cell_centres=False)[0, 0, :, 0]
    assert torch.allclose(reference, torch.sin((rows + 1) / h * 2 * np.pi), atol=1e-4)
    centres = sine_position_embedding(x, 4)[0, 0, :, 0]
    assert torch.allclose(centres, torch.sin((rows + 0.5) / h * 2 * np.pi), atol=1e-4)
    tiny = build_model(model_cfg("mask2former_tiny_frames.yaml"))
    assert tiny.pixel_decoder.position_cell_centres and tiny.transformer_decoder.position_cell_centres


def test_fpn_convs_are_renumbered_coarse_to_fine():
    """The reference numbers its FPN convs from the finest level (adapter_1), this port from the
    coarsest (lateral_convs.0): with two FPN levels the order flips."""
    reference = {PD + f"{conv}_{k}.{p}": np.full(1, 10 * k, np.float32)
                 for conv in ("adapter", "layer") for k in (1, 2) for p in ("weight", "norm.bias")}
    converted, unknown = rename_reference_keys(reference)
    assert unknown == []
    assert converted["pixel_decoder.lateral_convs.0.weight"].item() == 20  # adapter_2, the coarser
    assert converted["pixel_decoder.lateral_convs.1.norm.bias"].item() == 10
    assert converted["pixel_decoder.output_convs.1.weight"].item() == 10


def test_class_head_kept_selected_or_left_out(r50, r50_reference):
    model, _ = r50
    weight = torch.from_numpy(r50_reference[PR + "class_embed.weight"])
    bias = torch.from_numpy(r50_reference[PR + "class_embed.bias"])
    # Selected rows (here 3 of the 80 classes, reordered) and the no-object row, last.
    small = {k: v for k, v in model.state_dict().items() if "class_embed" not in k}
    small["transformer_decoder.class_embed.weight"] = torch.zeros(4, 256)
    small["transformer_decoder.class_embed.bias"] = torch.zeros(4)
    converted = convert_reference_state_dict(r50_reference, small, keep_classes=[5, 0, 79])
    assert torch.equal(converted["transformer_decoder.class_embed.weight"], weight[[5, 0, 79, 80]])
    assert torch.equal(converted["transformer_decoder.class_embed.bias"], bias[[5, 0, 79, 80]])
    # Another class count without a selection: the class head is left out, all else loads.
    converted = convert_reference_state_dict(r50_reference, small)
    assert "transformer_decoder.class_embed.weight" not in converted
    assert set(small) - set(converted) == {"transformer_decoder.class_embed.weight",
                                           "transformer_decoder.class_embed.bias"}
    with pytest.raises(ValueError, match=r"keep_classes \[80\] are not classes"):
        convert_reference_state_dict(r50_reference, small, keep_classes=[1, 2, 80])


def one_line_error(reference, model_state) -> str:
    with pytest.raises(ValueError) as info:
        convert_reference_state_dict(reference, model_state)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_unknown_and_misshapen_keys_are_one_line_errors(r50, r50_reference):
    model, _ = r50
    state = model.state_dict()
    missing = dict(r50_reference)
    del missing[PR + "transformer_ffn_layers.6.linear2.bias"]
    message = one_line_error(missing, state)
    assert "model keys without a value in the reference checkpoint: transformer_decoder.ffn.6.ffn.3.bias" in message

    unknown = {**r50_reference, PR + "static_query.weight": np.zeros((100, 256), np.float32)}
    message = one_line_error(unknown, state)
    assert f"reference keys with no counterpart in this port: {PR}static_query.weight" in message

    misshapen = {**r50_reference, PR + "query_feat.weight": np.zeros((200, 256), np.float32)}
    message = one_line_error(misshapen, state)
    assert "transformer_decoder.query_feat.weight (200, 256) vs (100, 256)" in message


def test_command_line_converts_a_model_zoo_pkl_that_detectron2_then_loads(tmp_path, capsys):
    """The tiny config (ResNet-18, 64 channels) keeps the files small: a model-zoo style .pkl
    (numpy arrays, "__author__") -> .pth that DetectionCheckpointer loads with no key missing."""
    opts = ["MODEL.MASK2FORMER.ENCODER_LAYERS", "1", "MODEL.MASK2FORMER.DEC_LAYERS", "2"]
    cfg = model_cfg("mask2former_tiny_frames.yaml", *opts)
    model = build_model(cfg)
    reference = reference_state(cfg, model)
    pkl = tmp_path / "model_final.pkl"
    pkl.write_bytes(pickle.dumps({"model": reference, "__author__": "test"}))
    assert load_reference_checkpoint(str(pkl)).keys() == reference.keys()
    out = tmp_path / "converted" / "model.pth"
    config = os.path.join(CONFIGS, "mask2former_tiny_frames.yaml")
    main(parse_args(["--input", str(pkl), "--output", str(out), "--config-file", config, *opts]))
    assert "class head (5, 64)" in capsys.readouterr().out
    assert sorted(os.listdir(out.parent)) == ["model.pth"]  # no temporary file left
    fresh = build_model(cfg)
    fresh.load_state_dict(torch.load(out)["model"], strict=True)
    fresh = build_model(cfg)
    DetectionCheckpointer(fresh).load(str(out))  # as MODEL.WEIGHTS
    assert torch.equal(fresh.transformer_decoder.query_embed.weight,
                       torch.from_numpy(reference[PR + "query_embed.weight"]))

    # --num-classes 2: the class head is left out; bad --keep-classes and a broken file are one line.
    main(parse_args(["--input", str(pkl), "--output", str(out), "--config-file", config, "--num-classes", "2", *opts]))
    assert "class head left out" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # argparse's one-line usage error
        parse_args(["--input", str(pkl), "--output", str(out), "--keep-classes", "a,b"])
    assert "--keep-classes: 'a,b' is not a comma-separated list of integers" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--num-classes 3 but --keep-classes names 2"):
        main(parse_args(["--input", str(pkl), "--output", str(out), "--num-classes", "3", "--keep-classes", "0,1"]))
    broken = tmp_path / "broken.pkl"
    broken.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="broken.pkl is not a readable checkpoint"):
        main(parse_args(["--input", str(broken), "--output", str(out), "--config-file", config]))
