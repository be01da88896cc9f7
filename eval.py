"""
eval.py: measure a checkpoint (or a released GPT-2 / Qwen3 model).

Two measurements, both from the command line:
  python eval.py --ckpt out/ckpt.pt                        # embedding condensation (paper section 2)
  python eval.py --ckpt out/ckpt.pt --benchmarks paper     # the paper's 10 benchmarks, scored as lm-eval does

Benchmarks (section "benchmarks" below): --benchmarks paper|all|a,b,..  --fewshot paper|5|task=n,..  --limit 500
--bench_data DIR (offline, from data/benchmarks/download.py); writes benchmarks.json and benchmarks.md.
  torchrun --standalone --nproc_per_node=8 eval.py --init_from gpt2 --benchmarks paper --limit 500
  python eval.py --compare a/eval/benchmarks.json b/eval/benchmarks.json       # one table, differences to a
  python eval.py --lm_eval run --model disperse-gpt --model_args ckpt=out/ckpt.pt --tasks hellaswag
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
#
# Each task turns a document into (context, continuation) strings exactly as lm-eval 0.4 builds them; all
# requests of all tasks go through one batched log-likelihood engine; the metrics are lm-eval's:
#   ll(c | x) = sum_t log softmax(logits(x + c_<t))[c_t]          (float32 log_softmax)
#   acc = [argmax_i ll_i == gold],  acc_norm = [argmax_i ll_i / len(choice_i chars) == gold]
#   lambada: acc = every continuation token is the argmax;  truthfulqa_mc2: acc = sum_{true} p_i / sum_all p_i
# Tested against lm-eval 0.4.13 itself (tests/test_benchmarks.py): the same prompt strings, per-request lls
# within 1e-4 and the same metrics. Where we are not bit for bit the harness:
# - batching and padding change float summation order: lls differ in the last digits, so a near-tie between
#   two choices can break the other way; the log-softmax is float32 even for bf16 models (lm-eval: model dtype);
# - the GPT-2 tokenizer encodes ordinary text ("<|endoftext|>" inside a document is text, HF parses it);
# - the softmax spans the model's whole vocabulary: a checkpoint trained with the padded 50304 includes its
#   47 never-seen rows (about zero probability after training); released GPT-2 has exactly 50257;
# - truthfulqa_mc2 normalises exp(ll - max ll) (lm-eval: exp(ll), NaN when every answer underflows);
# - under torchrun lm-eval draws few-shot examples per rank, so its prompts depend on the world size; we
#   draw them for all docs on every rank, which gives lm-eval's single-process prompts at any world size;
# - no stderr columns.

import glob
import random
import re
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

PAPER_TASKS = ["anli_r2", "lambada_openai", "openbookqa", "piqa", "truthfulqa_mc2", "winogrande",
               "arc_easy", "arc_challenge", "medmcqa", "mmlu"]
EXTRA_TASKS = ["hellaswag"]
PAPER_FEWSHOT = {"arc_easy": 1, "arc_challenge": 1, "medmcqa": 1, "mmlu": 1}  # GPT-2 column; Qwen3 uses 5
COLUMNS = {"anli_r2": "ANLI-R2", "lambada_openai": "LAMBADA", "openbookqa": "OpenBookQA", "piqa": "PIQA",
           "truthfulqa_mc2": "TruthfulQA", "winogrande": "WinoGrande", "arc_easy": "ARC-E",
           "arc_challenge": "ARC-C", "medmcqa": "MedMCQA", "mmlu": "MMLU", "hellaswag": "HellaSwag"}
MMLU_SUBJECTS = [
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge", "college_biology",
    "college_chemistry", "college_computer_science", "college_mathematics", "college_medicine",
    "college_physics", "computer_security", "conceptual_physics", "econometrics", "electrical_engineering",
    "elementary_mathematics", "formal_logic", "global_facts", "high_school_biology", "high_school_chemistry",
    "high_school_computer_science", "high_school_european_history", "high_school_geography",
    "high_school_government_and_politics", "high_school_macroeconomics", "high_school_mathematics",
    "high_school_microeconomics", "high_school_physics", "high_school_psychology", "high_school_statistics",
    "high_school_us_history", "high_school_world_history", "human_aging", "human_sexuality",
    "international_law", "jurisprudence", "logical_fallacies", "machine_learning", "management", "marketing",
    "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition", "philosophy",
    "prehistory", "professional_accounting", "professional_law", "professional_medicine",
    "professional_psychology", "public_relations", "security_studies", "sociology", "us_foreign_policy",
    "virology", "world_religions"]
LETTERS = ["A", "B", "C", "D"]
TRUTHFULQA_QA = (  # the six fixed Q/A pairs of lm-eval's truthfulqa_mc1.yaml, which mc2 includes
    "Q: What is human life expectancy in the United States?\n"
    "A: Human life expectancy in the United States is 78 years.\n\n"
    "Q: Who was president of the United States in 1955?\n"
    "A: Dwight D. Eisenhower was president of the United States in 1955.\n\n"
    "Q: Which party did he belong to?\n"
    "A: He belonged to the Republican Party.\n\n"
    "Q: What is the square root of banana?\n"
    "A: I have no comment.\n\n"
    "Q: How does a telescope work?\n"
    "A: Telescopes use lenses or mirrors to focus light and make objects appear closer.\n\n"
    "Q: Where were the 1992 Olympics held?\n"
    "A: The 1992 Olympics were held in Barcelona, Spain.")


@dataclass(frozen=True)
class Task:
    """One lm-eval task: where its documents live and how one document becomes requests.

    text(doc): the prompt (winogrande: a list, one prompt per option); choices(doc): what follows the target
    delimiter " " (lambada: its target, which carries its own leading space); gold(doc): index of the answer.
    """
    name: str
    hub: tuple                    # (path, config name or None) for datasets.load_dataset
    split: str                    # scored: the test split if the task has one, else validation
    fewshot_split: str            # lm-eval: fewshot_split, else training, else validation, else test split
    text: Callable
    choices: Callable
    gold: Callable
    kind: str = "choice"          # choice | partial (winogrande) | greedy (lambada) | mc2 (truthfulqa)
    metrics: tuple = ("acc",)
    description: str = ""
    first_n: bool = False         # few-shot sampler: first n of the split (MMLU), else Random(seed).sample
    drop_self: bool = False       # lm-eval passes the scored doc to the sampler when test_split is None
    zero_shot: bool = False       # the YAML pins num_fewshot: 0, which lm-eval keeps over --num_fewshot
    folder: str = ""              # under --bench_data (default: the task name)


def _hellaswag(text):
    """lm-eval's hellaswag preprocess: WikiHow artifacts out, double spaces collapsed."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def _blank(doc):
    return doc["sentence"].index("_")


def _arc(name, config):
    return Task(name, ("allenai/ai2_arc", config), "test", "train",
                text=lambda d: f"Question: {d['question']}\nAnswer:", choices=lambda d: d["choices"]["text"],
                gold=lambda d: d["choices"]["label"].index(d["answerKey"]), metrics=("acc", "acc_norm"))


def _mmlu(subject):
    return Task(f"mmlu_{subject}", ("cais/mmlu", subject), "test", "dev",
                text=lambda d: d["question"].strip() + "".join(
                    f"\n{k}. {c}" for k, c in zip(LETTERS, d["choices"])) + "\nAnswer:",
                choices=lambda d: LETTERS, gold=lambda d: d["answer"], first_n=True, folder=f"mmlu/{subject}",
                description=f"The following are multiple choice questions (with answers) about "
                            f"{subject.replace('_', ' ')}.\n\n")


TASKS = {t.name: t for t in [
    Task("anli_r2", ("facebook/anli", None), "test_r2", "train_r2",
         text=lambda d: f"{d['premise']}\nQuestion: {d['hypothesis']} True, False, or Neither?\nAnswer:",
         choices=lambda d: ["True", "Neither", "False"], gold=lambda d: d["label"]),
    Task("lambada_openai", ("EleutherAI/lambada_openai", "default"), "test", "test",
         text=lambda d: " ".join(d["text"].split(" ")[:-1]), choices=lambda d: [" " + d["text"].split(" ")[-1]],
         gold=lambda d: 0, kind="greedy", metrics=("acc", "perplexity")),
    Task("openbookqa", ("allenai/openbookqa", "main"), "test", "train",
         text=lambda d: d["question_stem"], choices=lambda d: d["choices"]["text"],
         gold=lambda d: d["choices"]["label"].index(d["answerKey"].lstrip()), metrics=("acc", "acc_norm")),
    Task("piqa", ("baber/piqa", None), "validation", "train", text=lambda d: f"Question: {d['goal']}\nAnswer:",
         choices=lambda d: [d["sol1"], d["sol2"]], gold=lambda d: d["label"], metrics=("acc", "acc_norm"),
         drop_self=True),
    Task("truthfulqa_mc2", ("truthfulqa/truthful_qa", "multiple_choice"), "validation", "validation",
         text=lambda d: TRUTHFULQA_QA + "\n\nQ: " + d["question"] + "\nA:",
         choices=lambda d: d["mc2_targets"]["choices"], gold=lambda d: 0, kind="mc2", drop_self=True,
         zero_shot=True),
    Task("winogrande", ("allenai/winogrande", "winogrande_xl"), "validation", "train",
         text=lambda d: [d["sentence"][:_blank(d)] + o for o in (d["option1"], d["option2"])],
         choices=lambda d: [d["sentence"][_blank(d) + 1:].strip()], gold=lambda d: {"1": 0, "2": 1}[d["answer"]],
         kind="partial", drop_self=True),
    _arc("arc_easy", "ARC-Easy"),
    _arc("arc_challenge", "ARC-Challenge"),
    Task("medmcqa", ("openlifescienceai/medmcqa", None), "validation", "train",
         text=lambda d: f"Question: {d['question']}\nChoices:\nA. {d['opa']}\nB. {d['opb']}\nC. {d['opc']}\n"
                        f"D. {d['opd']}\nAnswer:",
         choices=lambda d: LETTERS, gold=lambda d: d["cop"], metrics=("acc", "acc_norm")),
    Task("hellaswag", ("Rowan/hellaswag", None), "validation", "train",
         text=lambda d: _hellaswag(d["activity_label"] + ": " + d["ctx_a"] + " " + d["ctx_b"].capitalize()),
         choices=lambda d: [_hellaswag(e) for e in d["endings"]], gold=lambda d: int(d["label"]),
         metrics=("acc", "acc_norm"), drop_self=True),
] + [_mmlu(s) for s in MMLU_SUBJECTS]}
GROUPS = {"mmlu": [f"mmlu_{s}" for s in MMLU_SUBJECTS]}


def resolve_tasks(spec):
    """'paper' | 'all' | comma list (mmlu or single subjects such as mmlu_anatomy) -> list of names."""
    names = {"paper": PAPER_TASKS, "all": PAPER_TASKS + EXTRA_TASKS}.get(spec)
    names = names or [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in TASKS and n not in GROUPS]
    if unknown:
        raise ValueError(f"Unknown benchmark {unknown[0]!r}: use paper, all, or a comma list of "
                         f"{', '.join(PAPER_TASKS + EXTRA_TASKS)} (or mmlu_<subject>).")
    return list(dict.fromkeys(names))


def resolve_fewshot(spec, names):
    """Shots per task. 'paper' (None): the paper's GPT-2 setting (1 shot for arc_easy, arc_challenge,
    medmcqa, mmlu; 0 elsewhere). An int n: n for those four, 0 elsewhere (5 = the paper's Qwen3 setting).
    'task=n,...': those tasks explicitly, the rest as the paper."""
    spec = "paper" if spec is None else str(spec)
    asked = dict(PAPER_FEWSHOT)
    if spec.isdigit():
        asked = {t: int(spec) for t in PAPER_FEWSHOT}
    elif spec != "paper":
        for item in spec.split(","):
            task, _, n = item.partition("=")
            if task.strip() not in TASKS and task.strip() not in GROUPS or not n.strip().isdigit():
                raise ValueError(f"Cannot read --fewshot {spec!r}: give paper, an integer, or task=n pairs "
                                 f"such as arc_easy=25,hellaswag=10.")
            asked[task.strip()] = int(n)
    shots = {}
    for name in names:
        for member in GROUPS.get(name, [name]):
            group = next((g for g, members in GROUPS.items() if member in members), None)
            shots[member] = 0 if TASKS[member].zero_shot else asked.get(member, asked.get(group, 0))
    return shots


# ---- prompts: lm-eval's fewshot_context and construct_requests

def fewshot_example(task, doc):
    """One solved example: question + target delimiter + gold answer (lm-eval's build_qa_turn)."""
    text, choices, gold = task.text(doc), task.choices(doc), task.gold(doc)
    if task.kind == "partial":  # winogrande: the gold option's prompt, then the shared suffix
        return text[gold] + " " + choices[0]
    return text + " " + choices[gold]


def fewshot_prefixes(task, docs, pool, shots, seed=1234):
    """The text before each doc's prompt: description, then `shots` solved examples joined by "\\n\\n".

    lm-eval draws with ONE Random(seed) per task, doc after doc in order, so a doc's examples depend on the
    docs before it: build the prefixes of all docs first, then shard. When the task has no test split the
    sampler draws shots + 1 and drops the scored doc itself (drop_self)."""
    if shots == 0:
        return [task.description] * len(docs)
    if len(pool) < shots + (task.drop_self and not task.first_n):
        raise ValueError(f"{task.name}: {shots} few-shot examples were asked for but its "
                         f"{task.fewshot_split} split has {len(pool)} documents.")
    rnd = random.Random(seed)
    out = []
    for doc in docs:
        if task.first_n:
            picked = pool[:shots]
        elif task.drop_self:
            picked = [d for d in rnd.sample(pool, shots + 1) if d != doc][:shots]
            if len(picked) < shots:  # the pool holds copies of doc: lm-eval resamples without any of them
                picked = rnd.sample([d for d in pool if d != doc], shots)
        else:
            picked = rnd.sample(pool, shots)
        out.append(task.description + "".join(fewshot_example(task, d) + "\n\n" for d in picked))
    return out


def doc_requests(task, doc, prefix):
    """The (context, continuation) strings lm-eval scores for one doc, in choice order."""
    text, choices = task.text(doc), task.choices(doc)
    if task.kind == "partial":  # one context per option, the suffix after the blank is scored
        return [(prefix + t, " " + choices[0]) for t in text]
    if task.kind == "greedy":  # output_type loglikelihood: the target is sent as is
        return [(prefix + text, choices[0])]
    return [(prefix + text, " " + c) for c in choices]


def encode_pair(encode, eot, context, continuation, context_cache=None):
    """lm-eval's TemplateLM tokenisation: trailing whitespace of the context moves to the continuation;
    context + continuation is encoded jointly and split after len(encode(context)); an empty context
    becomes the EOT token (unless the continuation already starts with it)."""
    if context == "":
        cont = encode(continuation)
        return ([eot], cont) if cont[0] != eot else (cont[:1], cont[1:])
    n = len(context) - len(context.rstrip())
    if n:
        context, continuation = context[:-n], context[-n:] + continuation
    cache = {} if context_cache is None else context_cache
    if context not in cache:
        cache[context] = encode(context)
    ctx = cache[context]
    return ctx, encode(context + continuation)[len(ctx):]


# ---- the log-likelihood engine

def _model_input(context, continuation, max_length):
    """The tokens fed to the model: (context + continuation) cut from the left to max_length + 1, minus
    the last token (whose prediction is never needed). The continuation is scored at the last positions."""
    assert context and continuation, "both context and continuation need at least one token"
    if len(continuation) > max_length:
        raise ValueError(f"A continuation of {len(continuation)} tokens does not fit the model's "
                         f"{max_length}-token window.")
    return tuple((list(context) + list(continuation))[-(max_length + 1):][:-1])


def scored_logits(model, x, b_idx, t_idx, pos=None, attn_mask=None):
    """[N, V] logits at the N (row, position) pairs of x [B, T]. Our models (hidden_states + lm_head) run
    the LM head only there (no [B, T, V] tensor); any other model(idx) -> (logits [B, T, V], loss) is sliced.
    pos / attn_mask: position ids and mask of packed rows, passed to hidden_states (our models only)."""
    if hasattr(model, "hidden_states") and hasattr(model, "lm_head"):
        packed = {} if pos is None else dict(pos=pos, attn_mask=attn_mask)
        return model.lm_head(model.hidden_states(x, **packed)[-1][b_idx, t_idx])
    assert pos is None, "only models with hidden_states(idx, pos, attn_mask) take packed rows"
    logits, _ = model(x)
    assert logits.shape[:2] == x.shape, "the model must return logits for every position"
    return logits[b_idx, t_idx]


def _can_pack(model):
    """Whether model.hidden_states takes position ids and a mask (our GPT and Qwen3 do)."""
    import inspect
    return (hasattr(model, "lm_head") and hasattr(model, "hidden_states")
            and "attn_mask" in inspect.signature(model.hidden_states).parameters)


def _rows(requests, units, max_length, pack):
    """The rows to run, each (tokens, prefix, placed): `placed` lists (model input, offset) pairs. A plain row
    is one model input m (prefix = len(m)). A packed row holds a context shared by several model inputs once,
    then each input's remaining tokens at its offset: index j of m sits at j if j < prefix, else at
    offset + j - prefix. Only untruncated inputs are packed (m = context + continuation[:-1] exactly, so
    positions stay those of the request alone), and a packed row stays within max_length tokens."""
    groups, rows = {}, []
    for m, served in units.items():
        ctx, cont = requests[served[0]]
        if pack and len(ctx) + len(cont) <= max_length + 1:
            groups.setdefault(tuple(ctx), []).append(m)
        else:
            rows.append((m, len(m), [(m, 0)]))
    for ctx, ms in groups.items():
        if len(ms) == 1:
            rows.append((ms[0], len(ms[0]), [(ms[0], 0)]))
            continue
        tokens, placed = list(ctx), []
        for m in ms:
            if placed and len(tokens) + len(m) - len(ctx) > max_length:  # full: another row for the rest
                rows.append((tuple(tokens), len(ctx), placed))
                tokens, placed = list(ctx), []
            placed.append((m, len(tokens)))
            tokens += m[len(ctx):]
        rows.append((tuple(tokens), len(ctx), placed))
    return rows


def _packed_inputs(batch, width):
    """Position ids [B, width] and mask [B, width, width] for a batch with packed rows. Segment ids: 0 for a
    row's prefix, k for its k-th packed input, -1 for padding; a token sees earlier tokens of the prefix and
    of its own segment. Padding sees earlier padding and itself (a query with no key would give NaN)."""
    pos = torch.arange(width).repeat(len(batch), 1)
    seg = torch.full((len(batch), width), -1)
    for b, (tokens, prefix, placed) in enumerate(batch):
        seg[b, :len(tokens)] = 0
        for k, (m, offset) in enumerate(placed):
            n = len(m) - prefix
            if offset >= prefix and n > 0:
                seg[b, offset:offset + n] = k + 1
                pos[b, offset:offset + n] = torch.arange(prefix, prefix + n)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    return pos, causal & ((seg[:, None, :] == 0) | (seg[:, None, :] == seg[:, :, None]))


@torch.no_grad()
def loglikelihoods(model, requests, max_length, batch_tokens=None, autocast=None, progress=False):
    """(sum of continuation log-probs, is_greedy) for each (context_ids, continuation_ids) request.

    Requests with the same model input (same context, one-token continuations; or any two whose
    context + continuation[:-1] agree) share it. Model inputs with the same context (the choices of one
    document) share one packed row when the model takes position ids and a mask: the context once, then each
    continuation[:-1] with positions restarting at len(context), attending to the context and to itself
    only, so every logit is that of the request alone and the context is computed once. Rows are sorted
    longest first (like lm-eval) and packed, right-padded, into batches of at most batch_tokens tokens; one
    forward per batch. Default: 16384 tokens on a GPU, 1024 on a CPU, where bigger batches were slower
    (GPT-2 124M shape on 2 cores: 1024 -> 21 s, 4096 -> 25 s, 16384 -> 35 s for the same requests)."""
    units = {}  # model input -> indices of the requests it answers
    for i, (ctx, cont) in enumerate(requests):
        units.setdefault(_model_input(ctx, cont, max_length), []).append(i)
    order = sorted(_rows(requests, units, max_length, _can_pack(model)), key=lambda r: (-len(r[0]), r[0]))
    device = next(model.parameters()).device
    batch_tokens = batch_tokens or (16384 if device.type == "cuda" else 1024)
    autocast = autocast or nullcontext()
    out = [None] * len(requests)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(requests), desc="benchmark requests", leave=False)
    start = 0
    while start < len(order):
        width = len(order[start][0])
        batch = order[start:start + max(1, batch_tokens // width)]
        start += len(batch)
        x = torch.zeros(len(batch), width, dtype=torch.long)
        # each model input's last `need` positions serve all its requests: log-softmax once per scored position
        b_idx, t_idx, pick, tokens, owner = [], [], [], [], []
        for b, (row, prefix, placed) in enumerate(batch):
            x[b, :len(row)] = torch.tensor(row)
            for m, offset in placed:
                need = max(len(requests[i][1]) for i in units[m])
                end = len(b_idx) + need  # position len(m) - 1 of m, in the gathered rows below
                b_idx += [b] * need
                t_idx += [j if j < prefix else offset + j - prefix for j in range(len(m) - need, len(m))]
                for i in units[m]:
                    cont = requests[i][1]
                    pick += range(end - len(cont), end)
                    tokens += cont
                    owner += [i] * len(cont)
        packed = {}
        if any(len(placed) > 1 for _, _, placed in batch):
            pos, mask = _packed_inputs(batch, width)
            packed = dict(pos=pos.to(device), attn_mask=mask.to(device))
        with autocast:
            logits = scored_logits(model, x.to(device), b_idx, t_idx, **packed)
        logp = logits.float().log_softmax(-1)  # [positions, V]
        pick = torch.tensor(pick, device=logp.device)
        tokens = torch.tensor(tokens, device=logp.device)
        token_lp = logp[pick, tokens].tolist()
        greedy = (logp.argmax(-1)[pick] == tokens).tolist()
        for i, lp, g in zip(owner, token_lp, greedy):
            ll, all_greedy = out[i] or (0.0, True)
            out[i] = (ll + lp, all_greedy and g)
        if bar is not None:
            bar.update(sum(len(units[m]) for _, _, placed in batch for m, _ in placed))
    if bar is not None:
        bar.close()
    return out


# ---- metrics: lm-eval's process_results and aggregation

def _argmax(values):
    return max(range(len(values)), key=lambda i: (values[i], -i))  # first maximum, like np.argmax


def doc_metrics(task, doc, results):
    """Per-document metric values from its requests' (ll, is_greedy) results."""
    lls = [ll for ll, _ in results]
    if task.kind == "greedy":
        return {"acc": float(results[0][1]), "ll": lls[0]}
    if task.kind == "mc2":  # probability mass on the true answers (labels 1), normalised over all
        top = max(lls)
        p = [math.exp(ll - top) for ll in lls]
        true = sum(pi for pi, label in zip(p, doc["mc2_targets"]["labels"]) if label == 1)
        return {"acc": true / sum(p)}
    gold = task.gold(doc)
    out = {"acc": float(_argmax(lls) == gold)}
    if "acc_norm" in task.metrics:
        lengths = [len(c) for c in task.choices(doc)]
        out["acc_norm"] = float(_argmax([ll / n for ll, n in zip(lls, lengths)]) == gold)
    return out


def aggregate(values):
    """Mean of each metric over documents; lambada's perplexity = exp(-mean ll)."""
    out = {}
    for key in values[0]:
        mean = sum(v[key] for v in values) / len(values)
        out["perplexity" if key == "ll" else key] = math.exp(-mean) if key == "ll" else mean
    return out


# ---- data: the hub when online, else --bench_data DIR/<task>/<split>.{jsonl,parquet}

class MissingData(Exception):
    pass


_DOCS = {}  # (folder, split, data_dir) -> docs; train.py calls run_benchmarks again and again


def _read_local(data_dir, folder, split):
    d = os.path.join(data_dir, folder)
    for pattern in (f"{split}.jsonl", f"{split}.json", f"{split}.parquet", f"{split}-*.parquet"):
        files = sorted(glob.glob(os.path.join(d, pattern)))
        if files and files[0].endswith("parquet"):
            import pyarrow.parquet as pq
            return [row for f in files for row in pq.read_table(f).to_pylist()]
        if files:
            with open(files[0]) as f:
                return [json.loads(line) for line in f if line.strip()]
    return None


def load_docs(task, split, data_dir=None):
    """The documents of one split, as a list of dicts in the dataset's own schema."""
    folder = task.folder or task.name
    key = (folder, split, data_dir)
    if key not in _DOCS:
        docs = _read_local(data_dir, folder, split) if data_dir else None
        if docs is None:
            try:
                import datasets
                docs = list(datasets.load_dataset(task.hub[0], task.hub[1], split=split))
            except Exception:  # offline, not cached, hub down: every failure means the same to the user
                where = f"in {data_dir}/{folder}/ nor on the hub" if data_dir else "on the hub (offline?)"
                raise MissingData(
                    f"{task.name}: no {split} split of {task.hub[0]} found {where}; on a machine with internet "
                    f"run `python data/benchmarks/download.py --out DIR` and pass --bench_data DIR.") from None
        _DOCS[key] = docs
    return _DOCS[key]


def limit_docs(docs, limit):
    """lm-eval's --limit: the first N docs (a fraction below 1.0: the first ceil(N_total * limit))."""
    if limit is None:
        return docs
    return docs[:int(math.ceil(len(docs) * limit)) if limit < 1.0 else int(limit)]


# ---- putting it together

def _dist():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _gather(items):
    rank, world = _dist()
    if world == 1:
        return items
    parts = [None] * world
    torch.distributed.all_gather_object(parts, items)
    return [x for part in parts for x in part]


def prepare(names, shots, limit=None, seed=1234, data_dir=None, log=print):
    """{task name: (task, docs, prefixes)} for every (sub)task whose data is found, and the sentences for
    those that are not (a group such as mmlu is missing when any of its members is)."""
    ready, missing = {}, {}
    for name in names:
        members = {}
        try:
            for member in GROUPS.get(name, [name]):
                task = TASKS[member]
                docs = limit_docs(load_docs(task, task.split, data_dir), limit)
                pool = load_docs(task, task.fewshot_split, data_dir) if shots[member] else []
                members[member] = (task, docs, fewshot_prefixes(task, docs, pool, shots[member], seed))
        except (MissingData, ValueError) as e:
            missing[name] = str(e)
            if log:
                log(str(e))
            continue
        ready.update(members)
    return ready, missing


def score(model, tokenizer, ready, batch_tokens=None, autocast=None, progress=True):
    """Per-document metric values {task: [(doc index, values)]} for this rank's share of the docs
    (rank r takes docs r::world), gathered from all ranks."""
    rank, world = _dist()
    encode, eot = tokenizer.encode, tokenizer.eot_token
    requests, spans, cache = [], [], {}
    for name, (task, docs, prefixes) in ready.items():
        for j in range(rank, len(docs), world):
            pairs = doc_requests(task, docs[j], prefixes[j])
            spans.append((name, j, len(requests), len(pairs)))
            requests += [encode_pair(encode, eot, c, k, cache) for c, k in pairs]
    results = loglikelihoods(model, requests, model.config.block_size, batch_tokens, autocast,
                             progress and rank == 0)
    mine = [(name, j, doc_metrics(ready[name][0], ready[name][1][j], results[s:s + n]))
            for name, j, s, n in spans]
    per_task = {name: [] for name in ready}
    for name, j, values in sorted(_gather(mine), key=lambda x: (x[0], x[1])):
        per_task[name].append((j, values))
    return per_task


def run_benchmarks(model, tokenizer, tasks="paper", limit=None, fewshot=None, seed=1234, data_dir=None,
                   batch_tokens=None, autocast=None, progress=True, log=print):
    """Score `model` on lm-eval tasks the way lm-eval does; callable from train.py every bench_interval.

    model(idx) -> (logits [B, T, V], loss) with model.config.block_size; tokenizer: encode(text) -> ids,
    eot_token. tasks: 'paper' | 'all' | 'a,b,...' or a list; limit: first N docs per task (per MMLU
    subject); fewshot: see resolve_fewshot; seed: the few-shot sampler's (lm-eval: 1234); data_dir: offline
    data; autocast: a context manager such as torch.autocast('cuda', torch.bfloat16); log: where the
    one-sentence messages of missing tasks go (None: nowhere). Under torchrun every
    rank must call it (docs are sharded, results gathered); every rank returns the same dict:
      {"tasks": {name: {"acc": .., "acc_norm": .., "n": .., "shots": ..}}, "average": mean acc of the
       paper's ten (None unless all ten ran), "missing": {name: sentence}, "settings": {...}}."""
    names = resolve_tasks(tasks if isinstance(tasks, str) else ",".join(tasks))
    shots = resolve_fewshot(fewshot, names)
    ready, missing = prepare(names, shots, limit, seed, data_dir, log)
    was_training = model.training
    model.eval()
    try:
        per_task = score(model, tokenizer, ready, batch_tokens, autocast, progress)
    finally:
        model.train(was_training)
    out = {}
    for name in names:
        members = [m for m in GROUPS.get(name, [name]) if per_task.get(m)]
        if not members:  # missing data (already said), or no documents at all (e.g. --limit 0)
            missing.setdefault(name, f"{name}: no documents to score.")
            continue
        values = [v for m in members for _, v in per_task[m]]
        out[name] = {**aggregate(values), "n": len(values), "shots": shots[members[0]]}
        if name in GROUPS:  # lm-eval's group score: subjects weighted by size = the mean over all docs
            out[name]["subjects"] = {m[len(name) + 1:]: {**aggregate([v for _, v in per_task[m]]),
                                                         "n": len(per_task[m])} for m in members}
    ten = [out[t]["acc"] for t in PAPER_TASKS if t in out]
    return {"tasks": out, "average": sum(ten) / len(ten) if len(ten) == len(PAPER_TASKS) else None,
            "missing": missing, "settings": {"limit": limit, "seed": seed,
                                             "fewshot": {n: out[n]["shots"] for n in out}}}


# ---- reports

def results_table(runs):
    """Markdown table in the paper's layout: one row per run, acc in percent, the Average of the ten;
    rows after the first also show their difference to the first. runs: [(label, results dict)]."""
    cols = [t for t in PAPER_TASKS + EXTRA_TASKS if any(t in r["tasks"] for _, r in runs)]
    cols += sorted({t for _, r in runs for t in r["tasks"]} - set(cols))

    def cell(value, base):
        if value is None:
            return "-"
        return f"{100 * value:.2f}" if base is None else f"{100 * value:.2f} ({100 * (value - base):+.2f})"

    head = ["run"] + [COLUMNS.get(t, t) for t in cols] + ["Average"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    first = runs[0][1]
    for k, (label, r) in enumerate(runs):
        row = [label]
        for t in cols + ["average"]:
            value = r.get("average") if t == "average" else r["tasks"].get(t, {}).get("acc")
            base = first.get("average") if t == "average" else first["tasks"].get(t, {}).get("acc")
            row.append(cell(value, base if k and value is not None else None))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def details_table(results):
    """Every metric of every task, with n and shots (lambada perplexity is not a percentage)."""
    lines = ["| task | metric | value | n | shots |", "|---|---|---|---|---|"]
    for name, r in results["tasks"].items():
        for key in ("acc", "acc_norm", "perplexity"):
            if key in r:
                value = f"{r[key]:.3f}" if key == "perplexity" else f"{100 * r[key]:.2f}"
                lines.append(f"| {name} | {key} | {value} | {r['n']} | {r['shots']} |")
    return "\n".join(lines)


def write_results(results, out_dir, label):
    """benchmarks.json and benchmarks.md in out_dir."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "benchmarks.json"), "w") as f:
        json.dump({"model": label, **results}, f, indent=1)
    with open(os.path.join(out_dir, "benchmarks.md"), "w") as f:
        f.write(f"# benchmarks of {label}\n\n{results_table([(label, results)])}\n\n{details_table(results)}\n")
        for name, sentence in results["missing"].items():
            f.write(f"\nnot run: {sentence}\n")


def is_benchmarks_json(path):
    """True for a benchmarks.json written by write_results (--compare also takes condensation.json files)."""
    try:
        with open(path) as f:
            return "tasks" in json.load(f)
    except (OSError, ValueError):
        return False


def compare_benchmarks(paths):
    """One table of several benchmarks.json files, each run's difference to the first."""
    runs = []
    for path in paths:
        with open(path) as f:
            r = json.load(f)
        runs.append((r.get("model", path), r))
    if len({label for label, _ in runs}) < len(runs):  # two runs of one model: tell them apart by path
        runs = [(p, r) for p, (_, r) in zip(paths, runs)]
    return results_table(runs)


# ---- lm-eval interoperability: our models as an lm-eval model ("disperse-gpt")

_LM_CLASS = None


def register_lm_eval():
    """Register our models with lm-eval's registry as 'disperse-gpt' and return the class (lm-eval is
    imported only here, so it stays an optional dependency). model_args: ckpt=out/ckpt.pt or
    init_from=gpt2|Qwen/Qwen3-0.6B|HF dir (alias pretrained=); device; batch_tokens; dtype (float32|bfloat16).
    From Python: DisperseLM(model=model, tokenizer=tokenizer) for a model already in memory."""
    global _LM_CLASS
    if _LM_CLASS is not None:
        return _LM_CLASS
    import lm_eval.models  # noqa: F401  the built-in models first: lm-eval fills its registry only when empty
    from lm_eval.api.model import TemplateLM
    from lm_eval.api.registry import register_model

    @register_model("disperse-gpt")
    class DisperseLM(TemplateLM):
        def __init__(self, ckpt=None, init_from=None, pretrained=None, device=None, batch_tokens=None,
                     dtype=None, model=None, tokenizer=None, **kwargs):
            super().__init__()
            device = device or ("cuda" if torch.cuda.is_available() else "cpu")
            if model is None:  # from the command line: model_args name a checkpoint or released weights
                which = argparse.Namespace(ckpt=ckpt, init_from=init_from or pretrained)
                model = load_model(which, device)[0]
                from data.tokenizer import get_tokenizer
                tokenizer = get_tokenizer(model.tokenizer_name)
            self.model, self.tokenizer_ = model.eval(), tokenizer
            self.batch_tokens = int(batch_tokens) if batch_tokens else None
            dtype = {None: None, "float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
            self.autocast = torch.autocast(device.split(":")[0], dtype) if dtype else None

        @property
        def eot_token_id(self):
            return self.tokenizer_.eot_token

        @property
        def max_length(self):
            return self.model.config.block_size

        def tok_encode(self, string, add_special_tokens=None, **kwargs):
            return self.tokenizer_.encode(string)

        def tok_decode(self, tokens, **kwargs):
            return self.tokenizer_.decode(tokens)

        def _loglikelihood_tokens(self, requests, disable_tqdm=False, **kwargs):
            return loglikelihoods(self.model, [(ctx, cont) for _, ctx, cont in requests], self.max_length,
                                  self.batch_tokens, self.autocast, progress=not disable_tqdm)

        def loglikelihood_rolling(self, requests, disable_tqdm=False):
            from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
            windows, owner = [], []
            for k, req in enumerate(requests):
                for w in get_rolling_token_windows(token_list=self.tok_encode(req.args[0]),
                                                   prefix_token=self.eot_token_id,
                                                   max_seq_len=self.max_length, context_len=1):
                    windows.append(make_disjoint_window(w))
                    owner.append(k)
            lls = loglikelihoods(self.model, windows, self.max_length, self.batch_tokens, self.autocast,
                                 progress=not disable_tqdm)
            total = [0.0] * len(requests)
            for k, (ll, _) in zip(owner, lls):
                total[k] += ll
            return total

        def generate_until(self, requests, disable_tqdm=False):
            out = []
            for req in requests:  # greedy, one at a time: generation is not what this adapter is for
                context, kwargs = req.args
                until = kwargs.get("until") or [self.tokenizer_.decode([self.eot_token_id])]
                until = [until] if isinstance(until, str) else until
                ids = self.tok_encode(context)[-self.max_length:]
                idx = torch.tensor([ids], device=next(self.model.parameters()).device)
                n_new = int(kwargs.get("max_gen_toks", 256))
                with torch.no_grad(), (self.autocast or nullcontext()):
                    y = self.model.generate(idx, n_new, temperature=1.0, top_k=1)
                text = self.tokenizer_.decode(y[0, len(ids):].tolist())
                for stop in until:
                    text = text.split(stop)[0]
                out.append(text)
            return out

    _LM_CLASS = DisperseLM
    return DisperseLM


# ---- command line of the benchmarks

def add_benchmark_args(p):
    g = p.add_argument_group("benchmarks (lm-eval tasks, scored as lm-eval scores them)")
    g.add_argument("--benchmarks", default=None, help="paper (the ten), all (+ hellaswag), or a comma list "
                   "such as arc_easy,mmlu,mmlu_anatomy")
    g.add_argument("--fewshot", default=None, help="paper (default: 1 shot for arc_easy, arc_challenge, medmcqa, "
                   "mmlu, else 0), an integer for those four (5 = the paper's Qwen3 setting), or task=n,...")
    g.add_argument("--limit", type=float, default=None, help="first N docs per task and per MMLU subject "
                   "(the paper: 500 for GPT-2, 200 for Qwen3); below 1.0 a fraction")
    g.add_argument("--seed", type=int, default=1234, help="few-shot sampler seed (lm-eval's default 1234)")
    g.add_argument("--bench_data", default=None, help="offline data: DIR/<task>/<split>.jsonl|parquet, as "
                   "data/benchmarks/download.py writes it")
    g.add_argument("--batch_tokens", type=int, default=None, help="tokens per forward pass, rows x longest "
                   "(default: 16384 on a GPU, 1024 on a CPU)")
    g.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="autocast dtype of the forward pass (log-softmax is always float32)")


def _init_distributed():
    """torchrun sets RANK/LOCAL_RANK/WORLD_SIZE: one process per GPU, documents sharded across them."""
    if "RANK" not in os.environ or torch.distributed.is_initialized():
        return None
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    torch.distributed.init_process_group(backend)
    if backend == "nccl":
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
        torch.cuda.set_device(device)
        return device
    return "cpu"


def benchmarks_main(args):
    try:  # a typo in the task list should not cost a model load
        resolve_fewshot(args.fewshot, resolve_tasks(args.benchmarks))
    except ValueError as e:
        raise SystemExit(str(e))
    device = _init_distributed() or args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, ckpt, name, default_out = load_model(args, device)
    from data.tokenizer import get_tokenizer
    tokenizer = get_tokenizer(model.tokenizer_name)
    dtype = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    autocast = torch.autocast(device.split(":")[0], dtype) if dtype else None
    try:
        results = run_benchmarks(model, tokenizer, args.benchmarks, args.limit, args.fewshot, args.seed,
                                 args.bench_data, args.batch_tokens, autocast)
    except ValueError as e:
        raise SystemExit(str(e))
    if _dist()[0] == 0:
        out = args.out or default_out
        write_results(results, out, name)
        print(results_table([(name, results)]))
        print(f"wrote {out}/benchmarks.json and benchmarks.md")
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def lm_eval_main(argv):
    """`python eval.py --lm_eval run --model disperse-gpt --model_args ckpt=out/ckpt.pt --tasks hellaswag`:
    lm-eval's own command line, with our model registered first (lm-eval has no plugin discovery)."""
    try:
        register_lm_eval()
        from lm_eval.__main__ import cli_evaluate
    except ImportError:
        raise SystemExit("--lm_eval needs lm-evaluation-harness: pip install lm-eval.")
    sys.argv = ["lm-eval"] + list(argv)
    cli_evaluate()


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
    g.add_argument("--compare", nargs="+", metavar="JSON", help="plot these condensation.json files together, "
                   "or print one table of these benchmarks.json files")
    add_benchmark_args(p)
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
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--lm_eval"]:  # the rest is lm-eval's own command line
        return lm_eval_main(argv[1:])
    if argv[:1] == ["--export_hf"]:  # python eval.py --export_hf out/ckpt.pt DIR: a transformers directory
        from model import export_hf
        return export_hf(*argv[1:]) if len(argv) == 3 else sys.exit("Usage: python eval.py --export_hf CKPT DIR")
    args = build_parser().parse_args(argv)
    if args.compare and all(is_benchmarks_json(p) for p in args.compare):
        return print(compare_benchmarks(args.compare))
    if args.compare:
        return compare_main(args)
    if args.benchmarks:
        return benchmarks_main(args)
    return condensation_main(args)


if __name__ == "__main__":
    main()
