"""
tasks/results.py: the results of tasks/engine.run_benchmarks on disk and as tables.

  python eval.py --ckpt out/ckpt.pt --tasks paper --out DIR      # write_results: DIR/tasks.json and DIR/tasks.md
  python eval.py --compare A/tasks.json B/tasks.json              # compare_results: one table, each run against A

Tables are in the paper's layout: one row per run, acc in percent, and the Average of the ten paper tasks (None,
printed "-", unless all ten ran); a row after the first shows its difference to the first in points,
100 * (acc - acc_first). A tasks.json is only ever replaced by a measurement of the same model, tasks and settings.
"""

import json
import os

from tasks.definitions import COLUMNS, EXTRA_TASKS, PAPER_TASKS


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
    """tasks.json and tasks.md in out_dir -> the two paths. A run where no task could run is an error, not an
    empty file; a tasks.json of another model, other tasks or other settings is never replaced silently."""
    if not results["tasks"]:
        raise ValueError("No task could run (" + " ".join(results["missing"].values()) + "); nothing written.")
    path = os.path.join(out_dir, "tasks.json")
    if os.path.exists(path):
        old = load_json(path)
        same = (old.get("model"), sorted(old.get("tasks", {})), old.get("settings")) == \
            (label, sorted(results["tasks"]), json.loads(json.dumps(results["settings"])))
        if not same:
            raise FileExistsError(f"{path} holds results of another model, other tasks or other settings; "
                                  f"give another --out directory (or delete that file).")
    os.makedirs(out_dir, exist_ok=True)
    with open(path, "w") as f:
        json.dump({"model": label, **results}, f, indent=1)
    md = os.path.join(out_dir, "tasks.md")
    with open(md, "w") as f:
        f.write(f"# tasks: {label}\n\n{results_table([(label, results)])}\n\n{details_table(results)}\n")
        for name, sentence in results["missing"].items():
            f.write(f"\nnot run: {sentence}\n")
    return path, md


def load_json(path):
    """A results file as a dict; a missing, unreadable or broken one ends in one sentence (ValueError)."""
    try:
        with open(path) as f:
            r = json.load(f)
    except OSError as e:
        raise ValueError(f"Cannot read {path} ({e.strerror or type(e).__name__}).") from None
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); give files written by eval.py.") from None
    if not isinstance(r, dict):
        raise ValueError(f"{path} holds no results object; give files written by eval.py.")
    return r


def compare_results(runs):
    """One table of several tasks.json results [(path, dict)], each run's difference to the first."""
    labelled = [(r.get("model", path), r) for path, r in runs]
    if len({label for label, _ in labelled}) < len(labelled):  # two runs of one model: tell them apart by path
        labelled = [(path, r) for path, r in runs]
    return results_table(labelled)
