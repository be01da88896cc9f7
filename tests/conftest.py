"""Test setup: offline hubs, the repo root on sys.path, and the `slow` marker.

Run all tests:   python -m pytest -q
Skip slow ones:  python -m pytest -q -m "not slow"
"""
import os
import sys

# The hubs (HuggingFace, tiktoken's blob store) are unreachable on CI: make every hub path fail fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds (still part of the CI run)")


# -----------------------------------------------------------------------------
# planted hidden states for the anisotropy measures (tests/test_anisotropy.py)

import pytest  # noqa: E402
import torch  # noqa: E402


class PlantedStates(torch.nn.Module):
    """A stand-in model whose hidden_states(x) are fixed tensors: token 0 of each row of x names the sequence,
    layers[l] is [N, S, C]; hidden_states returns [layers[l][x[:, 0]] for every l]."""

    def __init__(self, layers):
        super().__init__()
        self.layers = layers
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def hidden_states(self, x):
        return [h[x[:, 0]] for h in self.layers]


def _planted(kind, N=12, S=16, C=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(N, S, C, generator=g, dtype=torch.float64)
    if kind == "rogue":  # every token: isotropic noise plus two huge, nearly constant dimensions
        h = noise.clone()
        h[..., 0] += 40.0
        h[..., 1] -= 30.0
    else:  # a true cone: each sequence crowds around its own random direction (directions isotropic over sequences)
        v = torch.randn(N, 1, C, generator=g, dtype=torch.float64)
        h = 4.0 * v / v.norm(dim=-1, keepdim=True) * C ** 0.5 + noise
    return h.float()


@pytest.fixture
def planted():
    """kind ('rogue' or 'cone') -> (model with layer 0 = isotropic noise and layer 1 = that kind, ids [N, S])."""
    def make(kind, N=12, S=16, C=32):
        g = torch.Generator().manual_seed(1)
        layers = [torch.randn(N, S, C, generator=g), _planted(kind, N, S, C)]
        x = torch.arange(N)[:, None].expand(N, S).contiguous()
        return PlantedStates(layers), x
    return make
