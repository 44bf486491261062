import os

import pytest

os.environ.setdefault("DETECTRON2_DATASETS", os.path.join(os.path.dirname(__file__), "..", "datasets"))


@pytest.fixture(autouse=True)
def _limit_threads():
    """Two cores in CI: keep torch from oversubscribing when tests run model code."""
    import torch

    torch.set_num_threads(2)
    yield
