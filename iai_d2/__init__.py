"""Instance As Identity (IAI) on Detectron2."""
from .config import add_iai_config

__all__ = ["add_iai_config"]
