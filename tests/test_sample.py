"""sample.py: text from a checkpoint, checked against greedy decoding by hand and the tokenizer."""
import os
import subprocess
import sys

import pytest
import torch

import sample
from data.tokenizer import get_tokenizer
from model import GPT, GPTConfig, model_args_of

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEP = "---------------\n"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny GPT with the padded GPT-2 vocabulary (50304 rows, 47 of them unused), saved as train.py does."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=24, vocab_size=50304, n_layer=2, n_head=2, n_embd=16))
    path = str(tmp_path_factory.mktemp("ckpt") / "ckpt.pt")
    torch.save({'model': model.state_dict(), 'model_args': model_args_of(model), 'config': {'tokenizer': 'gpt2'}},
               path)
    return path, model.eval()


def run(capsys, *argv):
    sample.main(list(argv))
    return capsys.readouterr().out


def test_greedy_samples_equal_decoding_by_hand(ckpt, capsys):
    path, model = ckpt
    out = run(capsys, "--ckpt", path, "--start", "ROMEO:", "--num_samples", "2", "--max_new_tokens", "30",
              "--temperature", "0")
    tok = get_tokenizer("gpt2")
    idx = torch.tensor([tok.encode("ROMEO:")])
    with torch.no_grad():  # argmax over the tokenizer's 50257 ids; the context cropped to the last 24 tokens
        for _ in range(30):
            logits, _ = model(idx[:, -24:])
            idx = torch.cat([idx, logits[:, -1, :50257].argmax(-1, keepdim=True)], dim=1)
    want = tok.decode(idx[0].tolist())
    assert want.startswith("ROMEO:")
    assert out == (want + "\n" + SEP) * 2


def test_seed_repeats_and_changes_samples(ckpt, capsys):
    path, _ = ckpt
    args = ["--ckpt", path, "--start", "ROMEO:", "--num_samples", "3", "--max_new_tokens", "20"]
    a, b, c = run(capsys, *args, "--seed", "1"), run(capsys, *args, "--seed", "1"), run(capsys, *args, "--seed", "2")
    samples = a.split(SEP)[:-1]
    assert a == b and a != c and len(samples) == 3 and len(set(samples)) == 3
    assert all(s.startswith("ROMEO:") for s in samples)


def test_start_from_file_and_errors(ckpt, capsys, tmp_path):
    path, _ = ckpt
    (tmp_path / "prompt.txt").write_text("JULIET:\nO Romeo")
    out = run(capsys, "--ckpt", path, "--start", f"FILE:{tmp_path / 'prompt.txt'}", "--num_samples", "1",
              "--max_new_tokens", "3")
    assert out.startswith("JULIET:\nO Romeo")
    for argv, msg in [(["--ckpt", str(tmp_path / "nope.pt")], "No checkpoint"),
                      (["--ckpt", path, "--start", "FILE:nope.txt"], "there is no file"),
                      (["--ckpt", path, "--temperature", "-1"], "must be >= 0")]:
        with pytest.raises(SystemExit, match=msg):
            sample.main(argv)


def test_init_from_local_hf_dir(tmp_path, capsys):
    """--init_from DIR: released-style weights through transformers, with GPT-2's tokenizer."""
    import transformers
    cfg = transformers.GPT2Config(vocab_size=50257, n_positions=32, n_embd=16, n_layer=1, n_head=2)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path / "hf")
    out = run(capsys, "--init_from", str(tmp_path / "hf"), "--start", "Hello", "--num_samples", "2",
              "--max_new_tokens", "5")
    assert out.count(SEP) == 2 and out.startswith("Hello")


@pytest.mark.slow  # a subprocess: 10-30 s on 2 busy cores
def test_runs_as_a_script(ckpt):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "sample.py", "--ckpt", ckpt[0], "--start", "Hello", "--num_samples", "2",
                        "--max_new_tokens", "5"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.count(SEP) == 2 and p.stdout.startswith("Hello")
