"""iai_d2: Instance As Identity (online video instance segmentation) on Detectron2.

Detectron2 is not listed in install_requires because it is not published on PyPI under its own
name; `tools/install_deps.sh` (run by `make setup`) installs it, keeping an existing build.
"""
from setuptools import find_packages, setup

setup(
    name="iai_d2",
    version="0.1.0",
    description="Instance As Identity: online video instance segmentation on Detectron2",
    packages=find_packages(include=["iai_d2", "iai_d2.*", "projects", "projects.*"]),
    python_requires=">=3.10",
    install_requires=["numpy", "scipy", "pycocotools", "opencv-python-headless", "tqdm"],
)
