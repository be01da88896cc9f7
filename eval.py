"""
eval.py: measure a checkpoint (or a released GPT-2 / Qwen3 model).

Two measurements, both from the command line:
  python eval.py --ckpt out/ckpt.pt                        # embedding condensation (paper section 2)
  python eval.py --ckpt out/ckpt.pt --benchmarks paper     # the paper's 10 benchmarks, scored as lm-eval does

"""

# -----------------------------------------------------------------------------
# condensation: per-layer token cosine similarity

# The paper's observation (section 2 of ../shared/paper.md): through the layers, the hidden states of one
# sequence's tokens crowd into a narrow cone. For every hidden state l = 0..n (HF convention: 0 = embedding
# output, n = after the final norm) and every sequence, the S x S cosine matrix
#     C_ij = <z_i, z_j> / (max(|z_i|, 1e-3) max(|z_j|, 1e-3))       (float32, clipped to [-1, 1])
# is summed over the N sequences and divided by N; every statistic reads this averaged matrix:
#     mu_l = mean of all S*S entries (diagonal included),  hist_l = 128-bin density over [-1, 1],
#     rho = Spearman(mu_0..mu_n, 0..n),  tau = Kendall tau-b(...),  last_n = mean(mu_{n-k+1..n}).
# Writes condensation.json and condensation.png (the paper's heatmap) to --out (default: eval/ beside the ckpt):
#     python eval.py --ckpt out/ckpt.pt [--source val|wikitext|data/NAME|FILE.txt|FILE.jsonl] [--num_sequences 100]
#     python eval.py --init_from gpt2-xl --source wikitext --seq_len 512
#     python eval.py --compare out-a/eval/condensation.json out-b/eval/condensation.json   # curves in one figure

import json
import math
import os

import numpy as np
import torch

NORM_FLOOR = 1e-3  # the paper's clamp of |z| (keeps all-zero vectors at cosine 0 instead of NaN)


def cosine_matrix(h):
    """[..., S, C] hidden states -> [..., S, S] float32 cosine matrix (norms clamped at 1e-3, clipped to [-1, 1])."""
    # float32 even inside the trainer's autocast (which would run the matmul in bf16: ~3 significant digits)
    with torch.autocast(device_type=h.device.type, enabled=False):
        h = h.float()
        # max(|z_i|, eps) max(|z_j|, eps) factorises, so each row is divided by its own clamped norm once
        u = h / h.norm(dim=-1, keepdim=True).clamp_min(NORM_FLOOR)
        return (u @ u.transpose(-1, -2)).clamp_(-1.0, 1.0)


def average_ranks(x):
    """Ranks 1..n of the values of x, ties sharing the mean of the ranks they span (as for Spearman)."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and x[order[j + 1]] == x[order[i]]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1  # positions i..j hold ranks i+1..j+1
        i = j + 1
    return ranks


def spearman(x, y):
    """Spearman's rho: Pearson correlation of the average ranks; NaN when either side is constant."""
    rx, ry = average_ranks(x), average_ranks(y)
    assert rx.shape == ry.shape, "spearman needs two sequences of the same length"
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt((rx @ rx) * (ry @ ry))
    return float(rx @ ry / denom) if denom > 0 else float("nan")


def kendall(x, y):
    """Kendall's tau-b: (concordant - discordant) / sqrt((n0 - ties_x)(n0 - ties_y)) over all pairs i < j."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    assert x.shape == y.shape and x.ndim == 1, "kendall needs two 1-D sequences of the same length"
    i, j = np.triu_indices(len(x), k=1)
    sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    n0 = len(i)
    denom = math.sqrt((n0 - np.sum(sx == 0)) * (n0 - np.sum(sy == 0)))
    return float(np.sum(sx * sy) / denom) if denom > 0 else float("nan")


def last_n_sizes(n_layers):
    """The paper's last-n windows: n = 1..5 and n_layers // 2, never reaching back to the embedding output."""
    return sorted({n for n in (1, 2, 3, 4, 5, n_layers // 2) if 1 <= n <= n_layers})


def _batches(sequences, batch_size):
    """A LongTensor [N, S] in slices of batch_size rows, or any iterable of [B, S] batches as it is."""
    if torch.is_tensor(sequences):
        assert sequences.ndim == 2, f"sequences must be [N, S], got {tuple(sequences.shape)}"
        return list(sequences.split(batch_size))
    return sequences


def cosine_sums(model, sequences, batch_size=8, device=None, progress=False):
    """Run the model over the sequences and sum the per-layer S x S cosine matrices -> ([L+1, S, S] sum, N).

    Memory holds one batch's hidden states and the [L+1, S, S] running sum, whatever N is.
    """
    device = device or next(model.parameters()).device
    batches = _batches(sequences, batch_size)
    total = sum(len(b) for b in batches) if isinstance(batches, list) else None
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total, unit="seq", desc="condensation")
    was_training = model.training
    model.eval()
    sums, count = None, 0
    try:
        with torch.no_grad():
            for x in batches:
                x = x.to(device)
                hidden = model.hidden_states(x)  # no LM head: the [B, S, vocab] logits would double the memory
                if sums is None:
                    sums = torch.zeros(len(hidden), x.shape[1], x.shape[1], dtype=torch.float32, device=device)
                assert len(hidden) == sums.shape[0] and x.shape[1] == sums.shape[1], \
                    "every batch must give the same number of hidden states and sequence length"
                for l, h in enumerate(hidden):
                    assert h.shape[:2] == x.shape, f"hidden[{l}] is {tuple(h.shape)}, expected [B, S, C]"
                    sums[l] += cosine_matrix(h).sum(0)
                count += x.shape[0]
                if bar is not None:
                    bar.update(x.shape[0])
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()
    if count == 0:
        raise ValueError("condensation needs at least one sequence, and none were given.")
    return sums, count


def layer_stats(avg, bins=128):
    """Statistics of the averaged [L+1, S, S] cosine matrices (see the top of this section)."""
    assert avg.ndim == 3 and avg.shape[1] == avg.shape[2], f"expected [L+1, S, S], got {tuple(avg.shape)}"
    mean_cos = [float(m) for m in avg.double().mean(dim=(1, 2)).cpu()]
    n_layers = len(mean_cos) - 1
    idx = list(range(len(mean_cos)))
    stats = {
        "mean_cos": mean_cos,
        "spearman": spearman(mean_cos, idx),
        "kendall": kendall(mean_cos, idx),
        "last_n_mean": {str(n): float(np.mean(mean_cos[-n:])) for n in last_n_sizes(n_layers)},
        "n_layers": n_layers,
    }
    if bins:
        flat = avg.reshape(len(mean_cos), -1).cpu().numpy()
        stats["hist_edges"] = np.linspace(-1.0, 1.0, bins + 1).tolist()
        stats["hist"] = [np.histogram(f, bins=bins, range=(-1.0, 1.0), density=True)[0].tolist() for f in flat]
    return stats


def condensation(model, sequences, batch_size=8, device=None, bins=128, progress=False):
    """Measure embedding condensation of `model` on `sequences` (LongTensor [N, S] or an iterable of batches).

    Returns a dict: mean_cos (n+1 floats), spearman, kendall, last_n_mean {str(n): float}, n_layers,
    hist (n+1 lists of `bins` densities over [-1, 1]), hist_edges, seq_len, num_sequences.
    """
    sums, count = cosine_sums(model, sequences, batch_size, device, progress)
    stats = layer_stats(sums / count, bins)
    stats.update(seq_len=sums.shape[1], num_sequences=count)
    return stats


def condensation_probe(model, x):
    """The trainer's cheap probe on a few fixed windows x [B, T]: per-layer means, the last layer's mean, rho."""
    stats = condensation(model, x, batch_size=len(x), bins=0)
    return {"mean_cos": stats["mean_cos"], "last_mean": stats["mean_cos"][-1], "spearman": stats["spearman"]}



# sequences: seed i (0..N-1) draws sequence i, so the first 10 of N=100 are the N=10 set

DATA_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")  # data/<dataset>, as in train.py
WIKITEXT = ("Salesforce/wikitext", "wikitext-103-raw-v1", "test")  # the paper's text (its split is not stated)
SPAN_WORDS = (1024, 1280)  # seed i picks a random span of 1024..1280 words, tokenised, cut to the first S tokens


def val_windows(data_dir, num, seq_len, split="val"):
    """Seed i -> a window of seq_len tokens of data_dir's split, starting where np.random.default_rng(i) says."""
    from data.tokens import get_batch, load_split
    n_tokens = len(load_split(data_dir, split))
    if n_tokens <= seq_len:
        raise ValueError(f"{data_dir}'s {split} split has {n_tokens} tokens, too few for windows of {seq_len}.")
    # starts < n_tokens - seq_len leave room for get_batch's shifted targets
    starts = np.array([np.random.default_rng(i).integers(0, n_tokens - seq_len) for i in range(num)])
    x, _ = get_batch(data_dir, split, num, seq_len, None, "cpu", starts=starts)
    assert x.shape == (num, seq_len), f"get_batch gave {tuple(x.shape)}, expected {(num, seq_len)}"
    return x


def text_spans(words, num, seq_len, encode):
    """Seed i -> a random span of SPAN_WORDS words of `words`, encoded and cut to the first seq_len tokens."""
    lo, hi = SPAN_WORDS
    if len(words) < hi:
        raise ValueError(f"The text has {len(words)} words, fewer than the {hi} a span may need.")
    rows = []
    for i in range(num):
        rng = np.random.default_rng(i)
        n = int(rng.integers(lo, hi + 1))
        start = int(rng.integers(0, len(words) - n + 1))
        ids = encode(" ".join(words[start:start + n]))[:seq_len]
        if len(ids) < seq_len:
            raise ValueError(f"Seed {i}'s span of {n} words gives {len(ids)} tokens, fewer than seq_len {seq_len}.")
        rows.append(ids)
    return torch.tensor(rows, dtype=torch.long)


def read_words(path):
    """The words of a local file: a .txt is one document, a .jsonl holds one {"text": ...} document a line."""
    with open(path, encoding="utf-8") as f:
        if path.endswith(".jsonl"):
            return [w for line in f if line.strip() for w in json.loads(line)["text"].split()]
        return f.read().split()


def wikitext_words():
    """The words of WikiText-103 (raw) through `datasets`; offline this fails with one sentence."""
    try:
        from datasets import load_dataset
        ds = load_dataset(WIKITEXT[0], WIKITEXT[1], split=WIKITEXT[2])
    except Exception as e:  # offline, no cache, hub errors: all end the same way for the user
        raise ValueError(f"WikiText-103 could not be loaded from the Hugging Face hub ({type(e).__name__}); "
                         "use --source val or a local .txt/.jsonl file instead.") from e
    return " ".join(ds["text"]).split()


def _rho(v):
    return "n/a" if v is None or v != v else f"{v:+.2f}"


def _finite(obj):
    """JSON without NaN (Spearman of a constant curve): non-finite floats become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


# plots (matplotlib's object API with the Agg canvas: no pyplot, no global backend state)

def _figure():
    from matplotlib.figure import Figure
    fig = Figure(figsize=(6.4, 4.2))
    return fig, fig.add_subplot()


def _layer_fraction(mean_cos):
    n = max(len(mean_cos) - 1, 1)
    return np.arange(len(mean_cos)) / n


def plot_condensation(stats, path, label=""):
    """The paper's figure: per-layer density of the averaged cosine matrix (Reds, 0..10) and the mean curve."""
    hist = np.array(stats["hist"]).T  # [bins, n+1]: y = cosine bin, x = layer
    frac = _layer_fraction(stats["mean_cos"])
    half = 0.5 / max(len(frac) - 1, 1)  # each layer's column is centred on its fraction l / n
    fig, ax = _figure()
    im = ax.imshow(hist, origin="lower", aspect="auto", extent=(-half, 1 + half, -1, 1), cmap="Reds", vmin=0, vmax=10)
    ax.plot(frac, stats["mean_cos"], color="black", marker="o", markersize=3, linewidth=1.2, label="mean cosine")
    fig.colorbar(im, ax=ax, label="density")
    ax.set(xlabel="layer fraction l / n", ylabel="cosine similarity", ylim=(-1, 1))
    ax.set_title(f"{label}  Spearman rho = {_rho(stats['spearman'])}".strip(), fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.savefig(path, dpi=120, bbox_inches="tight")


def plot_compare(runs, path):
    """Several runs' per-layer mean curves over the layer fraction; runs = [(label, stats), ...]."""
    fig, ax = _figure()
    for label, stats in runs:
        ax.plot(_layer_fraction(stats["mean_cos"]), stats["mean_cos"], marker="o", markersize=3,
                label=f"{label} (rho {_rho(stats['spearman'])})")
    ax.set(xlabel="layer fraction l / n", ylabel="mean cosine similarity", title="embedding condensation")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120, bbox_inches="tight")


# -----------------------------------------------------------------------------
# benchmarks: lm-evaluation-harness style multiple-choice scoring


# -----------------------------------------------------------------------------
# command line

import argparse


def build_parser():
    p = argparse.ArgumentParser(description="Measure a checkpoint or a released GPT-2 / Qwen3 model.")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--ckpt", help="a checkpoint written by train.py, e.g. out/ckpt.pt")
    which.add_argument("--init_from", help="released weights: gpt2..gpt2-xl, Qwen/Qwen3-0.6B.., or a local HF directory")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--out", default=None, help="output directory (default: eval/ beside the checkpoint)")
    g = p.add_argument_group("condensation (the default measurement)")
    g.add_argument("--source", default=None, help="val (default with --ckpt: the checkpoint's dataset), wikitext "
                   "(default with --init_from), a token data directory (data/NAME), or a .txt / .jsonl file")
    g.add_argument("--num_sequences", type=int, default=100)
    g.add_argument("--seq_len", type=int, default=512, help="clipped to the model's block_size")
    g.add_argument("--compare", nargs="+", metavar="JSON", help="plot these condensation.json files together")
    return p


def load_model(args, device):
    """(model on device, checkpoint dict or None, what was measured, default output directory)."""
    from model import from_pretrained, load_checkpoint
    if args.ckpt:
        try:
            model, ckpt = load_checkpoint(args.ckpt, device)
        except (FileNotFoundError, ValueError) as e:
            raise SystemExit(str(e))
        return model, ckpt, args.ckpt, os.path.join(os.path.dirname(os.path.abspath(args.ckpt)), "eval")
    if args.init_from:
        model = from_pretrained(args.init_from).to(device).eval()
        return model, None, args.init_from, os.path.join("eval", os.path.basename(os.path.normpath(args.init_from)))
    raise SystemExit("Say what to measure: --ckpt out/ckpt.pt or --init_from gpt2 (or a local HF directory).")


def checkpoint_data_dir(ckpt):
    """data/<dataset> beside this file, as train.py finds it (the checkpoint's config names the dataset)."""
    dataset = ckpt.get("config", {}).get("dataset")
    if not dataset:
        raise SystemExit("The checkpoint's config names no dataset; give --source data/NAME, wikitext or a file.")
    return os.path.join(DATA_ROOT, dataset)


def condensation_sequences(args, model, ckpt, seq_len):
    """The [N, S] token sequences args.source names, and a short description of them for the JSON."""
    source = args.source or ("val" if ckpt is not None else "wikitext")
    n = args.num_sequences
    if source == "val" and ckpt is None:
        raise SystemExit("--source val reads the checkpoint's dataset; with --init_from give --source wikitext, "
                         "a data directory (data/NAME) or a .txt / .jsonl file.")
    data_dir = checkpoint_data_dir(ckpt) if source == "val" else source
    try:
        if source == "val" or os.path.isdir(source):
            return val_windows(data_dir, n, seq_len), f"val windows of {data_dir}"
        from data.tokenizer import get_tokenizer
        encode = get_tokenizer(model.tokenizer_name).encode
        if source == "wikitext":
            return text_spans(wikitext_words(), n, seq_len, encode), "/".join(WIKITEXT)
        if not os.path.isfile(source):
            raise SystemExit(f"--source {source} is not val, wikitext, a data directory or a file.")
        return text_spans(read_words(source), n, seq_len, encode), source
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(str(e))


def print_condensation(stats):
    n = stats["n_layers"]
    print(f"{'layer':>5} {'l/n':>5} {'mean cos':>9}")
    for l, m in enumerate(stats["mean_cos"]):
        print(f"{l:>5} {l / max(n, 1):>5.2f} {m:>9.4f}")
    last = "  ".join(f"last-{k} {v:.4f}" for k, v in stats["last_n_mean"].items())
    print(f"Spearman rho {_rho(stats['spearman'])}  Kendall tau {_rho(stats['kendall'])}  {last}")


def condensation_main(args):
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, ckpt, name, default_out = load_model(args, device)
    seq_len = args.seq_len
    if seq_len > model.config.block_size:
        print(f"seq_len {seq_len} is longer than the model's block_size; using {model.config.block_size}.")
        seq_len = model.config.block_size
    x, source = condensation_sequences(args, model, ckpt, seq_len)
    print(f"condensation of {name}: {len(x)} sequences of {seq_len} tokens from {source}")
    stats = condensation(model, x, args.batch_size, device, progress=True)
    stats.update(source=source, model=name)
    print_condensation(stats)
    out = args.out or default_out
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "condensation.json"), "w") as f:
        json.dump(_finite(stats), f, indent=1)
    plot_condensation(stats, os.path.join(out, "condensation.png"), name if len(name) <= 48 else "..." + name[-45:])
    print(f"wrote {out}/condensation.json and condensation.png")


def compare_main(args):
    runs = []
    for path in args.compare:
        if not os.path.isfile(path):
            raise SystemExit(f"--compare: no file {path} (give condensation.json files written by eval.py).")
        with open(path) as f:
            runs.append((path, json.load(f)))
    names = [s.get("model", p) for p, s in runs]
    unique = len(set(names)) == len(names)  # two runs of one model are told apart by their file paths
    out = args.out or os.path.dirname(os.path.abspath(args.compare[0]))
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "condensation_compare.png")
    plot_compare([(name if unique else p, s) for name, (p, s) in zip(names, runs)], path)
    print(f"wrote {path}")


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.compare:
        return compare_main(args)
    return condensation_main(args)


if __name__ == "__main__":
    main()
