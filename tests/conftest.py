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
