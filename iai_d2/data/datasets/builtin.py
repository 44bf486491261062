"""Built-in dataset names, registered at import under ``$DETECTRON2_DATASETS`` (default "datasets").

Every path convention used by the Detectron2 / mmdet VIS code bases is accepted; candidates are
resolved when a dataset is loaded (first existing one wins), see datasets/README.md:

  ytvis_20{19,21}_{train,val,test}: ytvis_20xx/{train,valid,test}.json or
      ytvis_20xx/annotations/instances_{train,val,test}_sub.json;
      images ytvis_20xx/{train,valid,test}/JPEGImages or ytvis_20xx/{train,val,test}/JPEGImages
  ovis_{train,val,test}: ovis/annotations/annotations_{split}.json, ovis/annotations/{split}.json
      or ovis/annotations_{split}.json (split in train, valid, test); images ovis/{split}
  *_train_sub / *_val_sub: train_sub.json / val_sub.json made by ``split_ytvis_json`` (images of
      the train split)
  synthetic_vis_{train,val}: synthetic_vis/{train,valid}.json,
      images synthetic_vis/{train,valid}/JPEGImages
"""
import os

from detectron2.data import DatasetCatalog, MetadataCatalog

from .ytvis import (
    OVIS_CATEGORIES,
    SYNTHETIC_CATEGORIES,
    YTVIS_2019_CATEGORIES,
    YTVIS_2021_CATEGORIES,
    register_ytvis_instances,
    ytvis_category_metadata,
)

__all__ = ["builtin_ytvis_splits", "register_all_ytvis"]

_OFFICIAL_SPLIT = {"train": "train", "val": "valid", "test": "test"}


def _ytvis_paths(root, dirname, split):
    official = _OFFICIAL_SPLIT[split]
    d = os.path.join(root, dirname)
    jsons = [
        os.path.join(d, f"{official}.json"),
        os.path.join(d, "annotations", f"instances_{split}_sub.json"),
    ]
    images = [os.path.join(d, official, "JPEGImages")]
    if split != official:
        images.append(os.path.join(d, split, "JPEGImages"))
    return jsons, images


def _ovis_paths(root, split):
    official = _OFFICIAL_SPLIT[split]
    d = os.path.join(root, "ovis")
    jsons = [
        os.path.join(d, "annotations", f"annotations_{official}.json"),
        os.path.join(d, "annotations", f"{official}.json"),
        os.path.join(d, f"annotations_{official}.json"),
    ]
    return jsons, [os.path.join(d, official)]


def builtin_ytvis_splits(root):
    """
    Returns:
        dict: dataset name -> (categories, json candidates, image root candidates) under ``root``.
    """
    splits = {}
    for year, categories in (("2019", YTVIS_2019_CATEGORIES), ("2021", YTVIS_2021_CATEGORIES)):
        dirname = f"ytvis_{year}"
        for split in ("train", "val", "test"):
            splits[f"{dirname}_{split}"] = (categories, *_ytvis_paths(root, dirname, split))
        train_images = [os.path.join(root, dirname, "train", "JPEGImages")]
        for sub in ("train_sub", "val_sub"):
            splits[f"{dirname}_{sub}"] = (
                categories, [os.path.join(root, dirname, f"{sub}.json")], train_images)
    for split in ("train", "val", "test"):
        splits[f"ovis_{split}"] = (OVIS_CATEGORIES, *_ovis_paths(root, split))
    for sub in ("train_sub", "val_sub"):
        splits[f"ovis_{sub}"] = (
            OVIS_CATEGORIES,
            [os.path.join(root, "ovis", "annotations", f"{sub}.json")],
            [os.path.join(root, "ovis", "train")],
        )
    for split in ("train", "val"):
        official = _OFFICIAL_SPLIT[split]
        d = os.path.join(root, "synthetic_vis")
        splits[f"synthetic_vis_{split}"] = (
            SYNTHETIC_CATEGORIES,
            [os.path.join(d, f"{official}.json")],
            [os.path.join(d, official, "JPEGImages")],
        )
    return splits


def register_all_ytvis(root):
    """(Re-)register every built-in VIS dataset name with paths under ``root``."""
    for name, (categories, jsons, images) in builtin_ytvis_splits(root).items():
        if name in DatasetCatalog:
            DatasetCatalog.remove(name)
        if name in MetadataCatalog:
            MetadataCatalog.remove(name)
        register_ytvis_instances(name, ytvis_category_metadata(categories), jsons, images)


_root = os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))
register_all_ytvis(_root)
