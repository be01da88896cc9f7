"""bench.py's GPU command (python bench.py --what=gpu) on the CPU at toy size, so that its first GPU run does not
crash: every row of its table (eager here: compiled training, its recompile count and FSDP's per-block compile are
tests/test_compile.py's, through train.py, which bench.py shares); --what=nanogpt's one-sentence error without a
checkout; --what=mmlu (ours vs lm-eval's hf model on MMLU rows) at toy size on the fixture subjects.

Run: python -m pytest -q tests/test_bench.py
"""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bench(*args):
    return subprocess.run([sys.executable, "bench.py", *args], capture_output=True, text=True, cwd=ROOT, timeout=900,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


@pytest.mark.slow
def test_the_gpu_command_runs_on_the_cpu_at_toy_size():
    p = bench("--what=gpu", "--device=cpu", "--tiny=True", "--compile=False", "--warmup=2", "--steps=2", "--rounds=1")
    assert p.returncode == 0, p.stderr[-4000:]
    rows = [line for line in p.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    table = "\n".join(rows)
    assert len(rows) == 5, p.stdout
    assert re.search(r"CE \| [\d,]+ tok/s, [\d.]+ ms/step, MFU n/a, peak memory n/a, n/a host syncs.*, \d+ recompiles",
                     table), table
    assert "CE + dispersion |" in table and re.search(r"overhead \(step time\) \| [+-][\d.]+%", table), table
    assert re.search(r"task scoring, \d+ requests.*lm-eval hf \(batch 1\) [\d.]+ s, ours \(batched\) [\d.]+ s", table)
    assert re.search(r"FSDP step, 1 process, .*, bf16 \| \d+ ms/step, .*memory predicted [\d.]+ GB "
                     r"/ measured n/a, 0 recompiles", table), table


def test_nanogpt_comparison_needs_a_checkout(tmp_path):
    p = bench("--what=nanogpt", f"--nanogpt={tmp_path}")
    assert p.returncode == 1 and "is not a nanoGPT checkout" in p.stderr and "Traceback" not in p.stderr


def test_the_mmlu_comparison_runs_and_the_accuracies_agree():
    """--what=mmlu at toy size on the fixture subjects: one table row per shot count (bench.py itself stops when
    lm-eval's and our accuracies differ); their dev splits hold 2 documents, so 5 shots end in one sentence."""
    fixtures = os.path.join(ROOT, "tests", "fixtures", "tasks")
    p = bench("--what=mmlu", "--lmeval_shape=tiny", "--mmlu_docs=2", f"--tasks_data={fixtures}")
    rows = [line for line in p.stdout.splitlines() if re.match(r"\| [015] \| \d+ \|", line)]
    assert len(rows) == 2 and all(re.search(r"\| [\d.]+x \| [\d.]+ \| [\d.]+ MiB \|$", r) for r in rows), p.stdout
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert "mmlu_anatomy: 5 few-shot examples were asked for but its dev split has 2 documents." in p.stderr
