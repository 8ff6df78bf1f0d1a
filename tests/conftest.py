import os

# A missing hub file must fail in seconds, not after a minute of retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import matplotlib  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

matplotlib.use("Agg")

# A tiny timm ViT (64-dim, 2 heads, 2 blocks, 16 px patches) keeps model tests at CPU speed.
TINY = dict(backbone="test_vit", backbone_kwargs=dict(depth=2))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The suite runs in a random order (pytest-randomly): name the seed, so that a failing order can be replayed."""
    seed = getattr(config.option, "randomly_seed", None)
    if seed is not None and getattr(config.option, "randomly_reorganize", True):
        terminalreporter.write_line(f"test order: random; replay it with make test PYTEST_ARGS=--randomly-seed={seed}")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
