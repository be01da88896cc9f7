"""Every config a user launches runs as that user would run it, at toy size: its own parallelism on the processes
it expects (2 gloo processes for a torchrun recipe), wandb (offline), the probe, activation checkpointing, the
dispersion loss and baselines, tasks_interval, and released weights (a local tiny transformers directory for the
mid-training recipes), in the dtype a GPU would pick (bf16, autocast on CPU); 3 steps, evals at 0 and 3, a
checkpoint, then (once per checkpoint kind and origin: ckpt.pt or ckpt_dcp, from scratch or released weights)
a resume to step 4.

Which files: a launchable config names itself first in the train.py command of its header comment (e.g.
`torchrun ... train.py config/train_qwen3_8b.py`); a fragment (config/dispersion.py) is read after another config
(`train.py config/train_shakespeare.py config/dispersion.py`). A new config is covered without editing this file.
Configs whose features are the same (differing in shapes, rates and names, which the toy size replaces anyway)
share one launch, with the union of their loss add-ons (dispersion, noise, forgetting): one launch per feature set.
"""
import glob
import json
import math
import os
import re

import pytest
import torch

from configurator import configure, script_defaults
from conftest import ROOT, train
from test_benchmarks import FIXTURES

CONFIGS = sorted(glob.glob(os.path.join(ROOT, "config", "*.py")))


def header_commands(path):
    """The train.py command lines of a config's leading comment (continuation lines joined)."""
    lines = []
    for line in open(path):
        if not line.startswith("#"):
            break
        lines.append(line[1:].strip())
    text = "\n".join(lines).replace("\\\n", " ")
    return [c for c in text.splitlines() if re.search(r"\btrain\.py\b", c)]


def launch(path):
    """(launchable, number of processes): launchable when the header's first train.py command reads this file
    first; 2 processes when torchrun runs it."""
    name = os.path.basename(path)
    commands = header_commands(path)
    assert commands, (f"config/{name} has no train.py command in its header comment: a launchable config shows "
                      f"how to run it (`python train.py config/{name}`), a fragment how to add it to another")
    first = re.search(r"train\.py\s+(config/\S+\.py)", commands[0])
    assert first, f"config/{name}: its first train.py command names no config file: {commands[0]}"
    if first[1] != f"config/{name}":
        assert f"config/{name}" in commands[0], f"config/{name}'s command does not name it: {commands[0]}"
        return False, 0
    return True, 2 if "torchrun" in commands[0] else 1


ADDONS = ("dispersion", "noise_alpha", "forget_every")  # loss add-ons: a shared launch takes their union
DISPERSION_KEYS = ("dispersion", "dispersion_coeff", "dispersion_loc", "dispersion_tau", "dispersion_clamp",
                   "dispersion_max_tokens")


def features(c, nproc):
    """What a config switches on, apart from sizes, rates and names (the toy run replaces those)."""
    init = c["init_from"]
    return (nproc, c["parallelism"], c["model_type"], c["tie_embeddings"] if c["model_type"] == "qwen3" else True,
            "scratch" if init == "scratch" else released_kind(init), c["lora_rank"] > 0,
            c["wandb_log"], c["probe_windows"] > 0, c["activation_checkpointing"], c["tasks_interval"] > 0,
            c["dropout"] > 0, c["always_save_checkpoint"], c["save_best"], c["dtype"], c["device"], c["compile"])


def released_kind(init_from):
    """Which tiny stand-in runs a config's released weights: the architecture its init_from names."""
    name = init_from.lower()
    return "qwen3" if "qwen" in name else "llama" if "smollm" in name or "llama" in name else "gpt2"


def recipes():
    defaults, kinds = script_defaults(os.path.join(ROOT, "train.py"))
    groups = {}
    for path in CONFIGS:
        ok, nproc = launch(path)
        if not ok:
            continue
        c = configure(defaults, [path], kinds)
        groups.setdefault(features(c, nproc), []).append((os.path.basename(path), c, nproc))
    return list(groups.values())


GROUPS = recipes()
# a resume per launch kind (one process / torchrun), checkpoint kind (single file / sharded) and origin (scratch: the shape is checked; released
# weights: it is not), in the first group of each: every launch costs ~10-30 s on 2 cores
RESUMED = {}
for _group in GROUPS:
    _, _c, _n = _group[0]
    RESUMED.setdefault((_n, _c["parallelism"], _c["init_from"] == "scratch"), _group[0][0])


def test_every_launchable_config_is_in_a_recipe_run():
    launched = {name for group in GROUPS for name, _, _ in group}
    fragments = {os.path.basename(p) for p in CONFIGS} - launched
    assert fragments == {"dispersion.py"}, fragments  # read after another config, never on its own
    assert {"train_qwen3_8b.py", "midtrain_gpt2_forget.py", "research.py", "train_shakespeare.py"} <= launched
    assert any(nproc == 2 and c["parallelism"] == "fsdp" for g in GROUPS for _, c, nproc in g)


@pytest.fixture(scope="module")
def text_data(tmp_path_factory):
    from data.tokens import write_tokens
    d = tmp_path_factory.mktemp("recipe_data")
    text = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer. " * 30
    write_tokens({"train": [text] * 4, "val": [text] * 2}, str(d / "gpt2"))
    return d


def released(kind, root):
    """A local tiny transformers directory for released weights, and the data tokenised for it."""
    import transformers  # a requirement (requirements.txt): an import, never a skip
    torch.manual_seed(0)
    hf = root / f"hf_{kind}"
    if kind == "gpt2":
        transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=50257, n_positions=64, n_embd=32,
                                                             n_layer=2, n_head=2)).save_pretrained(hf)
        return hf, root / "gpt2"
    shape = dict(vocab_size=50304, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, head_dim=16, max_position_embeddings=64, tie_word_embeddings=True)
    if kind == "llama":  # SmolLM2's architecture
        transformers.LlamaForCausalLM(transformers.LlamaConfig(**shape)).save_pretrained(hf)
    else:
        transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**shape)).save_pretrained(hf)
    data = root / f"for_{kind}"  # the same tokens, declared as tokenised by that model (data/prepare.py --tokenizer)
    data.mkdir(exist_ok=True)
    for split in ("train", "val"):
        (data / f"{split}.bin").write_bytes((root / "gpt2" / f"{split}.bin").read_bytes())
    meta = json.loads((root / "gpt2" / "meta.json").read_text())
    (data / "meta.json").write_text(json.dumps(dict(meta, tokenizer=str(hf))))
    return hf, data


@pytest.mark.slow
@pytest.mark.parametrize("group", GROUPS, ids=["+".join(n[:-3] for n, _, _ in g) for g in GROUPS])
def test_recipe_runs_checkpoints_and_resumes(tmp_path, monkeypatch, text_data, group):
    name, c, nproc = group[0]
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    toy = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--n_inner=64", "--block_size=32", "--batch_size=2",
           "--gradient_accumulation_steps=2", "--eval_interval=3", "--eval_iters=3", "--log_interval=1",
           "--warmup_iters=1", "--lr_decay_iters=4"]
    if c["model_type"] == "qwen3":
        toy += ["--n_kv_head=1", "--head_dim=16"]
    if c["dtype"] == "auto" and nproc > 1:  # what a GPU with bf16 picks (train.py: float32 on this CPU)
        toy.append("--dtype=bfloat16")
    for _, m, _ in group:  # the union of the group's loss add-ons, each at its config's settings
        if m["dispersion"]:
            toy += [f"--{k}={m[k]!r}" for k in DISPERSION_KEYS] + ["--dispersion_max_tokens=8"]
        if m["noise_alpha"] > 0:
            toy.append(f"--noise_alpha={m['noise_alpha']}")
        if m["forget_every"] > 0:
            toy.append("--forget_every=2")  # the interval scaled to 3 steps, so it fires
    if c["tasks_interval"] > 0:
        toy += ["--tasks_interval=3", f"--tasks_data={FIXTURES}", "--tasks_limit=1", "--tasks=piqa,arc_easy"]
    data = text_data / "gpt2"
    if c["init_from"] != "scratch":
        hf, data = released(released_kind(c["init_from"]), text_data)
        toy.append(f"--init_from={hf}")
    out = tmp_path / "out"
    config = [os.path.join(ROOT, "config", name)]
    train(out, data, *toy, "--max_iters=3", nproc=nproc, configs=config)
    log = [json.loads(line) for line in open(out / "log.jsonl")]
    start = log[0]
    assert start["event"] == "start" and start["world_size"] == nproc
    for key in ("parallelism", "wandb_log", "activation_checkpointing"):
        assert start["config"][key] == c[key], key
    assert start["model_args"]["model_type"] == (c["model_type"] if c["init_from"] == "scratch" else
                                                 "gpt" if released_kind(c["init_from"]) == "gpt2" else "qwen3")
    if c["init_from"] != "scratch" and released_kind(c["init_from"]) == "llama":
        assert start["model_args"]["hf_type"] == "llama" and not start["model_args"]["qk_norm"]
    if c["lora_rank"] > 0:
        assert start["model_args"]["lora"]["rank"] == c["lora_rank"]
    evals = [r for r in log if "val_loss" in r]
    assert [r["iter"] for r in evals] == [0, 3]
    if c["probe_windows"] > 0:
        assert all(len(r["mean_cos"]) == 3 and -1 <= r["last_mean"] <= 1 for r in evals)
    if c["tasks_interval"] > 0:
        assert all("acc_piqa" in r for r in evals)
    steps = [r for r in log if "loss" in r]
    assert [r["iter"] for r in steps] == [1, 2, 3]
    if any(m["dispersion"] for _, m, _ in group):
        assert all(math.isfinite(r["disp"]) for r in steps)
    if c["wandb_log"]:
        assert glob.glob(str(tmp_path / "wandb" / "offline-run-*")), "no offline wandb run was written"
    ckpt = out / ("ckpt_dcp" if c["parallelism"] == "fsdp" else "ckpt.pt")
    assert ckpt.exists()
    if RESUMED[(nproc, c["parallelism"], c["init_from"] == "scratch")] != name:
        return
    # the resume: one more step from that checkpoint (wandb off: its service costs a launch ~20 s on 2 busy cores)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    resume = [a for a in toy if not a.startswith("--init_from")]
    train(out, data, *resume, "--max_iters=4", "--init_from=resume", nproc=nproc, configs=config)
    log = [json.loads(line) for line in open(out / "log.jsonl")]
    assert [r["iter"] for r in log if "loss" in r][-1] == 4 and log[-1]["iter"] == 4 and "val_loss" in log[-1]
