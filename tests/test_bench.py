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


def test_released_bench_times_the_same_step_on_both_models(tmp_path):
    """bench_released.py on a tiny random Llama: ours and transformers' model start from the same weights and take
    the same step (first-step losses equal, with and without the dispersion loss and LoRA), and the table has a
    row per (setting, threads)."""
    import torch
    import transformers
    import bench_released
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True)).save_pretrained(tmp_path)
    results, losses, counts = bench_released.timings(str(tmp_path), [1], 1, 2, 16)
    assert set(results) == {(s, 1) for s in bench_released.SETTINGS}
    for s in ('ce', 'ce+disp'):  # full fine-tuning: the same weights, batch and dispersion subsets
        assert abs(losses[(s, 1)]['ours'] - losses[(s, 1)]['hf']) < 1e-5, (s, losses)
    # LoRA: B starts at zero, so both models still equal their base (after the full fine-tuning steps above,
    # which moved each model by the same AdamW step from the same weights)
    assert abs(losses[('lora', 1)]['ours'] - losses[('lora', 1)]['hf']) < 1e-4, losses
    # rank 16 on fused q|k|v (32 -> 32 + 2 * 16 = 64 wide, 2 kv heads of 8) + o + gate|up + down, per layer:
    # ours 16 * ((32 + 64) + (32 + 32) + (32 + 128) + (64 + 32)) = 6,656 per layer; transformers one adapter per
    # projection: q 16 * 64, k 16 * 48, v 16 * 48, o 16 * 64, gate 16 * 96, up 16 * 96, down 16 * 96 = 8,192
    assert counts == {'ours': 2 * 6656, 'hf': 2 * 8192}


def test_released_bench_alternates_which_model_goes_first():
    """Every round runs each (setting, model) pair once; within a setting ours goes first in rounds 0 and 2,
    transformers in rounds 1 and 3, so a cost that the first step of a round pays is shared equally."""
    import bench_released
    rounds = [bench_released.round_order(['ce', 'ce+disp'], r) for r in range(4)]
    assert rounds[0] == [('ce', 'ours'), ('ce', 'hf'), ('ce+disp', 'ours'), ('ce+disp', 'hf')]
    assert rounds[1] == [('ce', 'hf'), ('ce', 'ours'), ('ce+disp', 'hf'), ('ce+disp', 'ours')]
    assert rounds[2] == rounds[0] and rounds[3] == rounds[1]
