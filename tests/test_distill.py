"""Knowledge distillation: disperse.distill_loss against a hand computation, torch's kl_div and the soft-target
gradient; train.py with a frozen teacher (weights unchanged, no gradients, not optimised), the term logged and
added, 0 when the teacher is the student, its checks as one sentence; DDP and FSDP equal one process (slow).

Run: python -m pytest -q tests/test_distill.py
"""
import contextlib
import gc
import io
import math
import os
import runpy
import shutil
import sys

import pytest
import torch
import torch.nn.functional as F

import disperse
from checkpoint import read_checkpoint, save_checkpoint
from conftest import ROOT, TINY, records, step_losses, train


# -----------------------------------------------------------------------------
# the term

def test_distill_loss_by_hand_with_a_padded_vocabulary():
    # position 1: teacher logits (2 ln 2, 0, 0) at T = 2 -> p = (1/2, 1/4, 1/4); student (0, 0, 0) -> q = 1/3 each.
    # KL = 1/2 ln(3/2) + 2 * 1/4 ln(3/4) = 1/2 ln(9/8) = 0.0588915; T^2 KL = 0.2355661.
    # position 2: the same logits on both sides -> 0. A 4th, padded column (logit 100 on one side only) is sliced off.
    teacher = torch.tensor([[[2 * math.log(2), 0.0, 0.0, 100.0], [1.0, 2.0, 3.0, 0.0]]])
    student = torch.tensor([[[0.0, 0.0, 0.0, -100.0], [1.0, 2.0, 3.0, 100.0]]])
    by_hand = 4 * 0.5 * math.log(9 / 8)
    assert disperse.distill_loss(student, teacher, 2.0, 3).item() == pytest.approx(by_hand / 2, abs=1e-6)
    # the CE's ignore_index: a target of -1 leaves its position out of the mean
    assert disperse.distill_loss(student, teacher, 2.0, 3, targets=torch.tensor([[5, -1]])).item() == \
        pytest.approx(by_hand, abs=1e-6)
    # without the slice the padded column would dominate
    assert disperse.distill_loss(student, teacher, 2.0, 4).item() > 10


def test_distill_loss_equals_kl_div_and_its_gradient_is_the_soft_target_one():
    torch.manual_seed(0)
    T, V = 3.0, 9
    s = torch.randn(2, 5, 11, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 5, 11, dtype=torch.float64)
    loss = disperse.distill_loss(s, t, T, V)
    log_q, log_p = F.log_softmax(s[..., :V] / T, -1), F.log_softmax(t[..., :V] / T, -1)
    ref = F.kl_div(log_q.reshape(-1, V), log_p.reshape(-1, V), log_target=True, reduction='batchmean') * T ** 2
    assert loss.item() == pytest.approx(ref.item(), rel=1e-12)
    loss.backward()
    # d(T^2 mean KL)/ds_v = T (q_v - p_v) / (number of positions) on the real vocabulary, 0 on the padding
    want = T * (log_q.exp() - log_p.exp()).detach() / 10
    torch.testing.assert_close(s.grad[..., :V], want, rtol=1e-10, atol=1e-12)
    assert (s.grad[..., V:] == 0).all()


def test_distill_loss_is_zero_with_zero_gradient_when_the_teacher_is_the_student():
    torch.manual_seed(1)
    t = torch.randn(3, 4, 16) * 5
    s = t.clone().requires_grad_(True)
    loss = disperse.distill_loss(s, t, 2.0, 16)
    loss.backward()
    assert abs(loss.item()) < 1e-6 and s.grad.abs().max().item() < 1e-6  # float32 rounding; a real gradient ~1e-2
    with pytest.raises(ValueError, match="temperature must be > 0"):
        disperse.distill_loss(s, t, 0.0, 16)


# -----------------------------------------------------------------------------
# train.py

def train_globals(out_dir, data_dir, *args):
    """Run train.py in this process and return its module globals (the trained model, the teacher, the optimizer)."""
    saved, out = sys.argv, io.StringIO()
    sys.argv = ["train.py", f"--dataset={data_dir}", f"--out_dir={out_dir}", *TINY, *args]
    try:
        with contextlib.redirect_stdout(out):
            g = runpy.run_path(os.path.join(ROOT, "train.py"), run_name="__main__")
    finally:
        sys.argv = saved
        gc.collect()
    return g, out.getvalue()


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("teacher")
    train(out, data_dir, "--max_iters=6", "--eval_interval=6", "--n_layer=3", "--n_embd=48", "--probe_windows=0")
    return str(out / "ckpt.pt")


def test_the_teacher_is_frozen_and_the_term_is_logged_and_added(tmp_path, data_dir, teacher_ckpt):
    before = read_checkpoint(teacher_ckpt)["model"]
    g, stdout = train_globals(tmp_path / "student", data_dir, "--max_iters=4", "--eval_interval=4",
                              f"--teacher={teacher_ckpt}", "--distill_coeff=0.5", "--distill_temperature=2.0",
                              "--dispersion=angular_spread", "--dispersion_max_tokens=8", "--dispersion_coeff=0.3")
    tm = g["teacher_model"]
    assert not tm.training and not any(p.requires_grad or p.grad is not None for p in tm.parameters())
    optimised = {id(p) for group in g["optimizer"].param_groups for p in group["params"]}
    assert not optimised & {id(p) for p in tm.parameters()}
    for k, v in tm.state_dict().items():  # four training steps later, the teacher's weights are the file's
        torch.testing.assert_close(v, before[k], atol=0, rtol=0, msg=k)
    assert tm.config.n_layer == 3 and g["raw_model"].config.n_layer == 2
    steps = [r for r in records(tmp_path / "student") if "loss" in r]
    assert [r["iter"] for r in steps] == [1, 2, 3, 4]
    for r in steps:  # loss = CE + 0.3 * dispersion + 0.5 * distillation
        assert r["distill"] > 0.01
        assert r["loss"] == pytest.approx(r["ce"] + 0.3 * r["disp"] + 0.5 * r["distill"], abs=1e-5)
    assert "distill" in stdout and "distilling from" in stdout


def test_distilling_from_itself_gives_zero(tmp_path, data_dir, teacher_ckpt):
    # the student resumes from the teacher's own checkpoint: at its first step the two models are the same
    student = tmp_path / "student"
    shutil.copytree(os.path.dirname(teacher_ckpt), student)
    train(student, data_dir, "--max_iters=7", "--eval_interval=6", "--n_layer=3", "--n_embd=48",
          "--probe_windows=0", "--init_from=resume", f"--teacher={teacher_ckpt}", "--distill_coeff=1.0")
    first = next(r for r in records(student) if r.get("iter") == 7 and "loss" in r)
    assert abs(first["distill"]) < 1e-5 and first["loss"] == pytest.approx(first["ce"], abs=1e-5)


def test_teacher_checks_are_one_sentence(tmp_path, data_dir, teacher_ckpt):
    def stop(*args):
        p = train(tmp_path / "s", data_dir, "--max_iters=1", *args, check=False)
        assert p.returncode == 1 and "\n" not in p.stderr.strip() and "Traceback" not in p.stderr, p.stderr
        return p.stderr
    assert "needs a teacher" in stop("--distill_coeff=1.0")
    assert "distill_coeff is 0" in stop(f"--teacher={teacher_ckpt}")
    assert "No teacher checkpoint" in stop(f"--teacher={tmp_path}/none/ckpt.pt", "--distill_coeff=1.0")
    other = dict(read_checkpoint(teacher_ckpt))
    other["model_args"] = dict(other["model_args"], tokenizer="Qwen/Qwen3-0.6B")
    save_checkpoint(other, str(tmp_path / "qwen_tokens.pt"))
    assert "uses the tokenizer 'Qwen/Qwen3-0.6B'" in stop(f"--teacher={tmp_path}/qwen_tokens.pt", "--distill_coeff=1.0")
    assert "context of 32" in stop(f"--teacher={teacher_ckpt}", "--distill_coeff=1.0", "--block_size=64")
    # a run folder stands for its ckpt.pt
    train(tmp_path / "d", data_dir, "--max_iters=1", "--eval_interval=1", "--probe_windows=0",
          f"--teacher={os.path.dirname(teacher_ckpt)}", "--distill_coeff=1.0")
    assert next(r for r in records(tmp_path / "d") if "distill" in r)["distill"] > 0


@pytest.mark.slow
def test_distillation_under_ddp_and_fsdp_equals_one_process(tmp_path, data_dir, teacher_ckpt):
    from test_fsdp import assert_same_weights, consolidated
    args = ["--max_iters=3", "--eval_interval=3", "--gradient_accumulation_steps=2", "--probe_windows=0",
            f"--teacher={teacher_ckpt}", "--distill_coeff=1.0", "--dispersion=angular_spread",
            "--dispersion_max_tokens=8"]
    one, ddp, sharded = tmp_path / "one", tmp_path / "ddp", tmp_path / "fsdp"
    train(one, data_dir, *args)
    train(ddp, data_dir, *args, nproc=2)
    train(sharded, data_dir, *args, "--parallelism=fsdp", nproc=2)
    la = step_losses(one)
    for other in (ddp, sharded):
        lb = step_losses(other)
        assert sorted(lb) == [1, 2, 3] and all(abs(la[i] - lb[i]) < 1e-5 for i in la), (la, lb)
        da = [r["distill"] for r in records(one) if "distill" in r]
        db = [r["distill"] for r in records(other) if "distill" in r]
        assert len(da) == 3 and all(abs(a - b) < 1e-5 for a, b in zip(da, db)), (da, db)
    w1 = torch.load(one / "ckpt.pt", weights_only=False)["model"]
    assert_same_weights(w1, torch.load(ddp / "ckpt.pt", weights_only=False)["model"])
    assert_same_weights(w1, consolidated(sharded)["model"])


def test_a_transformers_directory_can_teach(tmp_path, data_dir):
    import transformers  # a requirement: no skip
    cfg = transformers.GPT2Config(vocab_size=256, n_positions=64, n_embd=32, n_layer=2, n_head=2)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path / "hf")
    out = tmp_path / "student"
    train(out, data_dir, "--max_iters=2", "--eval_interval=2", "--probe_windows=0", f"--teacher={tmp_path / 'hf'}",
          "--distill_coeff=1.0")
    assert all(r["distill"] > 0 for r in records(out) if "loss" in r)


def test_the_teachers_memory_is_in_the_estimate():
    import fsdp
    args = (1e9, 24, 2048, 50304, 4096, 8, True, False, True)  # a 1B student, FSDP on 8 GPUs, no AC, accumulating
    # state 16 x 1e9 / 8 = 2,000,000,000 bytes + the accumulated fp32 gradient 4 x 1e9 = 4,000,000,000; 4096 tokens:
    # activations 34 x 2048 x 24 x 4096 = 6,845,104,128, logits 6 x 50304 x 4096 = 1,236,271,104 -> 14,081,375,232
    assert fsdp.memory_gb(*args) == pytest.approx(14.081375232)
    # a 1B-parameter teacher: 4 bytes each (fp32 copy, no gradient or moments) = 4,000,000,000 + 10 V bytes per token
    # of logits, 10 x 50304 x 4096 = 2,060,451,840 -> 6,060,451,840 more
    assert fsdp.memory_gb(*args, teacher_params=1e9) == pytest.approx(20.141827072)
