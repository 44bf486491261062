"""Instance As Identity (IAI) on Detectron2.

``from iai_d2 import add_iai_config`` (the usual first line) registers the built-in YouTube-VIS /
OVIS / synthetic datasets and the IAI backbone, ROI heads and meta-architecture. The import is lazy
so that ``iai_d2.evaluation`` (offline scoring) and ``iai_d2.utils`` load without torch/Detectron2.
"""

__all__ = ["add_iai_config"]


def __getattr__(name):
    if name == "add_iai_config":
        from . import data, modeling  # noqa: F401  (registration side effects)
        from .config import add_iai_config

        return add_iai_config
    raise AttributeError(f"module 'iai_d2' has no attribute {name!r}")
