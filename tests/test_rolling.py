"""Tests of tasks/rolling.py (word perplexity of whole documents): the windows are lm_eval.utils' own, and the
per-document log-likelihoods and word / byte perplexity equal lm-eval's hf model on lm-eval's
paloma_wikitext_103 task file with its data swapped for fixture documents.

    python -m pytest -q tests/test_rolling.py
"""
import json
import math
import os
import re

import pytest
import torch

from tasks import rolling as R

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAMBADA = os.path.join(ROOT, "tests", "fixtures", "tasks", "lambada_openai", "test.jsonl")


def test_windows_are_lm_evals():
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
    for n in (1, 5, 7, 8, 9, 15, 16, 17, 40):
        tokens = list(range(100, 100 + n))
        for L in (1, 2, 8):
            want = [tuple(map(list, make_disjoint_window(w))) for w in
                    get_rolling_token_windows(token_list=tokens, prefix_token=0, max_seq_len=L, context_len=1)]
            got = R.rolling_windows(tokens, 0, L)
            assert got == want, (n, L)
            assert [t for _, cont in got for t in cont] == tokens  # every token scored exactly once
    assert R.rolling_windows([], 0, 8) == []


def fixture_texts():
    """Documents of 1 to about 300 GPT-2 tokens (several 96-token windows), with runs of whitespace."""
    with open(LAMBADA) as f:
        base = [json.loads(line)["text"] for line in f if line.strip()]
    return [base[0], " ".join(base * 4), "\n\n".join(base[:3]) + "  tail", "Hi", "  ".join(base[1:] * 3)]


@pytest.fixture(scope="module")
def lm_eval_paloma(tmp_path_factory):
    """lm-eval's hf model (batch 1) on its own paloma_wikitext_103 task over the fixture texts."""
    import lm_eval
    import yaml
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    from transformers import GPT2Config, GPT2LMHeadModel
    from data.tokenizer import write_gpt2_hf_tokenizer
    root = tmp_path_factory.mktemp("paloma")
    model_dir = write_gpt2_hf_tokenizer(str(root / "tiny"))
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=96, vocab_size=50257)).save_pretrained(
        model_dir)
    data = root / "docs.jsonl"
    with open(data, "w") as f:
        for t in fixture_texts():
            f.write(json.dumps({"text": t}) + "\n")
    tasks = root / "tasks"
    tasks.mkdir()
    include = os.path.join(os.path.dirname(lm_eval.__file__), "tasks", "paloma", "paloma_wikitext_103.yaml")
    with open(tasks / "fx_paloma.yaml", "w") as f:
        yaml.safe_dump({"include": include, "task": "fx_paloma", "tag": [], "dataset_path": "json",
                        "dataset_name": None, "dataset_kwargs": {"data_files": {"test": str(data)}},
                        "validation_split": None, "test_split": "test"}, f)
    out = simple_evaluate(model="hf", model_args=f"pretrained={model_dir},dtype=float32", tasks=["fx_paloma"],
                          batch_size=1, device="cpu", task_manager=TaskManager(include_path=str(tasks),
                                                                               include_defaults=False),
                          log_samples=True)
    return out, model_dir, str(data)


def test_rolling_perplexity_equals_lm_evals_loglikelihood_rolling(lm_eval_paloma):
    from data.tokenizer import get_tokenizer
    from hf_convert import from_pretrained
    out, model_dir, data = lm_eval_paloma
    model = from_pretrained(model_dir).eval()
    tok = get_tokenizer(model.config.tokenizer)
    texts = R.read_texts(data)
    assert texts == fixture_texts() and len(tok.encode(texts[1])) > 2 * 96 + 1  # several windows
    samples = sorted(out["samples"]["fx_paloma"], key=lambda s: s["doc_id"])
    theirs = [s["resps"][0][0] if isinstance(s["resps"][0], list) else s["resps"][0] for s in samples]
    for batch_tokens in (64, None):
        ours = R.rolling_loglikelihoods(model, tok.encode, tok.eot_token, texts, 96, batch_tokens)
        assert ours == pytest.approx([float(x) for x in theirs], abs=1e-4)
    got = R.rolling_perplexity(model, tok, texts)
    res = out["results"]["fx_paloma"]
    for metric in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        assert got[metric] == pytest.approx(float(res[f"{metric},none"]), rel=1e-6), metric
    assert got["docs"] == 5 and math.isfinite(got["word_perplexity"])


def test_read_texts_bad_input_is_one_sentence(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\nnot json\n')
    with pytest.raises(ValueError, match=r"bad.jsonl line 2 is not a JSON object"):
        R.read_texts(str(bad))
    blank = tmp_path / "blank.jsonl"
    blank.write_text('{"text": "a"}\n\n{"text": " "}\n')
    with pytest.raises(ValueError, match=r"blank.jsonl line 3 has no text to score"):
        R.read_texts(str(blank))
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(ValueError, match="holds no text"):
        R.read_texts(str(empty))
    with pytest.raises(ValueError, match="Cannot read"):
        R.read_texts(str(tmp_path / "missing.txt"))
    whole = tmp_path / "one.txt"
    whole.write_text("one document\n\nof two paragraphs")
    assert R.read_texts(str(whole)) == ["one document\n\nof two paragraphs"]


def test_eval_cli_writes_lm_evals_perplexities(lm_eval_paloma, tmp_path, capsys):
    import eval as ev
    out, model_dir, data = lm_eval_paloma
    path = ev.main(["--init_from", model_dir, "--perplexity_data", data, "--out", str(tmp_path), "--limit", "3"])
    with open(path) as f:
        got = json.load(f)
    assert os.path.basename(path) == "perplexity_docs.json" and got["docs"] == 3
    assert "word perplexity" in capsys.readouterr().out
    # the first 3 documents: lm-eval's per-document lls with its word and byte counts
    samples = sorted(out["samples"]["fx_paloma"], key=lambda s: s["doc_id"])[:3]
    ll = sum(float(s["resps"][0][0] if isinstance(s["resps"][0], list) else s["resps"][0]) for s in samples)
    texts = fixture_texts()[:3]
    words = sum(len(re.split(r"\s+", t)) for t in texts)
    assert got["word_perplexity"] == pytest.approx(math.exp(-ll / words), rel=1e-5)
    with pytest.raises(SystemExit, match="Cannot read"):
        ev.main(["--init_from", model_dir, "--perplexity_data", str(tmp_path / "none.jsonl")])


def test_training_logs_the_rolling_perplexity_of_its_checkpoint(tmp_path):
    """train.py's perplexity_data at each tasks_interval (here without tasks): the logged word perplexity and bits
    per byte of the last eval are rolling_perplexity of the checkpoint saved there."""
    import subprocess
    import sys
    from data.tokenizer import get_tokenizer
    from data.tokens import write_tokens
    from checkpoint import load_checkpoint
    text = "To be, or not to be, that is the question. " * 40
    write_tokens({"train": [text] * 4, "val": [text]}, str(tmp_path / "data"))
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": t}) + "\n" for t in fixture_texts()))
    out = tmp_path / "out"
    cmd = [sys.executable, "train.py", f"--dataset={tmp_path / 'data'}", f"--out_dir={out}", "--n_layer=2",
           "--n_head=2", "--n_embd=32", "--block_size=64", "--batch_size=2", "--device=cpu", "--compile=False",
           "--gradient_accumulation_steps=1", "--eval_iters=1", "--max_iters=2", "--eval_interval=2",
           "--learning_rate=1e-2", "--tasks_interval=2", "--tasks=", f"--perplexity_data={docs}",
           "--perplexity_limit=4"]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert p.returncode == 0, p.stderr[-2000:]
    evals = [json.loads(line) for line in open(out / "log.jsonl") if "val_loss" in line]
    assert [r["iter"] for r in evals] == [0, 2] and not any(k.startswith("acc_") for k in evals[-1])
    model, _ = load_checkpoint(str(out / "ckpt.pt"), "cpu")
    want = R.rolling_perplexity(model, get_tokenizer("gpt2"), fixture_texts()[:4])
    assert evals[-1]["word_perplexity_docs"] == pytest.approx(want["word_perplexity"], rel=1e-6)
    assert evals[-1]["bits_per_byte_docs"] == pytest.approx(want["bits_per_byte"], rel=1e-6)
    assert evals[0]["word_perplexity_docs"] != evals[-1]["word_perplexity_docs"]


def test_prefix_token_is_bos_where_the_tokenizer_has_one():
    """lm-eval's hf model starts the first window with the tokenizer's BOS when there is one (Llama-family),
    else with EOT: rolling_perplexity does the same (here a random model, where the two prefixes differ)."""
    from types import SimpleNamespace
    from model import GPT, GPTConfig
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=64, n_layer=1, n_head=2, n_embd=16)).eval()
    encode = lambda text: [ord(c) % 60 + 4 for c in text]  # noqa: E731  a character tokenizer: ids 4..63
    texts = ["a short one", "and a longer document of several windows " * 2]
    for tok, prefix in ((SimpleNamespace(encode=encode, eot_token=1, bos_token=2), 2),
                        (SimpleNamespace(encode=encode, eot_token=1), 1)):
        want = R.perplexities(texts, R.rolling_loglikelihoods(model, encode, prefix, texts, 16))
        assert R.rolling_perplexity(model, tok, texts) == want
    assert R.rolling_loglikelihoods(model, encode, 1, texts, 16) != R.rolling_loglikelihoods(model, encode, 2, texts, 16)


def test_a_tokenizer_with_its_own_bos_starts_documents_with_it_as_lm_eval_does(tmp_path):
    """SmolLM2's case: a byte-level BPE tokenizer whose BOS (<|im_start|>) is never added by encode and differs from
    its EOS. lm-eval's hf model starts a document's first window, and an empty context, with that BOS (its
    prefix_token_id); so do get_tokenizer's Tokenizer, rolling_perplexity and the lm-eval adapter."""
    from types import SimpleNamespace
    import transformers
    from lm_eval.models.huggingface import HFLM
    from data.tokenizer import get_tokenizer, write_gpt2_hf_tokenizer
    from hf_convert import from_pretrained
    from tasks import engine as E
    from tasks.lm_eval_adapter import register_lm_eval
    model_dir = str(tmp_path / "model")
    hf_tok = transformers.GPT2TokenizerFast.from_pretrained(write_gpt2_hf_tokenizer(str(tmp_path / "files")))
    hf_tok.add_special_tokens({"bos_token": "<|im_start|>"})  # id 50257; EOS stays <|endoftext|> 50256
    hf_tok.save_pretrained(model_dir)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=50258, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=32, bos_token_id=50257, eos_token_id=50256,
        tie_word_embeddings=True)).save_pretrained(model_dir)
    texts = fixture_texts()[:3]
    lm = HFLM(pretrained=model_dir, batch_size=1, device="cpu", dtype="float32")
    assert (lm.prefix_token_id, lm.eot_token_id, lm.max_length) == (50257, 50256, 32)
    assert lm.tok_encode("Hi there") == hf_tok.encode("Hi there", add_special_tokens=False)  # no BOS added
    theirs = lm.loglikelihood_rolling([SimpleNamespace(args=(t,)) for t in texts], disable_tqdm=True)
    empty = [SimpleNamespace(args=("", " Hello world"))]
    theirs_empty = lm.loglikelihood(empty, disable_tqdm=True)[0][0]
    model = from_pretrained(model_dir).eval()
    tok = get_tokenizer(model.config.tokenizer)
    assert (tok.bos_token, tok.eot_token) == (50257, 50256) and E.bos_or_eot(tok) == 50257
    assert R.rolling_perplexity(model, tok, texts) == pytest.approx(R.perplexities(texts, theirs), rel=1e-5)
    req = E.encode_pair(tok.encode, E.bos_or_eot(tok), "", " Hello world")
    assert E.loglikelihoods(model, [req], 32)[0][0] == pytest.approx(theirs_empty, abs=1e-4)
    adapter = register_lm_eval()(model=model, tokenizer=tok, device="cpu")
    assert adapter.loglikelihood_rolling([SimpleNamespace(args=(t,)) for t in texts], disable_tqdm=True) == \
        pytest.approx(theirs, abs=1e-4)
    assert adapter.loglikelihood(empty, disable_tqdm=True)[0][0] == pytest.approx(theirs_empty, abs=1e-4)
