"""Instance As Identity (IAI) on Detectron2: importing the package registers the built-in
YouTube-VIS / OVIS / synthetic datasets and the IAI backbone, ROI heads and meta-architecture."""
from . import data, modeling  # noqa: F401  (registration side effects)
from .config import add_iai_config

__all__ = ["add_iai_config"]
