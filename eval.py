"""
eval.py: measure a checkpoint (or a released GPT-2 / Qwen3 model). Its modes, one command line each:

  condensation (the default; arXiv 2602.00217 section 2): per-layer token cosine similarity
    python eval.py --ckpt out/ckpt.pt [--source val|wikitext|data/NAME|FILE.txt|FILE.jsonl] [--num_sequences 100]
    python eval.py --init_from Qwen/Qwen2.5-0.5B --source wikitext103   # any transformers causal LM (hf_lm.py),
                                                                       # the authors' text sampler (text_sources.py)
    python eval.py --ckpt out/ckpt.pt --anisotropy   # also standardized cosine, rogue dimensions, cross-context
                                                     # anisotropy, TwoNN intrinsic dimension (anisotropy.py)
  tasks (the paper's benchmark table, scored as lm-evaluation-harness scores it; the engine is tasks/)
    python eval.py --ckpt out/ckpt.pt --tasks paper --limit 500          (--benchmarks is the same flag)
    torchrun --standalone --nproc_per_node=8 eval.py --init_from gpt2 --tasks paper --limit 500
  compare: condensation curves in one figure, or task results in one table
    python eval.py --compare a/eval/condensation_val_S512_N100.json b/eval/condensation_val_S512_N100.json
    python eval.py --compare a/eval/tasks.json b/eval/tasks.json
  lm_eval: any lm-eval task on our checkpoints, through lm-eval's own command line
    python eval.py --lm_eval run --model disperse-gpt --model_args ckpt=out/ckpt.pt --tasks hellaswag
  loss on another token corpus (data/NAME), by train.py's val-loss rule: the checkpoint's eval_iters x batch_size
  fixed windows of block_size tokens (data.tokens.fixed_starts, window_loss), the mean token cross-entropy -> loss_NAME.json
    python eval.py --ckpt out/ckpt.pt --loss_data lee_news
  word perplexity of whole documents (lm-eval's loglikelihood_rolling, paloma_wikitext_103's metrics; tasks/rolling.py)
    python eval.py --ckpt out/ckpt.pt --perplexity_data data/lee_news/lee_news.jsonl --limit 50

Condensation: for every hidden state l = 0..n (HF convention: 0 = embedding output, n = after the final norm)
and every sequence, the S x S cosine matrix
    C_ij = <z_i, z_j> / (max(|z_i|, 1e-3) max(|z_j|, 1e-3))       (IEEE float32 even under TF32, clipped to [-1, 1])
is summed over the N sequences and divided by N; every statistic reads this averaged matrix:
    mu_l = mean of all S*S entries (diagonal included),  hist_l = 128-bin density over [-1, 1],
    rho = Spearman(mu_0..mu_n, 0..n),  tau = Kendall tau-b(...),  last_n = mean(mu_{n-k+1..n}).
Writes condensation_<source>_S<seq_len>_N<num>.json and .png (the paper's heatmap) to --out (default: eval/
beside the checkpoint), so measurements of other sources, lengths or sizes never replace each other.
The measure is condensation.py's; --anisotropy adds anisotropy.py's block to the JSON, a table, the standardized
curve to the heatmap and a second figure (..._anisotropy.png); --geometry adds geometry.py's.
"""

import argparse
import json
import math
import os
import re
import sys

import numpy as np
import torch

import hardware
import text_sources
from checkpoint import load_checkpoint
from condensation import condensation
from data.tokenizer import get_tokenizer
from data.tokens import fixed_starts, load_meta, load_split, tokens_match, window_loss
from hf_convert import from_pretrained
from tasks import lm_eval_adapter
from tasks.definitions import resolve_fewshot, resolve_tasks
from hf_hub import hub_offline
from tasks.engine import run_benchmarks
from tasks.results import compare_results, load_json, results_table, write_results
from tasks.rolling import perplexity_main

DATA_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")  # data/<dataset>, as in train.py


def _signed(v):
    """A correlation (Spearman's rho, Kendall's tau) as +0.97, or n/a when there is none (null / NaN)."""
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
    if "anisotropy" in stats:  # the same measure on standardized dimensions (anisotropy.py)
        a = stats["anisotropy"]
        ax.plot(frac, a["std_cos"], color="tab:blue", linestyle="--", marker="s", markersize=3, linewidth=1.2,
                label=f"standardized (rho {_signed(a['std_spearman'])})")
    fig.colorbar(im, ax=ax, label="density")
    ax.set(xlabel="layer fraction l / n", ylabel="cosine similarity", ylim=(-1, 1))
    ax.set_title(f"{label}  Spearman rho = {_signed(stats['spearman'])}".strip(), fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.savefig(path, dpi=120, bbox_inches="tight")


def measured_on(stats):
    """What a measurement read: 'SOURCE, S=seq_len, N=num' (? for what an old file does not record)."""
    return f"{stats.get('source', '?')}, S={stats.get('seq_len', '?')}, N={stats.get('num_sequences', '?')}"


def plot_compare(runs, path):
    """Several runs' per-layer mean curves over the layer fraction, each labelled with its source and length;
    runs = [(label, stats), ...]. Returns the figure."""
    fig, ax = _figure()
    for label, stats in runs:
        ax.plot(_layer_fraction(stats["mean_cos"]), stats["mean_cos"], marker="o", markersize=3,
                label=f"{label} ({measured_on(stats)}; rho {_signed(stats.get('spearman'))})")
    ax.set(xlabel="layer fraction l / n", ylabel="mean cosine similarity", title="embedding condensation")
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def plot_anisotropy(stats, path, label=""):
    """Raw vs standardized mean cosine, cross-context cosine and the raw cosine without the top-2 dimensions,
    per layer fraction (anisotropy.py), with each curve's Spearman rho where it has one."""
    a = stats["anisotropy"]
    fig, ax = _figure()
    x = _layer_fraction(stats["mean_cos"])
    for y, name in ((stats["mean_cos"], f"raw (rho {_signed(stats['spearman'])})"),
                    (a["std_cos"], f"standardized (rho {_signed(a['std_spearman'])})"),
                    (a["cross_cos"], "cross-context (different sequences)"),
                    (a["cos_without_top"]["2"], "raw without the top-2 dimensions")):
        ax.plot(x, y, marker="o", markersize=3, label=name)
    ax.set(xlabel="layer fraction l / n", ylabel="mean cosine similarity", title=f"{label}  {measured_on(stats)}")
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


NAMED_SOURCES = ("val", "wikitext") + tuple(text_sources.SOURCES)  # the authors' four: text_sources.py


def code_version():
    """The git commit of this code ('+dirty' with uncommitted changes), or 'unknown' outside a git checkout."""
    import subprocess
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if commit.returncode != 0:
        return "unknown"
    return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def write_windows(path, x, windows=None):
    """The sidecar of a measurement: every window's token ids (int32 [N, S], row i = seed i) and, for the
    authors' sources, the rows each text came from; returns the sha256 of the ids, which the JSON records."""
    import hashlib
    ids = x.numpy().astype(np.int32)
    extra = {k: np.array([w[k] for w in windows]) for k in ("start_row", "end_row", "words")} if windows else {}
    np.savez_compressed(path, input_ids=ids, seeds=np.arange(len(ids)), **extra)
    return hashlib.sha256(ids.tobytes()).hexdigest()


def condensation_path(out, source, seq_len, num):
    """The JSON file a condensation measurement writes (its figure: the same name ending in .png):
    out/condensation_<source>_S<seq_len>_N<num>.json. source: 'val', 'wikitext', a data directory or a file
    (its base name, extension dropped); seq_len: the length measured (after clipping to the block size).
    E.g. condensation_path('RUN/eval', 'val', 128, 100) = 'RUN/eval/condensation_val_S128_N100.json'."""
    name = os.path.splitext(os.path.basename(os.path.normpath(source)))[0] if source not in NAMED_SOURCES \
        else source
    name = re.sub(r"[^A-Za-z0-9.-]+", "-", name).strip("-") or "text"
    return os.path.join(out, f"condensation_{name}_S{seq_len}_N{num}.json")


# -----------------------------------------------------------------------------
# command line

# the modes: the docstring after its first line, up to the Condensation paragraph (partition never raises)
MODES = __doc__.strip().partition("\n")[2].partition("\nCondensation:")[0].strip("\n")


def build_parser():
    p = argparse.ArgumentParser(prog="eval.py", formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Measure a checkpoint or a released GPT-2 / Qwen3 model, one "
                                            "mode per command line:\n\n" + MODES)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--ckpt", help="a checkpoint written by train.py, e.g. out/ckpt.pt")
    which.add_argument("--init_from", help="released weights: gpt2..gpt2-xl, Qwen/Qwen3-0.6B.., or a local HF directory; "
                       "condensation: any transformers causal LM, or a .gguf file (hf_lm.py)")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--out", default=None, help="output directory (default: eval/ beside the checkpoint)")
    p.add_argument("--overwrite", action="store_true", help="replace a result file of another model or setting")
    g = p.add_argument_group("condensation (the default mode)")
    g.add_argument("--source", default=None, help="val (default with --ckpt: the checkpoint's dataset), "
                   "wikitext103 (default with --init_from; the authors' sampler, as are pubmed_qa, imdb, squad: "
                   "text_sources.py), wikitext (raw test split, word spans), data/NAME, or a .txt / .jsonl file")
    g.add_argument("--text_data", default=None, help="offline copies of the authors' sources: DIR/<source>/ "
                   "(python text_sources.py --download DIR)")
    g.add_argument("--include_logits_layer", action="store_true", help="the logits as one more layer (authors' option)")
    g.add_argument("--geometry", action="store_true", help="also rank, effective rank, singular-value entropy, "
                   "von Neumann entropy, top-direction energy share, diffusion spectral entropy, HFC/LFC (geometry.py)")
    g.add_argument("--anisotropy", action="store_true", help="also the standardized cosine, rogue dimensions, "
                   "cross-context anisotropy and TwoNN intrinsic dimension (anisotropy.py; one more pass first)")
    g.add_argument("--load_dtype", default="float32", choices=["float32", "auto", "bfloat16", "float16"],
                   help="--init_from: dtype of the weights (float32 as the authors; auto = the checkpoint's own)")
    g.add_argument("--device_map", default=None, help="--init_from: accelerate's device_map (auto: spread the "
                   "model over every GPU) instead of --device")
    g.add_argument("--trust_remote_code", action="store_true", help="--init_from: run a model's own code (Qwen-1)")
    g.add_argument("--num_sequences", type=int, default=100)
    g.add_argument("--seq_len", type=int, default=512, help="clipped to the model's block_size; at least 2")
    g = p.add_argument_group("tasks (lm-eval tasks, scored as lm-eval scores them)")
    g.add_argument("--tasks", "--benchmarks", dest="tasks", default=None, help="paper (the ten), all "
                   "(+ hellaswag), or a comma list such as arc_easy,mmlu,mmlu_anatomy")
    g.add_argument("--fewshot", default=None, help="paper (default: 1 shot for arc_easy, arc_challenge, medmcqa, "
                   "mmlu, else 0), an integer for those four (5 = the paper's Qwen3 setting), or task=n,...")
    g.add_argument("--limit", type=float, default=None, help="first N docs per task and per MMLU subject "
                   "(the paper: 500 for GPT-2, 200 for Qwen3); below 1.0 a fraction")
    g.add_argument("--seed", type=int, default=1234, help="few-shot sampler seed (lm-eval's default 1234)")
    g.add_argument("--tasks_data", "--bench_data", dest="tasks_data", default=None, help="offline data: "
                   "DIR/<task>/<split>.jsonl|parquet, as `python -m tasks.download --out DIR` writes it")
    g.add_argument("--batch_tokens", type=int, default=None, help="tokens per forward pass, rows x longest "
                   "(default: 16384 on a GPU, 1024 on a CPU)")
    g.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="autocast dtype of the forward pass (log-softmax is always float32)")
    g = p.add_argument_group("loss on another corpus")
    g.add_argument("--loss_data", default=None, metavar="NAME", help="data/NAME (or a token data directory): "
                   "the val loss there by train.py's rule (with --init_from: --num_sequences windows of --seq_len)")
    g = p.add_argument_group("word perplexity of whole documents (lm-eval's loglikelihood_rolling; tasks/rolling.py)")
    g.add_argument("--perplexity_data", default=None, metavar="FILE", help="a .jsonl of {\"text\": ...} lines (e.g. "
                   "data/lee_news/lee_news.jsonl) or a text file (one document): word/byte perplexity, bits per byte "
                   "(paloma_wikitext_103's metrics); --limit N: the first N documents")
    g = p.add_argument_group("compare and lm_eval")
    g.add_argument("--compare", nargs="+", metavar="JSON", help="plot condensation JSON files together, or print "
                   "one table of tasks.json files")
    g.add_argument("--lm_eval", nargs=argparse.REMAINDER, metavar="ARGS", help="first on the line: the rest is "
                   "lm-eval's own command line, with our models registered as disperse-gpt")
    return p


def load_model(args, device):
    """(model on device, checkpoint dict or None, what was measured, default output directory)."""
    if args.ckpt:
        try:
            model, ckpt = load_checkpoint(args.ckpt, device)
        except (OSError, ValueError) as e:  # missing, a directory, corrupt: load_checkpoint's one sentence
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


def condensation_sequences(source, num, model, ckpt, seq_len, text_data=None):
    """The [num, seq_len] token sequences `source` names, a short description of them for the JSON, and for the
    authors' sources the rows each window's text came from (else None)."""
    if source == "val" and ckpt is None:
        raise SystemExit("--source val reads the checkpoint's dataset; with --init_from give --source wikitext103, "
                         "a data directory (data/NAME) or a .txt / .jsonl file.")
    data_dir = checkpoint_data_dir(ckpt) if source == "val" else source
    try:
        if source == "val" or os.path.isdir(source):
            return text_sources.val_windows(data_dir, num, seq_len), f"val windows of {data_dir}", None
        hf_tokenizer = getattr(model, "tokenizer", None)  # a transformers model (hf_lm.py) brings its own
        if source in text_sources.SOURCES:  # the authors' call: tokenizer(text, truncation=True, max_length=S)
            encode = (lambda t: model.encode(t, seq_len)) if hf_tokenizer is not None else \
                (lambda t: get_tokenizer(model.config.tokenizer).encode(t)[:seq_len])
            x, windows = text_sources.windows(source, num, seq_len, encode, text_data)
            return x, text_sources.describe(source), windows
        encode = (lambda t: hf_tokenizer.encode(t, add_special_tokens=False)) if hf_tokenizer is not None else \
            get_tokenizer(model.config.tokenizer).encode
        if source == "wikitext":
            return text_sources.text_spans(text_sources.wikitext_words(), num, seq_len, encode), "/".join(text_sources.WIKITEXT), None
        if not os.path.isfile(source):
            raise SystemExit(f"--source {source} is not val, {', '.join(NAMED_SOURCES[1:])}, a data directory or "
                             f"a file.")
        return text_sources.text_spans(text_sources.read_words(source), num, seq_len, encode), source, None
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(str(e))


def print_condensation(stats):
    n = stats["n_layers"]
    print(f"{'layer':>5} {'l/n':>5} {'mean cos':>9}")
    for l, m in enumerate(stats["mean_cos"]):
        print(f"{l:>5} {l / max(n, 1):>5.2f} {m:>9.4f}")
    last = "  ".join(f"last-{k} {v:.4f}" for k, v in stats["last_n_mean"].items())
    print(f"Spearman rho {_signed(stats['spearman'])}  Kendall tau {_signed(stats['kendall'])}  {last}")
    half = stats["last_half_n"]
    print(f"last half = the last {half} of {n + 1} entries: max(1, (n_layers + 1) // 2), the authors' rule "
          f"(the one in the paper's tables): {stats['last_n_mean'][str(half)]:.4f}")
    for k, v in stats.get("geometry", {}).items():
        print(f"{k:>14}: " + " ".join(f"{x:.3g}" for x in v))
    if "anisotropy" in stats:
        print_anisotropy(stats)


def print_anisotropy(stats):
    """The per-layer table of anisotropy.py's measures beside the raw cosine."""
    a = stats["anisotropy"]
    print(f"standardized over {a['reference_tokens']} reference tokens ({a['reference']})")
    print(f"{'layer':>5} {'raw cos':>8} {'std cos':>8} {'cross':>7} {'excess':>7} {'top1':>6} {'top2':>6} "
          f"{'top5':>6} {'w/o 1':>7} {'w/o 2':>7} {'w/o 5':>7} {'TwoNN':>6} {'0-var':>5}")
    for l, m in enumerate(stats["mean_cos"]):
        d = a["twonn"][l]
        print(f"{l:>5} {m:>8.4f} {a['std_cos'][l]:>8.4f} {a['cross_cos'][l]:>7.4f} {a['within_minus_cross'][l]:>7.4f} "
              + " ".join(f"{a['rogue_share'][k][l]:>6.3f}" for k in ("1", "2", "5")) + " "
              + " ".join(f"{a['cos_without_top'][k][l]:>7.4f}" for k in ("1", "2", "5"))
              + f" {d if d is None else round(d, 1)!s:>6} {a['zero_variance_dims'][l]:>5}")
    print(f"raw:          Spearman rho {_signed(stats['spearman'])}  Kendall tau {_signed(stats['kendall'])}")
    print(f"standardized: Spearman rho {_signed(a['std_spearman'])}  Kendall tau {_signed(a['std_kendall'])}")
    print("cross = mean cosine between tokens of different sequences; excess = within-sequence (off-diagonal) "
          "minus cross; topk = share of the squared norm in the k largest dimensions; w/o k = raw cosine without "
          "them; 0-var = dimensions constant over the reference (standardized to 0)")
    if a.get("twonn_note"):
        print(f"TwoNN None: {a['twonn_note']}")


def condensation_main(args):
    if args.seq_len < 2 or args.num_sequences < 1:  # before any model is loaded
        raise SystemExit(f"Condensation needs --seq_len >= 2 (the cosine matrix of one token is the constant 1) "
                         f"and --num_sequences >= 1; got {args.seq_len} and {args.num_sequences}.")
    if args.include_logits_layer and not args.init_from:
        raise SystemExit("--include_logits_layer is for --init_from models; export a checkpoint with "
                         "`python eval.py --export_hf CKPT DIR` and measure DIR.")
    source = args.source or ("wikitext103" if args.init_from else "val")
    if source in text_sources.SOURCES:  # a missing dataset is found before any weight is loaded
        try:
            text_sources.load_rows(source, args.text_data)
        except ValueError as e:
            raise SystemExit(str(e))
    device = resolve_device(args.device)
    if args.init_from:  # any causal LM, through transformers' own hidden states (hf_lm.py)
        import hf_lm
        model, ckpt, name = hf_lm.load(args.init_from, args.seq_len, args.load_dtype, device, args.device_map,
                                       args.include_logits_layer, args.trust_remote_code), None, args.init_from
        default_out = os.path.join("eval", os.path.basename(os.path.normpath(args.init_from)))
    else:
        model, ckpt, name, default_out = load_model(args, device)
    seq_len = args.seq_len
    if seq_len > model.config.block_size:
        print(f"seq_len {seq_len} is longer than the model's block_size; using {model.config.block_size}.")
        seq_len = model.config.block_size
    path = condensation_path(args.out or default_out, source, seq_len, args.num_sequences)
    if args.include_logits_layer:  # another measurement (one more layer): another file
        path = path[:-len(".json")] + "_logits.json"
    if os.path.exists(path) and not args.overwrite:  # the same setting of another model: never replaced silently
        old = load_json_or_exit(path)
        if old.get("model") != name:
            raise SystemExit(f"{path} holds the measurement of {old.get('model')}, not {name}; give another --out "
                             f"directory or --overwrite.")
    x, description, windows = condensation_sequences(source, args.num_sequences, model, ckpt, seq_len,
                                                      args.text_data)
    print(f"condensation of {name}: {len(x)} sequences of {seq_len} tokens from {description}")
    try:
        stats = condensation(model, x, args.batch_size, device, progress=True, geometry=args.geometry,
                             anisotropy=args.anisotropy)
    except ValueError as e:  # e.g. a model that gives no hidden states: one sentence, nothing written
        raise SystemExit(str(e))
    # provenance: enough to recompute the numbers independently (the windows' ids are in the sidecar)
    sidecar = path[:-len(".json")] + ".windows.npz"
    stats.update(source=description, source_name=source, model=name, seeds=[0, len(x) - 1],
                 code_version=code_version(), logits_layer=bool(args.include_logits_layer),
                 n_params=sum(p.numel() for p in model.parameters()),
                 last_half_rule="max(1, (n_layers + 1) // 2) entries, as the authors' tables")
    if args.init_from:
        import hf_lm
        stats.update(hf_lm.provenance(model), load_dtype=args.load_dtype)
    print_condensation(stats)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    stats.update(windows_file=os.path.basename(sidecar), windows_sha256=write_windows(sidecar, x, windows))
    with open(path, "w") as f:
        json.dump(_finite(stats), f, indent=1)
    png = path[:-len(".json")] + ".png"
    plot_condensation(stats, png, name if len(name) <= 48 else "..." + name[-45:])
    if "anisotropy" in stats:
        plot_anisotropy(stats, path[:-len(".json")] + "_anisotropy.png", name if len(name) <= 48 else "..." + name[-45:])
    print(f"wrote {path}, {os.path.basename(png)} and {os.path.basename(sidecar)} (the token ids of every window)")
    return path


def resolve_device(device):
    """--device (default: cuda if available, else cpu) made current; under torchrun each process its own GPU,
    documents sharded across the processes (hardware.py)."""
    if device and hardware.device_problem(device):
        raise SystemExit(hardware.device_problem(device))
    env = hardware.torchrun_env()
    return hardware.resolve_device(device or "auto", env[1] if env else None)


def tasks_main(args):
    try:  # a typo in the task list should not cost a model load
        resolve_fewshot(args.fewshot, resolve_tasks(args.tasks))
    except ValueError as e:
        raise SystemExit(str(e))
    device = resolve_device(args.device)
    hardware.init_distributed(device)
    model, ckpt, name, default_out = load_model(args, device)
    tokenizer = get_tokenizer(model.config.tokenizer)
    autocast = hardware.autocast(args.dtype, device)
    try:
        results = run_benchmarks(model, tokenizer, args.tasks, args.limit, args.fewshot, args.seed,
                                 args.tasks_data, args.batch_tokens, autocast)
        if not results["tasks"]:  # every rank sees the same gathered results: all exit non-zero together
            raise ValueError("No task could run, so nothing was written (see the sentences above).")
        if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
            out = args.out or default_out
            if args.overwrite and os.path.exists(os.path.join(out, "tasks.json")):
                os.remove(os.path.join(out, "tasks.json"))
            paths = write_results(results, out, name)
            print(results_table([(name, results)]))
            print(f"wrote {paths[0]} and {os.path.basename(paths[1])}")
    except (ValueError, FileExistsError) as e:
        raise SystemExit(str(e))
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def load_json_or_exit(path):
    try:
        return load_json(path)
    except ValueError as e:
        raise SystemExit(str(e))


def compare_main(args):
    """Task results: one table printed. Condensation: one figure, beside the first file; returns the figure."""
    runs = [(path, load_json_or_exit(path)) for path in args.compare]
    kinds = ["tasks" if "tasks" in r else "condensation" if "mean_cos" in r else None for _, r in runs]
    if None in kinds or len(set(kinds)) > 1:
        raise SystemExit("--compare takes either condensation JSON files or tasks.json files written by eval.py, "
                         f"not {', '.join(p for p, k in zip(args.compare, kinds) if k != kinds[0] or k is None)}.")
    if kinds[0] == "tasks":
        return print(compare_results(runs))
    settings = {(s.get("source"), s.get("seq_len")) for _, s in runs}
    if len(settings) > 1:
        print("warning: these runs were measured on different sources or lengths (" +
              "; ".join(f"{p}: {measured_on(s)}" for p, s in runs) + "), so their curves differ for that reason too.")
    names = [s.get("model", p) for p, s in runs]
    unique = len(set(names)) == len(names)  # two runs of one model are told apart by their file paths
    out = args.out or os.path.dirname(os.path.abspath(args.compare[0]))
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "condensation_compare.png")
    fig = plot_compare([(name if unique else p, s) for name, (p, s) in zip(names, runs)], path)
    print(f"wrote {path}")
    return fig


# -----------------------------------------------------------------------------
# loss on another corpus, by train.py's val-loss rule

def loss_path(out, data):
    """out/loss_<NAME>.json for the data directory data/NAME (or any data directory: its base name)."""
    return os.path.join(out, f"loss_{os.path.basename(os.path.normpath(data))}.json")


@torch.no_grad()
def loss_main(args):
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    data_dir = args.loss_data if os.path.isdir(args.loss_data) else os.path.join(DATA_ROOT, args.loss_data)
    if not os.path.isdir(data_dir):
        raise SystemExit(f"No token data at {data_dir}: prepare it first (python data/{args.loss_data}/prepare.py).")
    model, ckpt, name, default_out = load_model(args, device)
    meta = load_meta(data_dir)
    if not tokens_match(model.config.tokenizer, meta):
        raise SystemExit(f"{data_dir} is tokenised with '{meta['tokenizer']}' but {name} reads tokens of "
                         f"'{model.config.tokenizer}': prepare the data with --tokenizer {model.config.tokenizer}.")
    config = (ckpt or {}).get("config") or {}
    if config:  # the checkpoint's own rule: the windows its val loss was measured on, in number and length
        block_size, num = config["block_size"], config["eval_iters"] * config["batch_size"]
    else:
        block_size, num = min(args.seq_len, model.config.block_size), args.num_sequences
    dtype = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    autocast = torch.autocast(device.split(":")[0], dtype, enabled=dtype is not None)  # float32: none

    def batch_loss(x, y):
        with autocast:
            return model(x, y)[1]
    try:  # the mean over windows of each window's mean token loss, as train.py's val loss
        starts = fixed_starts(len(load_split(data_dir, "val")), block_size, num)
        loss = window_loss(batch_loss, data_dir, "val", starts, args.batch_size, block_size, device,
                           model.config.vocab_size)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(str(e))
    path = loss_path(args.out or default_out, data_dir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    result = {"model": name, "data": data_dir, "split": "val", "loss": loss, "windows": num, "block_size": block_size,
              "dtype": args.dtype}
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(f"loss of {name} on {num} windows of {block_size} tokens of {data_dir}: {loss:.4f}; wrote {path}")
    return path


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--lm_eval"]:  # the rest is lm-eval's own command line
        hub_offline()
        return lm_eval_adapter.cli(argv[1:])
    if argv[:1] == ["--export_hf"]:  # python eval.py --export_hf out/ckpt.pt DIR: a transformers directory
        from hf_convert import export_hf
        return export_hf(*argv[1:]) if len(argv) == 3 else sys.exit("Usage: python eval.py --export_hf CKPT DIR")
    args = build_parser().parse_args(argv)
    if args.lm_eval is not None:
        raise SystemExit("--lm_eval comes first: python eval.py --lm_eval run --model disperse-gpt ...")
    if args.compare:
        return compare_main(args)
    hub_offline()  # found once, before any model or data load: offline, the hub libraries then fail at once
    if args.tasks:
        return tasks_main(args)
    if args.loss_data:
        return loss_main(args)
    if args.perplexity_data:
        return perplexity_main(args, load_model, resolve_device)
    return condensation_main(args)


if __name__ == "__main__":
    main()
