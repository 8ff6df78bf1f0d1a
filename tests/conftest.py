import os

# A missing hub file must fail in seconds, not after a minute of retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import matplotlib  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

matplotlib.use("Agg")

# A tiny timm ViT (64-dim, 2 heads, 2 blocks, 16 px patches) keeps model tests at CPU speed.
TINY = dict(backbone="test_vit", backbone_kwargs=dict(depth=2))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
