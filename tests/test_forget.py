"""Active forgetting as the authors run it: the embedding's own schedule (disperse.forget_lr) against hand-computed
values, its own optimizer group, and in train.py the re-draw after the right steps only, its AdamW state zeroed,
the pad row zero and the logged embedding learning rate.

Run: python -m pytest -q tests/test_forget.py
"""

import pytest
import torch

import disperse
from conftest import records, train
from model import GPT, GPTConfig


def test_the_embedding_schedule_by_hand():
    # T = 300, K = 200: T // K = 1, index e = it + 1 (0 at the last step); W = int(300 * 0.08) = 24 warmup steps
    by_hand = {0: 1 / 24, 22: 23 / 24, 23: 1.0, 100: (300 - 101) / 276, 199: 100 / 276, 200: 99 / 276, 299: 0.0}
    for it, want in by_hand.items():
        assert disperse.forget_lr(it, 300, 200, 1e-3) == pytest.approx(1e-3 * want, rel=1e-12), it
    # T = 1000, K = 250: T // K = 4, e = 4 (it + 1) % 1000, W = 80: the curve restarts at every reset
    by_hand = {0: 4 / 80, 18: 76 / 80, 19: 1.0, 248: (1000 - 996) / 920, 249: 0.0, 250: 4 / 80, 499: 0.0}
    for it, want in by_hand.items():
        assert disperse.forget_lr(it, 1000, 250, 2.0) == pytest.approx(2.0 * want, rel=1e-12), it
    with pytest.raises(ValueError):
        disperse.forget_lr(0, 100, 200, 1.0)


def test_the_embedding_gets_a_group_of_its_own():
    model = GPT(GPTConfig(block_size=16, vocab_size=64, n_layer=1, n_head=2, n_embd=16))
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu')
    before = sum(len(g['params']) for g in opt.param_groups)
    disperse.embedding_group(opt, model)
    w = model.transformer.wte.weight
    emb = [g for g in opt.param_groups if g.get('name') == 'embedding']
    assert len(emb) == 1 and emb[0]['params'] == [w] and emb[0]['weight_decay'] == 0.1
    assert sum(len(g['params']) for g in opt.param_groups) == before
    assert not any(p is w for g in opt.param_groups if g is not emb[0] for p in g['params'])


def test_zero_row():
    w = torch.ones(5, 3)
    disperse.zero_row_(w, 3)
    assert w[3].abs().sum() == 0 and w.sum() == 12


def test_train_redraws_after_every_kth_step_only_with_its_schedule(tmp_path, data_dir, monkeypatch):
    seeds, real = [], disperse.forget_embeddings
    monkeypatch.setattr(disperse, 'forget_embeddings', lambda m, o, g=None: seeds.append(g.initial_seed()) or real(m, o, g))
    out = tmp_path / "out"
    train(out, data_dir, "--max_iters=4", "--eval_interval=4", "--forget_every=2", "--forget_lr=0.01",
          "--learning_rate=3e-3", "--seed=7")
    # after steps 2 and 4 (gs % K == 0), drawn with seed + iter_num (iter_num = gs - 1)
    assert seeds == [7 + 1, 7 + 3]
    # T = 4, K = 2: e = 2 (it + 1) % 4 -> 2, 0, 2, 0; W = int(0.32) = 0, so lr = peak (4 - e) / 4: 0.5, 1, 0.5, 1
    logged = [r["lr_embedding"] for r in records(out) if "lr_embedding" in r]
    assert logged == pytest.approx([0.005, 0.01, 0.005, 0.01], rel=1e-12)
    body = [r["lr"] for r in records(out) if "loss" in r]
    assert body != logged and body[-1] < 3e-3  # the body keeps its warmup and cosine
    ckpt = torch.load(out / "ckpt.pt", weights_only=False)
    wte = ckpt["model"]["transformer.wte.weight"]  # re-drawn after the last step: exactly the draw, pad row zero
    want = torch.randn(wte.shape, generator=torch.Generator().manual_seed(7 + 3)) * 0.02
    want[255] = 0  # the test data's end-of-text id (meta.json eot_token): GPT-2 has no pad, the authors use eos
    torch.testing.assert_close(wte, want, rtol=0, atol=0)
    state = ckpt["optimizer"]["state"]
    groups = ckpt["optimizer"]["param_groups"]
    emb = [g for g in groups if g.get("name") == "embedding"]
    assert len(emb) == 1 and len(emb[0]["params"]) == 1
    s = state[emb[0]["params"][0]]
    assert s["exp_avg"].shape == wte.shape and (s["exp_avg"] == 0).all() and (s["exp_avg_sq"] == 0).all()
    assert int(s["step"]) == 0
    others = [state[i] for g in groups if g is not emb[0] for i in g["params"]]
    assert all(int(x["step"]) == 4 and x["exp_avg"].abs().sum() > 0 for x in others)


def test_forget_every_beyond_the_run_is_refused(tmp_path, data_dir):
    p = train(tmp_path / "o", data_dir, "--max_iters=4", "--forget_every=5", check=False)
    assert p.returncode == 1 and "at most max_iters" in p.stderr


def _zero_row_worker(rank, out):
    import fsdp
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=63, n_layer=1, n_head=2, n_embd=16))  # 63 rows: shards 32 + 31
    full = model.transformer.wte.weight.detach().clone()
    model = fsdp.shard(model, 'cpu', 'float32')
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu')
    disperse.embedding_group(opt, model)
    w = disperse.token_embedding(model).weight
    assert [g.get('name') for g in opt.param_groups].count('embedding') == 1
    for row in (40, 3):  # one on each process's shard
        disperse.zero_row_(w, row)
    got = w.full_tensor()
    if rank == 0:
        torch.save({'got': got, 'full': full}, out)


@pytest.mark.slow
def test_zero_row_and_the_embedding_group_on_an_fsdp_sharded_table(tmp_path):
    from test_fsdp import spawn
    spawn(_zero_row_worker, str(tmp_path / "w.pt"))
    r = torch.load(tmp_path / "w.pt")
    want = r['full'].clone()
    want[[3, 40]] = 0
    torch.testing.assert_close(r['got'], want, rtol=0, atol=0)


def test_resuming_a_run_whose_optimizer_has_other_groups_is_one_sentence(tmp_path, data_dir):
    out = tmp_path / "out"
    train(out, data_dir, "--max_iters=2", "--eval_interval=2", "--probe_windows=0")  # two groups, no forgetting
    p = train(out, data_dir, "--max_iters=4", "--eval_interval=2", "--init_from=resume", "--forget_every=2", check=False)
    assert p.returncode == 1 and "does not fit this run's parameter groups" in p.stderr and "\n" not in p.stderr.strip()
