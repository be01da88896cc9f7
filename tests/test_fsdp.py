"""fsdp.py: FSDP2 training equals DDP and one process, exact resume on 2 and 1 processes from sharded checkpoints,
atomic sharded saves, the tied embedding stays one parameter, released weights load into a sharded model from
rank 0 alone, activation checkpointing changes nothing but memory. CPU, gloo, 2 processes."""
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import fsdp
from conftest import ROOT, TINY, records, step_losses, train
from hf_convert import from_pretrained
from checkpoint import load_checkpoint
from model import GPT, GPTConfig, build_model


# -----------------------------------------------------------------------------
# activation checkpointing: one process, no sharding

def test_activation_checkpointing_same_loss_grads_and_hidden_states():
    import disperse
    torch.manual_seed(0)
    a = build_model(dict(model_type='qwen3', vocab_size=64, block_size=16, n_layer=2, n_head=4, n_kv_head=2,
                         n_embd=32, tie_embeddings=False))
    b = build_model(dict(a.config.__dict__, model_type='qwen3'))
    b.load_state_dict(a.state_dict())
    fsdp.wrap_blocks(b, activation_checkpointing=True, compile=False)
    x = torch.randint(0, 64, (2, 16))
    calls = []
    b.transformer.h[0].attn.register_forward_hook(lambda *_: calls.append(1))
    losses = []
    for m in (a, b):
        _, ce, hidden = m(x, x, return_hidden=True)
        loss = ce + 0.1 * disperse.disperse(hidden, variant='angular_spread', generator=torch.Generator().manual_seed(0))
        loss.backward()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=0, msg=name)
    assert len(calls) == 2  # the block really was recomputed in the backward (forward once + recompute once)


# -----------------------------------------------------------------------------
# train.py end to end: FSDP == DDP == one process; exact resume from sharded checkpoints

def consolidated(out, name=fsdp.CKPT):
    dst = os.path.join(out, name + '.pt')
    fsdp.consolidate(os.path.join(out, name), dst)
    return torch.load(dst, weights_only=False)


def assert_same_weights(wa, wb, atol=1e-5):
    assert set(wa) == set(wb)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=atol, rtol=0, msg=k)


MODELS = {'gpt-tied': [],
          'qwen3-gqa-untied': ["--model_type=qwen3", "--n_kv_head=1", "--head_dim=8", "--tie_embeddings=False"]}


@pytest.fixture(scope="module")
def text_data(tmp_path_factory):
    """GPT-2 tokens of English text (the task documents are encoded with the data's tokenizer)."""
    from data.tokens import write_tokens
    d = tmp_path_factory.mktemp("text")
    text = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer. " * 30
    write_tokens({"train": [text] * 4, "val": [text]}, str(d))
    return str(d)


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_fsdp_equals_ddp_and_one_process(tmp_path, data_dir, text_data, model):
    # uneven shares everywhere: 3 eval windows of each split, one per forward (2 + 1 per process: the second
    # process pads with one forward), 3 probe windows, active forgetting under FSDP; for Qwen3 also task scoring
    # of 1 document per task over 2 processes (GPT-2-tokenised text: the tasks are encoded with the data's
    # tokenizer; on that text GPT-2's AdamW steps amplify float rounding past atol=1e-5, even on main)
    from test_benchmarks import FIXTURES
    from test_rolling import fixture_texts  # and the rolling perplexity of 3 documents (uneven windows per process)
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in fixture_texts()))
    tasks = ["--tasks_interval=3", "--tasks=piqa,arc_easy", f"--tasks_data={FIXTURES}", "--tasks_limit=1",
             f"--perplexity_data={tmp_path / 'docs.jsonl'}", "--perplexity_limit=3"]
    data_dir = text_data if model.startswith('qwen3') else data_dir
    args = ["--max_iters=3", "--eval_interval=3", "--gradient_accumulation_steps=4", "--dispersion=angular_spread",
            "--dispersion_max_tokens=8", "--probe_windows=3", "--batch_size=1", "--eval_iters=3", "--forget_every=2",
            *(tasks if model.startswith('qwen3') else []), *MODELS[model]]
    one, ddp, sharded = tmp_path / "one", tmp_path / "ddp", tmp_path / "fsdp"
    train(one, data_dir, *args)
    ac = ["--activation_checkpointing=True"] if model.startswith('qwen3') else []  # and with AC under FSDP
    train(sharded, data_dir, *args, "--parallelism=fsdp", *ac, nproc=2)
    w1 = torch.load(one / "ckpt.pt", weights_only=False)
    ws = consolidated(sharded)
    assert_same_weights(w1["model"], ws["model"])
    if model == 'gpt-tied':  # DDP == one process for both models is test_train's; here FSDP == DDP directly once
        train(ddp, data_dir, *args, nproc=2)
        assert_same_weights(torch.load(ddp / "ckpt.pt", weights_only=False)["model"], ws["model"])
    for i in w1["optimizer"]["state"]:  # AdamW's moments too (same parameter order after consolidation)
        for k in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(w1["optimizer"]["state"][i][k], ws["optimizer"]["state"][i][k], atol=1e-6, rtol=0)
    assert ws["iter_num"] == 3 and len(ws["rng"]) == 2
    # the val loss and the condensation probe (hidden_states on the sharded model) agree too
    ev1 = [r for r in records(one) if "val_loss" in r][-1]
    evs = [r for r in records(sharded) if "val_loss" in r][-1]
    probe_keys = [k for k in ev1 if k not in ("iter", "train_loss", "val_loss", "lr") and isinstance(ev1[k], float)]
    assert {"last_mean", "spearman"} | ({"acc_piqa", "acc_arc_easy", "word_perplexity_docs", "bits_per_byte_docs"}
                                        if model.startswith('qwen3') else set()) <= set(probe_keys)
    # (relative beyond 1: a random model's word perplexity is in the tens of thousands)
    assert all(abs(ev1[k] - evs[k]) < 1e-4 * max(1.0, abs(ev1[k])) for k in ["val_loss", *probe_keys]), (ev1, evs)
    assert ev1["mean_cos"] == pytest.approx(evs["mean_cos"], abs=1e-4)
    # the consolidated file is what eval.py loads
    m, _ = load_checkpoint(str(sharded / (fsdp.CKPT + ".pt")))
    assert m.tied == (model == 'gpt-tied')


@pytest.mark.slow
def test_fsdp_exact_resume_on_the_same_and_fewer_processes(tmp_path, data_dir):
    args = ["--eval_interval=2", "--gradient_accumulation_steps=2", "--parallelism=fsdp", "--dispersion=angular_spread",
            "--dispersion_max_tokens=8", "--probe_windows=0"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(straight, data_dir, "--max_iters=4", *args, nproc=2)
    train(split, data_dir, "--max_iters=2", *args, nproc=2)
    fewer = tmp_path / "fewer"
    shutil.copytree(split, fewer, symlinks=True)
    train(split, data_dir, "--max_iters=4", "--init_from=resume", *args, nproc=2)
    a, b = step_losses(straight), step_losses(split)
    assert sorted(b) == [1, 2, 3, 4] and all(abs(a[i] - b[i]) < 1e-6 for i in (3, 4)), (a, b)
    ws = consolidated(straight)
    assert_same_weights(ws["model"], consolidated(split)["model"], atol=1e-6)
    # 2 -> 1 process: DCP reshards; the same global micro-batches, so the same weights
    p = train(fewer, data_dir, "--max_iters=4", "--init_from=resume", *args, check=False)  # FSDP needs torchrun
    assert p.returncode == 1 and "torchrun --nproc_per_node=1" in p.stderr
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
           os.path.join(ROOT, "train.py"), f"--dataset={data_dir}", f"--out_dir={fewer}", *TINY,
           "--max_iters=4", "--init_from=resume", *args]
    p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert p.returncode == 0 and "different number of processes" in p.stdout, p.stderr[-3000:]
    assert_same_weights(ws["model"], consolidated(fewer)["model"])


# -----------------------------------------------------------------------------
# two processes in this test: atomic saves, the tie, released weights

def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(rank, world, port, fn, args):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        fn(rank, *args)
    finally:
        dist.destroy_process_group()


def spawn(fn, *args, world=2):
    mp.spawn(_run, args=(world, _free_port(), fn, args), nprocs=world)


def _tiny_gpt():
    torch.manual_seed(0)
    return GPT(GPTConfig(block_size=16, vocab_size=64, n_layer=2, n_head=2, n_embd=16, bias=False))


def _step(model, opt, seed):
    x = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(seed))
    _, loss = model(x, x)
    loss.backward()
    opt.step()
    opt.zero_grad()


def _full(model):
    return {k: v.full_tensor().clone() for k, v in model.state_dict().items()}


def _atomic_worker(rank, path):
    with fsdp.build_device('fsdp', rank, 'scratch'):
        model = _tiny_gpt()
    model = fsdp.shard(model, 'cpu', 'float32')
    assert model.lm_head.weight is model.transformer.wte.weight  # tied after sharding
    opt = model.configure_optimizers(0.1, 1e-2, (0.9, 0.95), 'cpu')
    _step(model, opt, 0)
    fsdp.save({'iter_num': 1}, model, opt, path)
    saved = _full(model)
    _step(model, opt, 1)
    real_save = fsdp.dcp.save

    def crash_after_writing(*a, **k):  # the shards are on disk, the checkpoint is not published yet
        real_save(*a, **k)
        raise RuntimeError("killed mid-save")

    fsdp.dcp.save = crash_after_writing
    with pytest.raises(RuntimeError, match="killed mid-save"):
        fsdp.save({'iter_num': 2}, model, opt, path)
    fsdp.dcp.save = real_save
    dist.barrier()
    # resume into a fresh sharded model that never saw rank 0's weights: the first checkpoint, still tied
    with torch.device('meta'):
        fresh = _tiny_gpt()
    fresh = fsdp.shard(fresh, 'cpu', 'float32', from_rank0=False)
    opt2 = fresh.configure_optimizers(0.1, 1e-2, (0.9, 0.95), 'cpu')
    fsdp.load(path, fresh, opt2)
    assert fsdp.read_meta(path)['iter_num'] == 1
    assert fresh.lm_head.weight is fresh.transformer.wte.weight  # tied after resume
    for k, v in _full(fresh).items():
        torch.testing.assert_close(v, saved[k], atol=0, rtol=0, msg=k)
    # and a later save succeeds into the slot the crash left behind
    fsdp.save({'iter_num': 2}, fresh, opt2, path)
    assert fsdp.read_meta(path)['iter_num'] == 2


@pytest.mark.slow
def test_sharded_save_is_atomic_and_keeps_the_tie(tmp_path):
    spawn(_atomic_worker, str(tmp_path / "ckpt_dcp"))


def _pretrained_worker(rank, hf_dir):
    import hf_convert
    truth = from_pretrained(hf_dir)  # the single-process loader: the reference
    if rank != 0:  # only rank 0 may read the released weights
        hf_convert.from_pretrained = lambda *a, **k: (_ for _ in ()).throw(AssertionError("rank 1 read the weights"))
    m = fsdp.from_pretrained(hf_dir, 0.0, rank)
    assert (m.transformer.wte.weight.device.type == 'meta') == (rank != 0)
    m = fsdp.shard(m, 'cpu', 'float32')
    assert m.tied == truth.tied and m.config.tokenizer == truth.config.tokenizer
    for k, v in _full(m).items():
        torch.testing.assert_close(v, truth.state_dict()[k], atol=0, rtol=0, msg=k)
    x = torch.randint(0, 64, (2, 8))
    torch.testing.assert_close(m(x)[0], truth(x)[0], atol=1e-5, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gpt2", "qwen3"])
def test_released_weights_load_into_a_sharded_model_from_rank0_only(tmp_path, kind):
    import transformers
    torch.manual_seed(0)
    if kind == "gpt2":
        hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=64, n_positions=32, n_embd=16,
                                                                  n_layer=2, n_head=2))
    else:
        hf = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(
            vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, max_position_embeddings=32, tie_word_embeddings=False))
    hf.save_pretrained(tmp_path / "hf")
    spawn(_pretrained_worker, str(tmp_path / "hf"))


# -----------------------------------------------------------------------------
# the pre-training sweep's configs: the authors' lr and batch, Chinchilla's 20 tokens per parameter

@pytest.mark.parametrize("size", ["1.7b", "4b", "8b"])
def test_sweep_configs(size):
    """What each sweep config's comment claims, recomputed from the code: N from the model it builds, the
    Chinchilla step count (20 N tokens, to one step), 5% warmup in [100, 4000], min_lr 0.1 x lr and the per-GPU
    memory from fsdp.memory_gb. A change of the model's parameter count or of the memory estimate that leaves a
    comment wrong fails here, as does a config edited without its comment."""
    import re
    from configurator import configure, script_defaults
    defaults, kinds = script_defaults(os.path.join(ROOT, "train.py"))
    path = os.path.join(ROOT, "config", f"train_qwen3_{size}.py")
    text = re.sub(r"\n#\s*", " ", open(path).read())  # the comment as one line
    claim = lambda pattern: float(re.search(pattern, text, re.S)[1].replace(",", ""))
    for variant in ("", "_dispersion"):
        c = configure(defaults, [path.replace(".py", f"{variant}.py")], kinds)
        with torch.device("meta"):
            m = build_model({k: c[k] for k in ("n_layer", "n_head", "n_kv_head", "head_dim", "n_embd",
                                               "n_inner", "rope_theta", "tie_embeddings", "block_size")}
                            | {"vocab_size": 50304, "model_type": "qwen3"})
        n = m.num_params(non_embedding=False)
        assert round(n / 1e9, 2) == claim(r"N = ([\d.]+)B parameters")
        seqs = c["batch_size"] * c["gradient_accumulation_steps"]
        assert seqs == claim(r"(\d+) sequences of 4096") and c["block_size"] == 4096
        assert c["max_iters"] == claim(r"= ([\d,]+) steps; warmup") == c["lr_decay_iters"]
        assert abs(seqs * 4096 * c["max_iters"] - 20 * n) < seqs * 4096  # 20 N tokens, to one step
        warmup = min(max(round(0.05 * c["max_iters"]), 100), 4000)
        assert c["warmup_iters"] == claim(r"warmup 5% = ([\d,]+) steps") == warmup
        assert c["learning_rate"] == claim(r"cosine to 0\.1 x ([\d.]+e-\d+)")
        assert c["min_lr"] == pytest.approx(0.1 * c["learning_rate"])
        gb = fsdp.memory_gb(n, c["n_layer"], c["n_embd"], 50304, c["batch_size"] * 4096, 8, True,
                            c["activation_checkpointing"], True)
        assert round(gb) == claim(r"Memory per GPU.*?: ~(\d+) GB") and gb < 80  # fits an 80 GB GPU
        assert c["parallelism"] == "fsdp" and c["dispersion"] == ("angular_spread" if variant else None)
