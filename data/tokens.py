"""
data/tokens.py: token files on disk, written once by the prepare scripts, read by train.py and eval.py.

Format (nanoGPT's): data/<name>/train.bin and val.bin are flat arrays of token ids, the EOT token appended after
each document, uint16 when the vocabulary fits in 65,536 ids (GPT-2: 50,257) and uint32 otherwise (Qwen3:
151,936). meta.json beside them records the dtype, the tokenizer (its name and the sha256 of its vocabulary) and
the token counts.

  write_tokens({'train': docs, 'val': docs}, 'data/mine', tokenizer='gpt2', num_proc=8)
  x, y = get_batch('data/mine', 'train', batch_size=12, block_size=1024, rng=np.random.default_rng(0))
  window_loss(loss_fn, 'data/mine', 'val', fixed_starts(n, 1024, 200 * 12), 12, 1024)   # train.py's val loss

A batch is batch_size windows of block_size + 1 consecutive tokens: x = window[:-1], y = window[1:].
"""

import json
import os

import numpy as np
import torch


def _dtype_for(n_vocab):
    return np.uint16 if n_vocab <= 2 ** 16 else np.uint32


def write_tokens(splits, out_dir, tokenizer="gpt2", num_proc=1, text_key="text", append_eot=True, batch_rows=1024):
    """Tokenise each split and write out_dir/<split>.bin and out_dir/meta.json.

    splits: {'train': docs, 'val': docs}, where docs is a list of strings or a datasets.Dataset with a text
    column. With append_eot the EOT token follows every document; without it documents are concatenated as
    they are (WikiText rows, which are lines of one article). Returns {split: number of tokens}.
    """
    from datasets import Dataset
    from tqdm import tqdm
    from data.tokenizer import get_tokenizer

    tok = get_tokenizer(tokenizer)
    dtype = _dtype_for(tok.n_vocab)
    eot = [tok.eot_token] if append_eot else []

    def encode(batch):  # runs in datasets' worker processes; get_tokenizer is cached per process
        t = get_tokenizer(tokenizer)
        ids = [t.encode(text) + eot for text in batch[text_key]]
        return {"ids": ids, "len": [len(x) for x in ids]}

    os.makedirs(out_dir, exist_ok=True)
    counts = {}
    for split, docs in splits.items():
        if not isinstance(docs, Dataset):
            docs = Dataset.from_dict({text_key: list(docs)})
        tokenized = docs.map(encode, batched=True, remove_columns=docs.column_names,
                             num_proc=num_proc if num_proc > 1 else None, desc=f"tokenizing {split}")
        total = int(np.sum(tokenized["len"], dtype=np.uint64))
        path = os.path.join(out_dir, f"{split}.bin")
        tmp = path + ".tmp"
        arr = np.memmap(tmp, dtype=dtype, mode="w+", shape=(total,))
        pos = 0
        for start in tqdm(range(0, len(tokenized), batch_rows), desc=f"writing {path}"):
            chunk = tokenized[start:start + batch_rows]["ids"]
            flat = np.fromiter((i for doc in chunk for i in doc), dtype=dtype)
            arr[pos:pos + len(flat)] = flat
            pos += len(flat)
        arr.flush()
        del arr
        os.replace(tmp, path)  # a run killed midway leaves no truncated .bin behind
        counts[split] = total
        print(f"{split}: {len(docs):,} documents, {total:,} tokens -> {path}")
    meta = {"dtype": np.dtype(dtype).name, "tokenizer": tokenizer, "tokenizer_sha256": tok.digest,
            "vocab_size": tok.n_vocab, "eot_token": tok.eot_token, "tokens": counts}
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    return counts


def corpus_args(description, name, argv=None):
    """(tokenizer, output folder) for a corpus's prepare script: --tokenizer (default GPT-2's; a released model's
    transformers folder, hub name or .gguf file) and --name (default: the corpus's own folder for GPT-2, else
    data/<name>_<tokenizer's file or folder name>), so the same text serves any model in its own ids."""
    import argparse
    import re
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokenizer", default="gpt2", help="'gpt2' or a transformers folder / hub name / .gguf file")
    p.add_argument("--name", default=None, help="output folder data/<name>/")
    args = p.parse_args(argv)
    tag = re.sub(r"[^a-z0-9]+", "-", os.path.basename(os.path.normpath(args.tokenizer)).lower()
                 .removesuffix(".gguf")).strip("-")
    folder = args.name or (name if args.tokenizer == "gpt2" else f"{name}_{tag}")
    return args.tokenizer, os.path.join(os.path.dirname(os.path.abspath(__file__)), folder)


def load_meta(data_dir):
    """meta.json of a data folder; folders written by nanoGPT (no meta.json) are GPT-2 uint16."""
    path = os.path.join(data_dir, "meta.json")
    if not os.path.exists(path):
        return {"dtype": "uint16", "tokenizer": "gpt2", "vocab_size": 50257, "eot_token": 50256}
    with open(path) as f:
        return json.load(f)


def tokens_match(tokenizer, meta):
    """True when token files with this meta.json are in `tokenizer`'s ids: the same name, or (a released model's
    folder against its .gguf file, say) the same vocabulary digest recorded by write_tokens."""
    if tokenizer == meta["tokenizer"]:
        return True
    if "gpt2" in (tokenizer, meta["tokenizer"]) or not meta.get("tokenizer_sha256"):
        return False
    from data.tokenizer import tokenizer_digest
    try:
        return tokenizer_digest(tokenizer) == meta["tokenizer_sha256"]
    except RuntimeError:
        return False


def load_split(data_dir, split):
    """The split's tokens as a read-only np.memmap, opened anew on every call (a memmap kept open across the
    run grows the process's memory; see nanoGPT's get_batch)."""
    path = os.path.join(data_dir, f"{split}.bin")
    if not os.path.exists(path):
        name = os.path.basename(os.path.normpath(data_dir))
        raise FileNotFoundError(f"No {split}.bin in {data_dir}: run `python data/{name}/prepare.py` first "
                                f"(or `python data/prepare.py --name {name} ...` for your own text).")
    return np.memmap(path, dtype=np.dtype(load_meta(data_dir)["dtype"]), mode="r")


def fixed_starts(n_tokens, block_size, num):
    """num window starts spread evenly over the split: the same windows at every evaluation and for any number
    of processes (each rank takes starts[rank::world_size])."""
    last = n_tokens - block_size - 1
    if last < 0:
        raise ValueError(f"The split has {n_tokens} tokens, fewer than block_size + 1 = {block_size + 1}; "
                         f"lower block_size or prepare more data.")
    return np.linspace(0, last, num).astype(np.int64)


def get_batch(data_dir, split, batch_size, block_size, rng=None, device="cpu", starts=None, vocab_size=None):
    """(x, y) int64 tensors [B, block_size]: random windows drawn with `rng` (np.random.Generator), or the
    given window starts. y is x shifted by one token (next-token targets). With vocab_size, a token id >= it
    (data tokenised for another model) is a ValueError naming the file, not an index error deep in the model."""
    data = load_split(data_dir, split)
    if len(data) <= block_size:
        raise ValueError(f"{data_dir}/{split}.bin has {len(data)} tokens, not more than block_size = {block_size}; "
                         f"lower block_size or prepare more data.")
    if starts is None:
        starts = rng.integers(0, len(data) - block_size, size=batch_size)
    windows = np.stack([data[i:i + block_size + 1] for i in starts]).astype(np.int64)
    if vocab_size is not None and windows.max() >= vocab_size:
        raise ValueError(f"{os.path.join(data_dir, split + '.bin')} holds token id {windows.max()}, beyond the "
                         f"model's vocabulary of {vocab_size}: prepare the data with the model's tokenizer.")
    windows = torch.from_numpy(windows)
    x, y = windows[:, :-1], windows[:, 1:]
    if torch.device(device).type == "cuda":  # pinned memory lets the copy overlap with compute
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.contiguous().to(device), y.contiguous().to(device)


@torch.no_grad()
def window_loss(loss_fn, data_dir, split, starts, batch_size, block_size, device="cpu", vocab_size=None):
    """The mean of loss_fn(x, y), a batch's mean token loss, over the windows at starts (fixed_starts), weighting
    each batch by its windows: every window has block_size tokens, so this is the mean over all their tokens.
    train.py's val and train losses and eval.py --loss_data. Under a process group the windows are shared out
    (hardware.rank_share) and the sums added up, the same number for any world size up to float64 rounding;
    every process runs as many batches as the busiest, a shorter share padding with a batch of the first window
    whose loss it does not count. Sums in float64 (float32 for the all-reduce on MPS, which has no float64)."""
    import hardware
    mine, n_batches = hardware.rank_share(starts, batch_size)
    total, count = 0.0, 0  # sum of window losses, number of windows
    for i in range(0, n_batches * batch_size, batch_size):
        part = mine[i:i + batch_size]
        x, y = get_batch(data_dir, split, 0, block_size, device=device, starts=part if len(part) else starts[:1],
                         vocab_size=vocab_size)
        loss = loss_fn(x, y)
        if len(part):
            total, count = total + loss.item() * len(part), count + len(part)
    if hardware.group_rank()[1] > 1:
        sums = torch.tensor([total, count], device=device,
                            dtype=torch.float32 if torch.device(device).type == "mps" else torch.float64)
        torch.distributed.all_reduce(sums)
        total, count = sums.tolist()
    return total / count
