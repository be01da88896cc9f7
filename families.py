"""
families.py: condensation across released models, as arXiv 2602.00217 shows it (Fig. 2: rho and tau against
model size per family; Fig. 5: base models against their distilled versions; the authors' family tables).

    python families.py plan                                  # every model of Fig. 2 / Fig. 5: memory and compute
    python families.py run fig2 --out eval/fig2 [-- EVAL ARGS]   # measure each (eval.py --init_from), then plot
    python families.py run fig5 --out eval/fig5 [-- EVAL ARGS]
    python families.py family A.json B.json ... --out DIR    # family figure + tables from any result files
    python families.py paired BASE.json:OTHER.json ... --out DIR   # base vs distilled (or CE vs dispersion)

Reads the JSON files eval.py writes (condensation_*.json). A result's family is the Fig. 2 family its model is
listed in, else its transformers model_type (else "ours"); its size is the parameter count the result records
(n_params). The table has the authors' rows (their key_observations/cossim_family_tables.py): mean of the last
n = 1..5 entries of the per-layer mean cosine, of the last half (n = max(1, L // 2) of the L entries), Spearman
rho and Kendall tau against depth; columns are the family's models from small to large.
"""

import argparse
import json
import os
import sys

import numpy as np

FIG2 = {  # the families of the paper's Fig. 2 (the authors' lists), small to large
    "gpt2": ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"],
    "qwen1": ["Qwen/Qwen-1_8B", "Qwen/Qwen-7B", "Qwen/Qwen-14B", "Qwen/Qwen-72B"],
    "qwen2.5": ["Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-1.5B", "Qwen/Qwen2.5-3B", "Qwen/Qwen2.5-7B", "Qwen/Qwen2.5-14B",
                "Qwen/Qwen2.5-32B", "Qwen/Qwen2.5-72B"],
    "qwen3": ["Qwen/Qwen3-0.6B", "Qwen/Qwen3-1.7B", "Qwen/Qwen3-4B", "Qwen/Qwen3-8B", "Qwen/Qwen3-14B",
              "Qwen/Qwen3-32B"],
    "bloom": ["bigscience/bloom-560m", "bigscience/bloom-1b1", "bigscience/bloom-1b7", "bigscience/bloom-3b",
              "bigscience/bloom-7b1"],
}
FIG5 = [  # (base, distilled by others from DeepSeek-R1's outputs)
    ("Qwen/Qwen2.5-Math-1.5B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"),
    ("Qwen/Qwen2.5-Math-7B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"),
    ("Qwen/Qwen2.5-14B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B"),
    ("Qwen/Qwen2.5-32B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"),
]
# parameters in billions as the model cards state them (for `plan` only; results record their own count)
NOMINAL_B = {"gpt2": 0.124, "gpt2-medium": 0.355, "gpt2-large": 0.774, "gpt2-xl": 1.558, "Qwen-1_8B": 1.8,
             "Qwen-7B": 7.7, "Qwen-14B": 14.2, "Qwen-72B": 72.3, "Qwen2.5-0.5B": 0.49, "Qwen2.5-1.5B": 1.54,
             "Qwen2.5-3B": 3.09, "Qwen2.5-7B": 7.61, "Qwen2.5-14B": 14.7, "Qwen2.5-32B": 32.5, "Qwen2.5-72B": 72.7,
             "Qwen3-0.6B": 0.6, "Qwen3-1.7B": 1.7, "Qwen3-4B": 4.0, "Qwen3-8B": 8.2, "Qwen3-14B": 14.8,
             "Qwen3-32B": 32.8, "bloom-560m": 0.56, "bloom-1b1": 1.07, "bloom-1b7": 1.72, "bloom-3b": 3.0,
             "bloom-7b1": 7.07, "Qwen2.5-Math-1.5B": 1.54, "Qwen2.5-Math-7B": 7.62,
             "DeepSeek-R1-Distill-Qwen-1.5B": 1.78, "DeepSeek-R1-Distill-Qwen-7B": 7.62,
             "DeepSeek-R1-Distill-Qwen-14B": 14.8, "DeepSeek-R1-Distill-Qwen-32B": 32.8}
TOKENS = 100 * 512  # the paper's measurement: 100 windows of 512 tokens


def short(model):
    return os.path.basename(os.path.normpath(model))


def family_of(stats):
    for fam, models in FIG2.items():
        if stats.get("model") in models or short(stats.get("model", "")) in map(short, models):
            return fam
    return stats.get("model_type") or "ours"


def load(paths):
    out = []
    for p in paths:
        try:
            with open(p) as f:
                stats = json.load(f)
        except (OSError, ValueError) as e:
            raise SystemExit(f"{p} is not a readable result file ({type(e).__name__}).")
        if "mean_cos" not in stats:
            raise SystemExit(f"{p} is not a condensation result of eval.py (no mean_cos).")
        out.append(stats)
    return out


def table_rows(stats):
    """The authors' rows for one result: last 1..5 means, last-half mean, Spearman, Kendall."""
    m = np.asarray(stats["mean_cos"], dtype=np.float64)
    L = len(m)
    rows = {f"last {n} mean": float(m[-min(n, L):].mean()) for n in range(1, 6)}
    rows["last half mean"] = float(m[-max(1, L // 2):].mean())
    rows["spearman"], rows["kendall tau"] = stats.get("spearman"), stats.get("kendall")
    return rows


def _cell(v):
    return "-" if v is None or v != v else f"{v:.4f}"


def family_tables(results):
    """Markdown: one table per family, its models (small to large) as columns, the authors' rows."""
    fams = {}
    for s in results:
        fams.setdefault(family_of(s), []).append(s)
    md = []
    for fam, rs in fams.items():
        rs = sorted(rs, key=lambda s: s.get("n_params") or 0)
        cols = [table_rows(s) for s in rs]
        md += [f"### {fam}", "", "| metric | " + " | ".join(short(s["model"]) for s in rs) + " |",
               "|---" * (len(rs) + 1) + "|"]
        md += [f"| {row} | " + " | ".join(_cell(c[row]) for c in cols) + " |" for row in cols[0]]
        md.append("")
    half = "last half = the last max(1, L // 2) of the L = n_layers + 1 entries (the authors' tables)"
    return "\n".join(md + [half, ""])


STATISTICS = (("spearman", "Spearman rho"), ("kendall", "Kendall tau"))


def _statistic(s, key):
    return np.nan if s.get(key) is None else s[key]


def _plot_statistics(draw, title, path):
    """One panel per statistic (rho, tau): draw(ax, key) fills it; the shared frame (-1..1, a zero line, a legend)
    and the file are done here."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(5.2 * len(STATISTICS), 4.0))
    for i, (key, name) in enumerate(STATISTICS):
        ax = fig.add_subplot(1, len(STATISTICS), i + 1)
        draw(ax, key)
        ax.set(ylabel=name, ylim=(-1.05, 1.05))
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def plot_family(results, path):
    """rho and tau against the parameter count (log scale), one line per family."""
    fams = {}
    for s in results:
        fams.setdefault(family_of(s), []).append(s)

    def draw(ax, key):
        for fam, rs in fams.items():
            rs = sorted(rs, key=lambda s: s.get("n_params") or 0)
            ax.plot([s.get("n_params") or np.nan for s in rs], [_statistic(s, key) for s in rs], marker="o", label=fam)
        ax.set(xscale="log", xlabel="parameters")
    return _plot_statistics(draw, "condensation against model size (arXiv 2602.00217 Fig. 2)", path)


def plot_paired(pairs, path):
    """Each pair (base, other): rho and tau of both, joined by a dashed line (Fig. 5's layout)."""
    x = np.arange(len(pairs))

    def draw(ax, key):
        base, other = [_statistic(a, key) for a, _ in pairs], [_statistic(b, key) for _, b in pairs]
        for i in x:
            ax.plot([i, i + 0.3], [base[i], other[i]], color="grey", linestyle="--", linewidth=1)
        ax.plot(x, base, "o", label="base")
        ax.plot(x + 0.3, other, "s", label="distilled / other")
        ax.set_xticks(x + 0.15)
        ax.set_xticklabels([f"{short(a['model'])}\nvs {short(b['model'])}" for a, b in pairs], fontsize=6)
    return _plot_statistics(draw, "base vs distilled (arXiv 2602.00217 Fig. 5)", path)


def write_family(paths, out):
    results = load(paths)
    os.makedirs(out, exist_ok=True)
    plot_family(results, os.path.join(out, "families.png"))
    md = family_tables(results)
    with open(os.path.join(out, "families.md"), "w") as f:
        f.write(md)
    print(md)
    print(f"wrote {os.path.join(out, 'families.png')} and families.md")


def write_paired(specs, out):
    pairs = []
    for spec in specs:
        if spec.count(":") != 1:
            raise SystemExit(f"{spec}: give each pair as BASE.json:OTHER.json.")
        pairs.append(tuple(load(spec.split(":"))))
    os.makedirs(out, exist_ok=True)
    plot_paired(pairs, os.path.join(out, "paired.png"))
    md = family_tables([s for p in pairs for s in p])
    with open(os.path.join(out, "paired.md"), "w") as f:
        f.write(md)
    print(md)
    print(f"wrote {os.path.join(out, 'paired.png')} and paired.md")


def plan():
    """Memory for the weights (bf16: 2 bytes per parameter, float32: 4) and forward compute of the measurement."""
    print(f"{'model':<44} {'params':>7} {'bf16 GB':>8} {'fp32 GB':>8} {'PFLOP':>6} {'H100 s':>7}")
    models = [m for ms in FIG2.values() for m in ms] + [m for p in FIG5 for m in p]
    for m in dict.fromkeys(models):
        b = NOMINAL_B[short(m)]
        flop = 2 * b * 1e9 * TOKENS  # forward: 2 FLOPs per parameter per token (attention at S = 512: a few %)
        # one H100 at 40% of its 989 TFLOPS dense bf16 peak; fp32 runs several times slower
        print(f"{m:<44} {b:>6.2f}B {2 * b:>8.1f} {4 * b:>8.1f} {flop / 1e15:>6.1f} {flop / (0.4 * 989e12):>7.0f}")
    print(f"(tokens: {TOKENS} = 100 windows x 512; a GPU needs the weights plus about 1-2 GB of activations; "
          f"Qwen-1 needs --trust_remote_code and tiktoken)")


def run(fig, out, eval_args):
    """Measure every model of the figure that has no result yet in out/<model>/, then plot and tabulate."""
    import eval as ev
    models = [m for ms in FIG2.values() for m in ms] if fig == "fig2" else [m for p in FIG5 for m in p]
    paths = {}
    for m in models:
        extra = ["--trust_remote_code"] if m.startswith("Qwen/Qwen-") else []
        d = os.path.join(out, short(m))
        found = [f for f in sorted(os.listdir(d)) if f.startswith("condensation_") and f.endswith(".json")] \
            if os.path.isdir(d) else []
        paths[m] = os.path.join(d, found[0]) if found else ev.main(["--init_from", m, "--out", d] + extra + eval_args)
    if fig == "fig2":
        write_family(list(paths.values()), out)
    else:
        write_paired([f"{paths[a]}:{paths[b]}" for a, b in FIG5], out)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    eval_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(prog="families.py", description=__doc__.split("\n\n")[0].strip(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["plan", "run", "family", "paired"])
    p.add_argument("items", nargs="*", help="run: fig2 or fig5; family: result files; paired: BASE.json:OTHER.json")
    p.add_argument("--out", default="eval/families")
    args = p.parse_args(argv)
    if args.what == "plan":
        return plan()
    if not args.items:
        raise SystemExit(f"families.py {args.what} needs {'fig2 or fig5' if args.what == 'run' else 'result files'}.")
    if args.what == "run":
        if args.items[0] not in ("fig2", "fig5"):
            raise SystemExit("families.py run takes fig2 or fig5.")
        return run(args.items[0], args.out, eval_args)
    return (write_family if args.what == "family" else write_paired)(args.items, args.out)


if __name__ == "__main__":
    main()
