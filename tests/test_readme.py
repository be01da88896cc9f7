"""README.md stays true: the install order, the quick-start command, every sample.py command line, the export."""
import os
import re
import shlex

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


def test_quick_start_is_offline_only_after_the_install():
    intro = section("quick start").split("```")[0]
    assert "offline" in intro and intro.index("install") < intro.index("offline")
    offline = section("offline and air-gapped machines")
    assert "The quick start needs nothing from the network" not in offline
    assert "After the install" in offline


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


def test_export_command_is_the_one_eval_py_runs():
    assert "python eval.py --export_hf out-shakespeare/ckpt.pt hf-shakespeare" in readme()
