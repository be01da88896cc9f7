"""compile, bf16 and fp16 through train.py, on the CPU as a GPU recipe uses them (inductor, gloo, 2 processes):
compiled training gives eager's losses on one process, under DDP and under FSDP's per-block compile with
activation checkpointing; the recompilations are counted (TORCH_LOGS=recompiles) and do not grow with the number
of blocks, so no block falls back to eager at dynamo's recompile limit (8); bf16 autocast and FSDP's bf16
parameters train to fp32 checkpoints; fp16 + GradScaler skips a step whose gradient is not finite.
A cold compile costs 30-55 s per process on a small CPU: the compiled runs are few and tiny, and marked slow.

Run: python -m pytest -q tests/test_compile.py
"""
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, TINY, records, step_losses, train

# the dispersion loss (subsampled: 8 of 32 positions) and the probe on, 2 global micro-batches, one eval at the end
ARGS = ["--max_iters=3", "--eval_interval=3", "--gradient_accumulation_steps=2", "--dispersion=angular_spread",
        "--dispersion_max_tokens=8", "--probe_windows=2"]


def run_logged(out_dir, data_dir, *args, nproc):
    """train.py in a fresh process (torchrun for nproc > 1) with TORCH_LOGS=recompiles -> (stdout + stderr,
    recompilations per process). A fresh process: nothing compiled by another test is reused."""
    argv = [f"--dataset={data_dir}", f"--out_dir={out_dir}", *TINY, *args]
    launcher = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                    f"--nproc_per_node={nproc}"]
    p = subprocess.run([*launcher, "train.py", *argv], capture_output=True, text=True, cwd=ROOT, timeout=600,
                       env=dict(os.environ, OMP_NUM_THREADS="1", TORCH_LOGS="recompiles"))
    log = p.stdout + p.stderr
    assert p.returncode == 0, log[-4000:]
    assert "recompile_limit" not in log and "cache_size_limit" not in log, log[-4000:]  # dynamo gave up on a frame
    return log, log.count("Recompiling function") / nproc


def assert_same_run(a, b, tol):
    """Every logged step loss, the val loss and the probe's per-layer cosines of run b are run a's within tol."""
    la, lb = step_losses(a), step_losses(b)
    assert la.keys() == lb.keys() == {1, 2, 3} and all(abs(la[i] - lb[i]) < tol for i in la), (la, lb)
    ea, eb = ([r for r in records(d) if "val_loss" in r][-1] for d in (a, b))
    assert abs(ea["val_loss"] - eb["val_loss"]) < tol, (ea, eb)
    assert len(ea["mean_cos"]) == len(eb["mean_cos"]) and \
        all(abs(x - y) < tol for x, y in zip(ea["mean_cos"], eb["mean_cos"])), (ea["mean_cos"], eb["mean_cos"])


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [1, 2])
def test_compiled_training_equals_eager_one_process_and_ddp(tmp_path, data_dir, nproc):
    """compile=True (the whole model; DDP wraps the compiled model) with activation checkpointing under DDP.
    Allowed recompilations: the eval's no_grad (grad_mode guard); more would mean a guard that fails per step."""
    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    train(eager, data_dir, *ARGS)
    ac = ["--activation_checkpointing=True"] if nproc == 2 else []
    log, recompiles = run_logged(compiled, data_dir, *ARGS, "--compile=True", *ac, nproc=nproc)
    assert "compiling the model" in log
    assert recompiles <= 1, log[-4000:]
    assert_same_run(eager, compiled, 1e-4)


@pytest.mark.slow
def test_fsdp_per_block_compile_with_checkpointing_equals_eager_and_does_not_recompile_per_block(tmp_path, data_dir):
    """FSDP compiles each block (fsdp.wrap_blocks: torch.compile of partial(checkpoint, block.forward)). 9 blocks,
    more than dynamo's recompile limit of 8: if each block needed its own compilation of the shared code, blocks
    9.. would run eager (dynamo says so: checked in run_logged) and the count below would grow with the blocks.
    Allowed per process: the eval/probe batch of another size (2 windows, once) and the eval's no_grad."""
    nine = ["--n_layer=9"]
    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    train(eager, data_dir, *ARGS, *nine)
    log, recompiles = run_logged(compiled, data_dir, *ARGS, *nine, "--compile=True", "--parallelism=fsdp",
                                 "--activation_checkpointing=True", nproc=2)
    assert torch._dynamo.config.recompile_limit < 9
    assert recompiles <= 2, log[-4000:]
    assert_same_run(eager, compiled, 1e-4)


@pytest.mark.slow
def test_bf16_autocast_and_fsdp_bf16_parameters_train_to_fp32_checkpoints(tmp_path, data_dir):
    """dtype=bfloat16: autocast on one process, FSDP's MixedPrecisionPolicy (bf16 parameters in forward/backward,
    fp32 master weights and gradient reduction) on 2. Both track the fp32 run to bf16 accuracy (8 bits of mantissa:
    ~1e-2 on a loss of 5.5) and save fp32 weights."""
    import fsdp
    fp32, auto, sharded = tmp_path / "fp32", tmp_path / "bf16", tmp_path / "fsdp"
    train(fp32, data_dir, *ARGS)
    train(auto, data_dir, *ARGS, "--dtype=bfloat16")
    train(sharded, data_dir, *ARGS, "--dtype=bfloat16", "--parallelism=fsdp", nproc=2)
    for run in (auto, sharded):
        assert_same_run(fp32, run, 5e-2)
        assert [r for r in records(run) if r.get("event") == "start"][0]["dtype"] == "bfloat16"
    assert max(abs(step_losses(fp32)[i] - step_losses(auto)[i]) for i in (1, 2, 3)) > 0  # bf16 did run
    fsdp.consolidate(str(sharded / fsdp.CKPT), str(tmp_path / "consolidated.pt"))
    for path in (auto / "ckpt.pt", tmp_path / "consolidated.pt"):
        sd = torch.load(path, weights_only=True)["model"]
        assert {v.dtype for v in sd.values()} == {torch.float32}, path


def test_fp16_grad_scaler_skips_a_step_with_an_inf_gradient(tmp_path, data_dir, monkeypatch):
    """dtype=float16 (autocast + GradScaler, on the CPU as on a GPU without bf16): at step 2 one gradient entry is
    made inf before the unscale. GradScaler must skip that optimizer step (the weights stay as they were) and halve
    its scale; the steps around it update the weights and keep the scale."""
    seen = []  # per step: (scale before, weights before the step, weights after, scale after)
    real_unscale, real_step, real_update = (torch.amp.GradScaler.unscale_, torch.amp.GradScaler.step,
                                            torch.amp.GradScaler.update)

    def unscale_(self, optimizer):
        params = [p for g in optimizer.param_groups for p in g["params"]]
        if len(seen) == 1:  # the second step
            params[0].grad.view(-1)[0] = float("inf")
        seen.append([self.get_scale(), [p.detach().clone() for p in params]])
        return real_unscale(self, optimizer)

    def step(self, optimizer, *a, **k):
        out = real_step(self, optimizer, *a, **k)
        seen[-1].append([p.detach().clone() for g in optimizer.param_groups for p in g["params"]])
        return out

    def update(self, *a, **k):
        real_update(self, *a, **k)
        seen[-1].append(self.get_scale())

    monkeypatch.setattr(torch.amp.GradScaler, "unscale_", unscale_)
    monkeypatch.setattr(torch.amp.GradScaler, "step", step)
    monkeypatch.setattr(torch.amp.GradScaler, "update", update)
    train(tmp_path / "fp16", data_dir, *ARGS, "--dtype=float16")
    assert len(seen) == 3
    for i, (scale, before, after, new_scale) in enumerate(seen):
        same = all(torch.equal(a, b) for a, b in zip(before, after))
        if i == 1:
            assert same and new_scale == scale / 2, (scale, new_scale)
        else:
            assert not same and new_scale == scale, (i, scale, new_scale)
    assert seen[0][0] == 2.0 ** 16  # GradScaler's initial scale: the scaler was on
