"""train.py end to end on a tiny model: learning, exact resume, DDP equivalence, checkpoints, logs, errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from model import GPT, GPTConfig, load_checkpoint, save_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


def train(out_dir, data_dir, *args, nproc=1, check=True):
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), f"--dataset={data_dir}", f"--out_dir={out_dir}", *TINY, *args]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *cmd[1:]]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"train.py failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def records(out_dir):
    with open(os.path.join(out_dir, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def step_losses(out_dir):
    return {r["iter"]: r["loss"] for r in records(out_dir) if "loss" in r}


def test_loss_falls_on_a_repeated_batch():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=64, n_layer=2, n_head=2, n_embd=32))
    opt = model.configure_optimizers(0.0, 3e-3, (0.9, 0.95), 'cpu')
    x = torch.randint(0, 64, (4, 17))
    losses = []
    for _ in range(40):
        _, loss = model(x[:, :-1], x[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 4.0 and losses[-1] < 0.5 * losses[0]


def test_training_lowers_val_loss_and_logs(tmp_path, data_dir):
    out = tmp_path / "out"
    train(out, data_dir, "--max_iters=30", "--eval_interval=15", "--learning_rate=1e-2", "--batch_size=8",
          "--lr_decay_iters=0")
    recs = records(out)
    start = recs[0]
    assert start["event"] == "start" and start["config"]["max_iters"] == 30 and start["config"]["tokenizer"] == "gpt2"
    evals = [r for r in recs if "val_loss" in r]
    assert [r["iter"] for r in evals] == [0, 15, 30]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 1.0
    steps = [r for r in recs if "loss" in r]
    assert [r["iter"] for r in steps] == list(range(1, 31))
    assert all({"loss", "ce", "lr", "tokens_per_s", "ms_per_iter"} <= r.keys() for r in steps)
    ckpt = torch.load(out / "ckpt.pt", weights_only=False)
    assert ckpt["iter_num"] == 30 and ckpt["model_args"]["model_type"] == "gpt"
    assert not any(k.startswith("_orig_mod.") for k in ckpt["model"])
    assert set(ckpt) >= {"model", "optimizer", "model_args", "iter_num", "best_val_loss", "config", "rng"}
    assert os.path.exists(out / "best.pt")
    model, _ = load_checkpoint(str(out / "ckpt.pt"))
    assert model.config.vocab_size == VOCAB and model.config.n_layer == 2


@pytest.mark.slow
@pytest.mark.parametrize("extra", [
    ["--dropout=0.1", "--gradient_accumulation_steps=2"],
    ["--model_type=qwen3", "--n_kv_head=1", "--head_dim=8", "--dispersion=angular_spread",
     "--dispersion_max_tokens=8", "--gradient_accumulation_steps=2"],
], ids=["gpt-dropout", "qwen3-dispersion"])
def test_exact_resume(tmp_path, data_dir, extra):
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(straight, data_dir, "--max_iters=8", "--eval_interval=4", *extra)
    train(split, data_dir, "--max_iters=4", "--eval_interval=4", *extra)
    train(split, data_dir, "--max_iters=8", "--eval_interval=4", "--init_from=resume", *extra)
    a, b = step_losses(straight), step_losses(split)
    assert sorted(b) == list(range(1, 9))
    for it in range(5, 9):
        assert abs(a[it] - b[it]) < 1e-6, (it, a[it], b[it])
    wa = torch.load(straight / "ckpt.pt", weights_only=False)["model"]
    wb = torch.load(split / "ckpt.pt", weights_only=False)["model"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-6, rtol=0)


@pytest.mark.slow
def test_two_process_ddp_equals_gradient_accumulation(tmp_path, data_dir):
    one, two = tmp_path / "one", tmp_path / "two"
    args = ["--max_iters=4", "--eval_interval=4", "--gradient_accumulation_steps=2", "--dispersion=angular_spread",
            "--dispersion_max_tokens=8"]
    train(one, data_dir, *args)
    train(two, data_dir, *args, nproc=2)
    wa = torch.load(one / "ckpt.pt", weights_only=False)["model"]
    wb = torch.load(two / "ckpt.pt", weights_only=False)["model"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=0)
    # and the val loss is averaged over the same fixed windows
    va = [r["val_loss"] for r in records(one) if "val_loss" in r]
    vb = [r["val_loss"] for r in records(two) if "val_loss" in r]
    assert np.allclose(va, vb, atol=1e-5)


def test_init_from_local_hf_gpt2(tmp_path, data_dir):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=2)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path / "hf")
    out = tmp_path / "out"
    train(out, data_dir, f"--init_from={tmp_path / 'hf'}", "--max_iters=2", "--eval_interval=2",
          "--n_layer=12", "--n_embd=768")  # the released weights decide the shape, not these keys
    ckpt = torch.load(out / "ckpt.pt", weights_only=False)
    assert ckpt["model_args"]["n_layer"] == 2 and ckpt["model_args"]["block_size"] == 32  # cropped to block_size
    assert ckpt["model_args"]["bias"] is True and ckpt["init_origin"] == str(tmp_path / "hf")


def test_atomic_save_keeps_previous_file(tmp_path, monkeypatch):
    path = str(tmp_path / "ckpt.pt")
    save_checkpoint({"iter_num": 1}, path)

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # killed midway

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"iter_num": 2}, path)
    monkeypatch.undo()
    assert torch.load(path)["iter_num"] == 1
    assert os.listdir(tmp_path) == ["ckpt.pt"]


def one_sentence(p):
    assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr[-2000:]
    return p.stderr.strip().splitlines()[-1]


def test_errors_are_sentences(tmp_path, data_dir):
    assert "run `python data/nope/prepare.py`" in one_sentence(train(tmp_path / "a", "nope", check=False))
    assert "no checkpoint" in one_sentence(train(tmp_path / "b", data_dir, "--init_from=resume", check=False))
    assert "lower block_size" in one_sentence(train(tmp_path / "c", data_dir, "--block_size=5000", check=False))
    assert "Unknown config key 'n_layers'" in one_sentence(train(tmp_path / "d", data_dir, "--n_layers=3", check=False))
    out = tmp_path / "e"
    train(out, data_dir, "--max_iters=2", "--eval_interval=2")
    msg = one_sentence(train(out, data_dir, "--init_from=resume", "--n_embd=64", "--max_iters=4", check=False))
    assert "different model from this config" in msg and "n_embd" in msg
    p = train(out, data_dir, "--gradient_accumulation_steps=3", nproc=2, check=False)  # torchrun adds its own report
    assert p.returncode != 0 and "must be a multiple of the number of processes (2)." in p.stderr


def test_non_finite_loss_stops_and_keeps_checkpoint(tmp_path, data_dir):
    out = tmp_path / "out"
    train(out, data_dir, "--max_iters=2", "--eval_interval=2")
    before = torch.load(out / "ckpt.pt", weights_only=False)["model"]
    p = train(out, data_dir, "--init_from=resume", "--max_iters=20", "--eval_interval=1", "--learning_rate=1e30",
              "--warmup_iters=0", "--grad_clip=0.0", check=False)
    msg = one_sentence(p)
    assert "Non-finite" in msg and "at iter" in msg
    after = torch.load(out / "ckpt.pt", weights_only=False)["model"]
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.slow
def test_dispersion_in_training_lowers_condensation(tmp_path, data_dir):
    """The three losses are logged; the dispersion run ends with a lower last-layer mean cosine than CE only."""
    common = ["--max_iters=30", "--eval_interval=30", "--learning_rate=1e-2", "--lr_decay_iters=0", "--probe_windows=8"]
    train(tmp_path / "ce", data_dir, *common)
    train(tmp_path / "disp", data_dir, *common, "--dispersion=angular_spread", "--dispersion_coeff=1.0")
    steps = [r for r in records(tmp_path / "disp") if "loss" in r]
    assert all({"loss", "ce", "disp"} <= r.keys() for r in steps)
    assert all(abs(r["loss"] - (r["ce"] + 1.0 * r["disp"])) < 1e-4 for r in steps)
    assert "disp" not in [r for r in records(tmp_path / "ce") if "loss" in r][0]
    last = {run: [r for r in records(tmp_path / run) if "last_mean" in r][-1]["last_mean"] for run in ("ce", "disp")}
    assert last["disp"] < last["ce"] - 0.05, last
    cfg = torch.load(tmp_path / "disp" / "ckpt.pt", weights_only=False)["config"]
    assert cfg["dispersion"] == "angular_spread" and cfg["dispersion_coeff"] == 1.0 and cfg["dispersion_loc"] == "all"


def test_baselines_run_in_the_trainer(tmp_path, data_dir):
    out = tmp_path / "out"
    train(out, data_dir, "--max_iters=4", "--eval_interval=4", "--noise_alpha=5.0", "--forget_every=2")
    ckpt = torch.load(out / "ckpt.pt", weights_only=False)
    assert ckpt["config"]["noise_alpha"] == 5.0 and ckpt["config"]["forget_every"] == 2
    # forgetting at step 4 re-drew the embedding from N(0, 0.02) and zeroed its Adam moments
    wte = ckpt["model"]["transformer.wte.weight"]
    assert abs(wte.std().item() - 0.02) < 0.003
    state = ckpt["optimizer"]["state"]
    moments = [s["exp_avg"] for s in state.values() if s["exp_avg"].shape == wte.shape]
    assert moments and all(m.abs().max() == 0 for m in moments)


def test_init_from_local_hf_qwen3_needs_its_tokenizer(tmp_path, data_dir):
    """Mid-training released Qwen3 weights: the data must be tokenised with the model's tokenizer."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.Qwen3Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                   max_position_embeddings=64, tie_word_embeddings=True)
    hf_dir = str(tmp_path / "qwen")
    transformers.Qwen3ForCausalLM(cfg).save_pretrained(hf_dir)
    msg = one_sentence(train(tmp_path / "a", data_dir, f"--init_from={hf_dir}", "--max_iters=2", check=False))
    assert "prepare the data with --tokenizer" in msg
    # the same tokens, declared as tokenised by the model's tokenizer (what data/prepare.py --tokenizer DIR writes)
    qdata = tmp_path / "qdata"
    qdata.mkdir()
    for split in ("train", "val"):
        (qdata / f"{split}.bin").write_bytes(open(os.path.join(data_dir, f"{split}.bin"), "rb").read())
    (qdata / "meta.json").write_text(json.dumps({"dtype": "uint16", "tokenizer": hf_dir, "vocab_size": VOCAB,
                                                 "eot_token": 255}))
    out = tmp_path / "b"
    train(out, str(qdata), f"--init_from={hf_dir}", "--max_iters=2", "--eval_interval=2")
    ckpt = torch.load(out / "ckpt.pt", weights_only=False)
    assert ckpt["model_args"]["model_type"] == "qwen3" and ckpt["config"]["model_type"] == "qwen3"
    assert ckpt["model_args"]["n_kv_head"] == 2 and ckpt["config"]["tokenizer"] == hf_dir
