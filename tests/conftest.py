"""Test setup: offline hubs, the repo root on sys.path, the `slow` marker, the fixtures and helpers several test files
share: a tiny train.py run (data_dir, TINY, train, records, step_losses; `from conftest import train`), planted
hidden states (anisotropy).

Run all tests:   python -m pytest -q
Skip slow ones:  python -m pytest -q -m "not slow"
"""
import contextlib
import gc
import io
import json
import os
import runpy
import subprocess
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


import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

# -----------------------------------------------------------------------------
# a tiny train.py run: its data, its settings, train.py in this process (or under torchrun), its log

VOCAB = 256


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A small corpus with structure to learn: token t is mostly followed by (t * 7 + 3) % 256."""
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for split, n in (("train", 20000), ("val", 4000)):
        x = np.empty(n, dtype=np.uint16)
        x[0] = 1
        for i in range(1, n):
            x[i] = (x[i - 1] * 7 + 3) % VOCAB if rng.random() < 0.8 else rng.integers(VOCAB)
        x.tofile(d / f"{split}.bin")
    (d / "meta.json").write_text(json.dumps({"dtype": "uint16", "tokenizer": "gpt2", "vocab_size": VOCAB,
                                             "eot_token": 255}))
    return str(d)


TINY = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=4", "--device=cpu",
        "--compile=False", "--gradient_accumulation_steps=1", "--log_interval=1", "--eval_iters=2", "--warmup_iters=2", "--lr_decay_iters=8", "--learning_rate=3e-3"]


def train(out_dir, data_dir, *args, nproc=1, check=True, configs=()):
    """Run train.py with the tiny settings -> CompletedProcess (returncode, stdout, stderr). One process runs inside
    this one (runpy: torch is imported once, seconds instead of tens of seconds on a busy machine), its
    SystemExit message as stderr; several processes run under torchrun. configs: config files, read first."""
    argv = [*configs, f"--dataset={data_dir}", f"--out_dir={out_dir}", *TINY, *args]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "train.py",
               *argv]
        p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), cwd=ROOT,
                           timeout=300)
    else:
        saved_argv, out, code, err = sys.argv, io.StringIO(), 0, ""
        sys.argv = ["train.py", *argv]
        try:
            with contextlib.redirect_stdout(out):
                runpy.run_path(os.path.join(ROOT, "train.py"), run_name="__main__")
        except SystemExit as e:
            if e.code not in (None, 0):
                code, err = 1, str(e.code)
        finally:
            sys.argv = saved_argv
            gc.collect()  # closes the run's out_dir lock file, as the end of a process would
        p = subprocess.CompletedProcess(argv, code, out.getvalue(), err)
    if check and p.returncode != 0:
        raise AssertionError(f"train.py failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def records(out_dir):
    with open(os.path.join(out_dir, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def step_losses(out_dir):
    return {r["iter"]: r["loss"] for r in records(out_dir) if "loss" in r}


# -----------------------------------------------------------------------------
# planted hidden states for the anisotropy measures (tests/test_anisotropy.py)


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
