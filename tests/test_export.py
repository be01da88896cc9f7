"""`python eval.py --export_hf CKPT DIR`: transformers loads the directory offline with our logits (to 1e-5), its
tokenizer encodes as ours, and --init_from DIR brings the same model back (also through train.py)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers

import eval as evaluate
from data.tokenizer import get_tokenizer
from hf_convert import from_pretrained
from model import GPT, GPTConfig, Qwen3, Qwen3Config, model_args_of

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?  It is the east."


def randomise(model):
    """Norm weights and biases away from (1, 0), so that a swapped or dropped one would show in the logits."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.2 * torch.randn_like(p))
    return model.eval()


MODELS = {  # all with GPT-2's vocabulary padded to 50304 rows, as train.py trains them
    'gpt': lambda: GPT(GPTConfig(block_size=32, vocab_size=50304, n_layer=2, n_head=4, n_embd=32)),
    'gpt_nobias_ninner': lambda: GPT(GPTConfig(block_size=32, vocab_size=50304, n_layer=2, n_head=4, n_embd=32,
                                               n_inner=40, bias=False)),
    # GQA (4 query heads over 2 K/V heads), head_dim 12 != 32 / 4, small theta so positions matter
    'qwen3_untied': lambda: Qwen3(Qwen3Config(block_size=32, vocab_size=50304, n_layer=2, n_head=4, n_kv_head=2,
                                              head_dim=12, n_embd=32, n_inner=48, rope_theta=100.0,
                                              tie_embeddings=False)),
    'qwen3_tied': lambda: Qwen3(Qwen3Config(block_size=32, vocab_size=50304, n_layer=2, n_head=4, n_kv_head=2,
                                            head_dim=8, n_embd=32, n_inner=48, tie_embeddings=True)),
}


def save_ckpt(model, path, tokenizer='gpt2'):
    torch.save({'model': model.state_dict(), 'model_args': dict(model_args_of(model), tokenizer=tokenizer)}, path)
    return str(path)


def export(tmp_path, name, tokenizer='gpt2'):
    torch.manual_seed(0)
    model = randomise(MODELS[name]())
    tmp_path.mkdir(exist_ok=True)
    out = str(tmp_path / "hf")
    evaluate.main(["--export_hf", save_ckpt(model, tmp_path / "ckpt.pt", tokenizer), out])
    return model, out


@pytest.mark.parametrize("name", sorted(MODELS))
def test_transformers_loads_the_export_with_equal_logits(tmp_path, name):
    model, out = export(tmp_path, name)
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(hf).__name__ == ("GPT2LMHeadModel" if name.startswith("gpt") else "Qwen3ForCausalLM")
    assert hf.config.vocab_size == 50304  # every row of the padded head: the logits are the checkpoint's
    tok = transformers.AutoTokenizer.from_pretrained(out)
    ids = tok(TEXT)["input_ids"]
    assert ids == get_tokenizer("gpt2").encode(TEXT) and tok.eos_token_id == 50256 == hf.config.eos_token_id
    idx = torch.tensor([ids[:32], ids[-32:]])
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, model(idx)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["gpt", "qwen3_untied"])
def test_init_from_the_export_round_trips(tmp_path, name):
    model, out = export(tmp_path, name)
    back = from_pretrained(out).eval()
    assert type(back) is type(model) and back.config.tokenizer == "gpt2"  # GPT-2's tokens, also for Qwen3
    idx = torch.randint(0, 50304, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(back(idx)[0], model(idx)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # a train.py subprocess
def test_train_py_continues_from_an_exported_qwen3(tmp_path):
    """A Qwen3 trained on GPT-2 tokens, exported, then mid-trained on GPT-2-token data with --init_from DIR."""
    _, out = export(tmp_path, "qwen3_untied")
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "val"):
        np.random.default_rng(0).integers(0, 50257, 4000).astype(np.uint16).tofile(data / f"{split}.bin")
    (data / "meta.json").write_text(json.dumps({"dtype": "uint16", "tokenizer": "gpt2", "vocab_size": 50257,
                                                "eot_token": 50256}))
    cmd = [sys.executable, "train.py", f"--dataset={data}", f"--out_dir={tmp_path / 'run'}", f"--init_from={out}",
           "--block_size=32", "--batch_size=2", "--gradient_accumulation_steps=1", "--max_iters=1",
           "--eval_interval=1", "--eval_iters=1", "--device=cpu", "--compile=False"]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"),
                       timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    ckpt = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=False)
    assert ckpt["model_args"]["model_type"] == "qwen3" and ckpt["model_args"]["vocab_size"] == 50304


def test_another_tokenizer_is_copied_or_named(tmp_path, capsys):
    # a checkpoint trained with a tokenizer from a local directory: its files travel with the export
    tok_dir = tmp_path / "tok"
    transformers.AutoTokenizer.from_pretrained(export(tmp_path / "a", "gpt")[1]).save_pretrained(tok_dir)
    _, out = export(tmp_path / "b", "qwen3_tied", tokenizer=str(tok_dir))
    assert transformers.AutoTokenizer.from_pretrained(out)(TEXT)["input_ids"] == get_tokenizer("gpt2").encode(TEXT)
    # one that is not available offline: the model is still written, and one line says how to add the tokenizer
    _, out = export(tmp_path / "c", "qwen3_tied", tokenizer="nobody/no-such-tokenizer")
    assert "exported without tokenizer files" in capsys.readouterr().out
    assert os.path.isfile(os.path.join(out, "config.json")) and not os.path.isfile(os.path.join(out, "tokenizer.json"))
    with pytest.raises(SystemExit, match="No checkpoint"):
        evaluate.main(["--export_hf", str(tmp_path / "missing.pt"), str(tmp_path / "d")])
    with pytest.raises(SystemExit, match="Usage"):
        evaluate.main(["--export_hf", str(tmp_path / "missing.pt")])
