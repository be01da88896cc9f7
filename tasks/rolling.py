"""
tasks/rolling.py: word perplexity of whole documents, as lm-evaluation-harness 0.4 scores paloma_wikitext_103
(and wikitext): loglikelihood_rolling over every token of a document, then word / byte perplexity.

  python eval.py --ckpt out/ckpt.pt --perplexity_data data/lee_news/lee_news.jsonl --limit 50
  result = rolling_perplexity(model, tokenizer, texts)        # from Python (train.py does this)

Windows (lm_eval.utils.get_rolling_token_windows with context_len=1, then make_disjoint_window): a document
of N tokens t_0..t_{N-1}, model window L. The first window predicts t_0..t_{min(L,N)-1} from [P] + the
tokens before each (P: the tokenizer's BOS where it has one, else EOT, as lm-eval's prefix_token_id); every
later window predicts the next min(L, N - done) tokens, each seeing the L tokens before it (so every token
is scored exactly once, with up to L - 1 tokens of context). Each window is one (context, continuation)
request of tasks/engine.py's loglikelihoods, and a document's log-likelihood is the sum over its windows.
Metrics (lm_eval.api.metrics, summed over all documents before dividing):
    word_perplexity = exp(-sum ll / sum words),  words = len(re.split(r"\\s+", text))
    byte_perplexity = exp(-sum ll / sum bytes),  bytes = len(text.encode("utf-8"))
    bits_per_byte   = -sum ll / sum bytes / ln 2
Under torchrun rank r scores documents r::world and the sums are gathered: every rank returns the same.
"""

import json
import math
import re

import torch

from tasks.engine import _dist, _gather, bos_or_eot, loglikelihoods
from text_sources import read_documents


def rolling_windows(tokens, prefix_token, max_length):
    """lm-eval's disjoint rolling windows [(context ids, continuation ids)] of one document (module docstring)."""
    tokens = list(tokens)
    if not tokens:
        return []
    first = min(max_length, len(tokens))
    windows = [([prefix_token], tokens[:first])]  # disjoint: [EOT] + t_<first-1 minus the overlap = [EOT]
    done = first
    while done < len(tokens):
        n = min(len(tokens) - done, max_length)
        end = done + n
        windows.append((tokens[max(end - max_length - 1, 0):done], tokens[done:end]))
        done = end
    return windows


def rolling_loglikelihoods(model, encode, prefix_token, texts, max_length, batch_tokens=None, autocast=None,
                           progress=False, in_step=False):
    """The log-likelihood of every token of each text, [float per text] (an empty text: 0.0)."""
    windows, owner = [], []
    for k, text in enumerate(texts):
        for w in rolling_windows(encode(text), prefix_token, max_length):
            windows.append(w)
            owner.append(k)
    lls = loglikelihoods(model, windows, max_length, batch_tokens, autocast, progress, in_step) if windows or \
        in_step else []
    total = [0.0] * len(texts)
    for k, (ll, _) in zip(owner, lls):
        total[k] += ll
    return total


def perplexities(texts, lls):
    """lm-eval's word_perplexity, byte_perplexity and bits_per_byte of documents with these log-likelihoods."""
    words = sum(len(re.split(r"\s+", t)) for t in texts)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    ll = sum(lls)
    return {"word_perplexity": math.exp(-ll / words), "byte_perplexity": math.exp(-ll / n_bytes),
            "bits_per_byte": -ll / n_bytes / math.log(2), "docs": len(texts), "words": words, "bytes": n_bytes}


def read_texts(path, limit=None):
    """The documents of an offline text file: a .jsonl holds one {"text": ...} per line (data/lee_news), any
    other file is one document. limit: the first N documents. Bad input ends in one sentence (ValueError), an
    empty document too (words and bytes count every document: skipping one would change the perplexity)."""
    try:
        docs = read_documents(path)
    except OSError as e:
        raise ValueError(f"Cannot read {path} ({e.strerror or type(e).__name__}).") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text.") from None
    if path.endswith(".jsonl"):
        for k, text in docs:
            if not text.strip():  # dropping it would change the word count silently
                raise ValueError(f"{path} line {k} has no text to score; remove that line.")
    # left out here: only a blank text file (the .jsonl case was refused above)
    texts = [text for _, text in docs if text.strip()][:None if limit is None else int(limit)]
    if not texts:
        raise ValueError(f"{path} holds no text to score.")
    return texts


def rolling_perplexity(model, tokenizer, texts, batch_tokens=None, autocast=None, progress=False):
    """perplexities() of `texts` under `model` (our GPT / Qwen3: hidden_states, lm_head, config.block_size).
    The first window's prefix token is lm-eval hf's prefix_token_id (engine.bos_or_eot: the tokenizer's BOS
    where it has one, Llama-family tokenizers, else its EOT: GPT-2, Qwen). Under torchrun every rank must call
    it with the same texts."""
    rank, world = _dist()
    mine = list(range(rank, len(texts), world))
    was_training = model.training
    model.eval()
    try:
        lls = rolling_loglikelihoods(model, tokenizer.encode, bos_or_eot(tokenizer),
                                     [texts[k] for k in mine],
                                     model.config.block_size, batch_tokens, autocast, progress and rank == 0,
                                     in_step=world > 1)
    finally:
        model.train(was_training)
    got = dict(_gather(list(zip(mine, lls))))
    return perplexities(texts, [got[k] for k in range(len(texts))])


def perplexity_main(args, load_model, resolve_device):
    """eval.py --perplexity_data FILE [--limit N] [--batch_tokens B] [--dtype D]: the rolling perplexity of the
    file's documents -> perplexity_<file name>.json in --out (default: eval/ beside the checkpoint), printed.
    load_model(args, device) -> (model, checkpoint, name, default output directory) and resolve_device(--device)
    -> this process's device: eval.py's own, so that every mode loads and places a model the same way."""
    import os

    import hardware
    from data.tokenizer import get_tokenizer
    try:
        texts = read_texts(args.perplexity_data, args.limit)  # before the model load: a bad file costs nothing
    except ValueError as e:
        raise SystemExit(str(e))
    device = resolve_device(args.device)
    hardware.init_distributed(device)
    try:
        model, _, name, default_out = load_model(args, device)
        result = {"model": name, "data": args.perplexity_data, "limit": args.limit, "dtype": args.dtype,
                  "max_length": model.config.block_size,
                  **rolling_perplexity(model, get_tokenizer(model.config.tokenizer), texts, args.batch_tokens,
                                       hardware.autocast(args.dtype, device), progress=True)}
        if _dist()[0] == 0:
            out = args.out or default_out
            path = os.path.join(out, f"perplexity_{os.path.splitext(os.path.basename(args.perplexity_data))[0]}.json")
            os.makedirs(out, exist_ok=True)
            with open(path, "w") as f:
                json.dump(result, f, indent=1)
            print(f"{name} on {result['docs']} documents of {args.perplexity_data}: word perplexity "
                  f"{result['word_perplexity']:.3f}, byte perplexity {result['byte_perplexity']:.4f}, "
                  f"bits per byte {result['bits_per_byte']:.4f}; wrote {path}")
            return path
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
