import os

import pytest
import torch

import mmvitscale  # noqa: F401  (shims first, as every entry point does)

torch.set_num_threads(min(2, os.cpu_count() or 1))

TINY = dict(embed_dims=32, num_layers=2, num_heads=2, mlp_ratio=2.0)


@pytest.fixture
def tiny_arch():
    return dict(TINY)
