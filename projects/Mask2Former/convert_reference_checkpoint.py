#!/usr/bin/env python
"""
Convert a checkpoint of the reference Mask2Former (facebookresearch/Mask2Former: a model zoo
``.pkl`` or a ``.pth`` its trainer wrote) into this port's names, checked key by key and shape by
shape against the model that ``--config-file`` builds; the output ``{"model": state_dict}`` loads
as ``MODEL.WEIGHTS``.

    # the COCO R50 instance model (MinVIS's start), downloaded beforehand
    python projects/Mask2Former/convert_reference_checkpoint.py --input model_final_3c8ec9.pkl \\
        --output output/mask2former/coco_R50_instance.pth
    # for fine-tuning on a dataset of 40 classes: the class head is left out (initialised anew)
    python projects/Mask2Former/convert_reference_checkpoint.py --input model_final_3c8ec9.pkl \\
        --output output/mask2former/coco_R50_instance_40cls.pth --num-classes 40
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the mask2former package

from iai_d2.utils import filter_library_warnings  # noqa: E402

filter_library_warnings()

import torch  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402

from iai_d2.utils import atomic_write  # noqa: E402
from mask2former import add_mask2former_config, convert_reference_state_dict, load_reference_checkpoint  # noqa: E402
from mask2former.checkpoint_conversion import CLASS_HEAD_KEYS  # noqa: E402

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "Base-Mask2Former.yaml")
REFERENCE_CLASS_HEAD = "sem_seg_head.predictor.class_embed.weight"


def class_list(text: str):
    """``"3,0,7"`` -> [3, 0, 7] (``--keep-classes``)."""
    try:
        return [int(c) for c in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="reference checkpoint (.pkl of the model zoo, or .pth)")
    parser.add_argument("--output", required=True, help="converted checkpoint (.pth), written atomically")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="classes of the model to load into (default: the checkpoint's); when it differs "
                             "from the checkpoint's and --keep-classes is not given, the class head is left "
                             "out so that loading initialises it")
    parser.add_argument("--keep-classes", type=class_list, default=None,
                        help="comma-separated reference class indices (0-based, the checkpoint's order) whose "
                             "class-head rows become the new classes, in this order; the no-object row is kept")
    parser.add_argument("--config-file", default=DEFAULT_CONFIG,
                        help="config of the Mask2Former / QueryMatchMask2Former model to check against")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE pairs")
    return parser.parse_args(argv)


def target_state(args, reference) -> dict:
    """The state dict of the model the converted checkpoint is for (``--config-file``, on CPU)."""
    cfg = get_cfg()
    add_mask2former_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if cfg.MODEL.META_ARCHITECTURE == "IAIMask2Former":
        raise ValueError(
            f"{args.config_file} is an IAIMask2Former config: convert for the image model "
            "(Base-Mask2Former.yaml, the default) and pass that file as IAIMask2Former's MODEL.WEIGHTS"
        )
    num_classes = args.num_classes
    if num_classes is None and args.keep_classes is not None:
        num_classes = len(args.keep_classes)
    if num_classes is None and REFERENCE_CLASS_HEAD in reference:
        num_classes = len(reference[REFERENCE_CLASS_HEAD]) - 1
    if num_classes is not None:
        cfg.MODEL.MASK2FORMER.NUM_CLASSES = num_classes
    cfg.MODEL.WEIGHTS, cfg.MODEL.DEVICE = "", "cpu"
    return build_model(cfg).state_dict()


def main(args) -> None:
    if args.keep_classes is not None and args.num_classes not in (None, len(args.keep_classes)):
        raise ValueError(f"--num-classes {args.num_classes} but --keep-classes names {len(args.keep_classes)}")
    if not os.path.isfile(args.input):
        raise FileNotFoundError(f"--input {args.input} does not exist")
    reference = load_reference_checkpoint(args.input)
    model_state = target_state(args, reference)
    converted = convert_reference_state_dict(reference, model_state, args.keep_classes)
    atomic_write(args.output, lambda f: torch.save({"model": converted}, f))
    weight_key = CLASS_HEAD_KEYS[0]
    head = (f"class head {tuple(converted[weight_key].shape)}" if weight_key in converted
            else "class head left out (initialised when loaded)")
    print(f"wrote {args.output}: {len(converted)} tensors, {head}")


if __name__ == "__main__":
    try:
        main(parse_args())
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
