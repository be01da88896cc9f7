"""Every process enters every collective: under FSDP each forward is one, so the probe, the heatmap, the eval loss
and task scoring run on every process with the same number of forwards, whatever the shares' sizes; the embedding
baselines work on a sharded model; FSDP's bf16 keeps the residual stream in fp32 as DDP's autocast does. Each is
checked against the same computation on one process with the whole model. CPU, gloo, 2 processes."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import disperse
import condensation as cond
import fsdp
from model import build_model
from tasks import engine as E
from test_benchmarks import FIXTURES
from test_fsdp import _full, spawn


class Chars:
    """Characters as token ids, folded into the tiny models' 300-token vocabulary."""
    eot_token = 0

    def encode(self, text):
        return [ord(c) % 300 for c in text]


def _tiny(model_type='qwen3'):
    torch.manual_seed(0)
    extra = dict(n_kv_head=1, head_dim=8, tie_embeddings=True) if model_type == 'qwen3' else {}
    return build_model(dict(model_type=model_type, vocab_size=300, block_size=64, n_layer=2, n_head=2, n_embd=16,
                            **extra))


def _collectives_worker(rank):
    whole = _tiny()  # every process builds the same whole model: the single-process truth
    with fsdp.build_device('fsdp', rank, 'scratch'):
        model = _tiny()
    model = fsdp.shard(model, 'cpu', 'float32')
    x = torch.randint(0, 300, (3, 12), generator=torch.Generator().manual_seed(1))
    # the probe: 3 windows over 2 processes (2 + 1), and 1 window (rank 1 measures nothing but must still forward)
    for n in (3, 1):
        want = cond.condensation(whole, x[:n], batch_size=n, bins=8)
        got = cond.condensation_probe(model, x[:n], bins=8)
        assert got["mean_cos"] == pytest.approx(want["mean_cos"], abs=1e-6)
        assert got["spearman"] == pytest.approx(want["spearman"], abs=1e-9, nan_ok=True)
        for a, b in zip(got["hist"], want["hist"]):
            assert a == pytest.approx(b, abs=1e-6)
        scalar = cond.condensation_probe(model, x[:n])
        assert scalar["mean_cos"] == pytest.approx(want["mean_cos"], abs=1e-6) and "hist" not in scalar
    # task scoring: 1 document over 2 processes, and 3 with a tiny forward size so the shares need unequal numbers
    # of forwards; the scores equal one process scoring everything with the whole model
    tok = Chars()
    for limit, batch_tokens in ((1, None), (3, 8)):
        got = E.run_benchmarks(model, tok, "piqa,arc_easy", limit, data_dir=FIXTURES, batch_tokens=batch_tokens,
                               progress=False, log=None)
        rank_world = E._dist
        E._dist = lambda: (0, 1)  # this process alone, the whole model, every document
        try:
            want = E.run_benchmarks(whole, tok, "piqa,arc_easy", limit, data_dir=FIXTURES, batch_tokens=batch_tokens,
                                    progress=False, log=None)
        finally:
            E._dist = rank_world
        assert got["tasks"] == want["tasks"]
    # active forgetting: the same full table re-drawn on every process, each keeping its own rows
    opt = model.configure_optimizers(0.1, 1e-2, (0.9, 0.95), 'cpu')
    opt_whole = whole.configure_optimizers(0.1, 1e-2, (0.9, 0.95), 'cpu')
    disperse.forget_embeddings(model, opt, torch.Generator().manual_seed(7))
    disperse.forget_embeddings(whole, opt_whole, torch.Generator().manual_seed(7))
    full = _full(model)
    torch.testing.assert_close(full['transformer.wte.weight'], whole.transformer.wte.weight, atol=0, rtol=0)
    assert model.lm_head.weight is model.transformer.wte.weight  # still tied
    # the noise baseline's hook on the sharded model: training-mode forwards differ, eval ones do not
    handle = disperse.add_embedding_noise(model, 5.0)
    model.eval()
    clean = model.hidden_states(x)[0]
    model.train()
    noisy = model.hidden_states(x)[0]
    m = 5.0 / (12 * 16) ** 0.5
    assert 0 < (noisy - clean).abs().max() <= m + 1e-6
    handle.remove()


@pytest.mark.slow
def test_probe_tasks_and_baselines_run_on_every_process_of_a_sharded_model():
    spawn(_collectives_worker)


def _precision_worker(rank):
    whole = _tiny('gpt')
    with fsdp.build_device('fsdp', rank, 'scratch'):
        model = _tiny('gpt')
    model = fsdp.shard(model, 'cpu', 'bfloat16')
    x = torch.randint(0, 300, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.autocast('cpu', torch.bfloat16):  # DDP's precision: fp32 weights under autocast
        want = whole.hidden_states(x)
        got = model.hidden_states(x)
    assert [h.dtype for h in want] == [torch.float32] * 3  # the residual stream stays fp32 under autocast
    assert [h.dtype for h in got] == [torch.float32] * 3  # and so under FSDP's bf16 blocks
    torch.testing.assert_close(got[0], want[0], atol=0, rtol=0)  # the embedding output: fp32 weights, no rounding
    for g, w in zip(got[1:], want[1:]):  # the blocks: the same bf16 matmuls (weights rounded the same way)
        torch.testing.assert_close(g, w, atol=2e-2, rtol=2e-2)


@pytest.mark.slow
def test_fsdp_bf16_keeps_the_residual_stream_and_hidden_states_in_fp32_as_ddp():
    spawn(_precision_worker)


class LargestTensor(TorchDispatchMode):
    """The largest number of elements of any tensor an op returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else [out]):
            if torch.is_tensor(t):
                self.largest = max(self.largest, t.numel())
        return out


def test_the_probe_never_holds_the_stack_of_cosine_matrices():
    """At the 8B recipe's T = 4096 the [n+1, T, T] stack is 37 x 64 MB: the probe keeps one float per layer and
    holds one forward's matrices of one layer at a time. Here 9 hidden states of 4 windows of T = 64."""
    model = build_model(dict(model_type='gpt', vocab_size=64, block_size=64, n_layer=8, n_head=2, n_embd=16))
    x = torch.randint(0, 64, (4, 64))
    with LargestTensor() as seen:
        probe = cond.condensation_probe(model, x)
    assert seen.largest <= 4 * 64 * 64 < 9 * 64 * 64  # one layer's [B, T, T], never [n+1, T, T]
    assert probe["mean_cos"] == pytest.approx(cond.condensation(model, x, bins=0)["mean_cos"], abs=1e-6)


def test_memory_gb_counts_the_probe():
    """The 8B recipe's shape (7.36B parameters, 36 layers of 4096, vocabulary 50304) under FSDP on 64 GPUs with
    activation checkpointing and a short T = 64: the probe's forward (64 windows = 4096 tokens of 37 fp32 hidden
    states of 4096, plus [B, T, T] cosines) outweighs a micro-step of 64 tokens, and hides under one of 65,536.
    The bytes are worked out by hand from the counts fsdp.memory_gb documents."""
    shape = (7.36e9, 36, 4096, 50304)
    # state 16 x 7.36e9 / 64 = 1,840,000,000 bytes. 64 tokens: AC (2 x 36 + 34) x 4096 x 64 = 27,787,264 + logits
    # 6 x 50304 x 64 = 19,316,736 -> step 47,104,000; probe 4096 tokens x (4 x 37 x 4096 + 8 x 64 = 606,720 bytes)
    # = 2,485,125,120
    assert fsdp.memory_gb(*shape, 64, 64, True, True, False) == pytest.approx(1.887104)  # 1,840,000,000 + 47,104,000
    assert fsdp.memory_gb(*shape, 64, 64, True, True, False, seq_len=64) == pytest.approx(4.32512512)  # + 2,485,125,120
    # 65,536 = 1024 x 64 tokens: step 1024 x 47,104,000 = 48,234,496,000 > the probe's 2,485,125,120
    assert fsdp.memory_gb(*shape, 65536, 64, True, True, False, seq_len=64) == pytest.approx(50.074496)


@pytest.mark.slow
def test_a_sharded_resume_checks_the_shape_before_any_shard_is_read(tmp_path):
    """The resume checks of ckpt.pt hold for ckpt_dcp: a config of another shape is one sentence (here the
    checkpoint's metadata says 3 layers, the config 2)."""
    import json
    import subprocess
    import sys
    import numpy as np
    from conftest import ROOT, TINY
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "val"):
        np.arange(4000, dtype=np.uint16).__mod__(256).tofile(data / f"{split}.bin")
    (data / "meta.json").write_text(json.dumps({"dtype": "uint16", "tokenizer": "gpt2", "vocab_size": 256}))
    sharded = tmp_path / "out" / fsdp.CKPT
    sharded.mkdir(parents=True)
    model_args = dict(model_type='gpt', n_layer=3, n_head=2, n_embd=32, n_inner=0, dropout=0.0, bias=False,
                      vocab_size=256, block_size=32, tokenizer='gpt2')
    torch.save({'model_args': model_args, 'iter_num': 2, 'best_val_loss': 5.0, 'config': {}, 'rng': None,
                'init_origin': 'scratch'}, sharded / fsdp.EXTRA)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "train.py",
           f"--dataset={data}", f"--out_dir={tmp_path / 'out'}", *TINY, "--parallelism=fsdp", "--init_from=resume",
           "--max_iters=4"]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env=dict(__import__("os").environ, OMP_NUM_THREADS="1"))
    assert p.returncode != 0 and "is a different model from this config" in p.stderr, p.stderr[-2000:]
    assert "'n_layer': (3, 2)" in p.stderr
