"""
bench_lmeval_cli.py: our benchmark engine against lm-evaluation-harness's own command line, on a released model
and real MMLU rows, at 0, 1 and 5 shots: the same answers, and the time each takes (timings, not tests).

  python data/released.py smollm2-135m mmlu                 # the weights (a Q4_1 GGUF) and the MMLU rows,
  python data/released.py --mmlu_dir ~/.cache/disperse-gpt/tasks   # laid out as eval.py --tasks_data reads them
  OMP_NUM_THREADS=1 python bench_lmeval_cli.py               # = python bench.py --what=lmeval_cli
  python bench_lmeval_cli.py --subjects=marketing,sociology --limit=20 --shots=0,1,5 --hf_batches=1,16

Both sides are command lines, each in a fresh process, on the same weights and the same rows:
  lm-eval  lm_eval run --model hf --model_args pretrained=DIR,dtype=float32 --device cpu --batch_size B
           --tasks cli_mmlu_<subject>,... --num_fewshot K --limit N --include_path TASKS --output_path OUT
  ours     python eval.py --init_from DIR --tasks mmlu_<subject>,... --fewshot K --limit N --tasks_data DATA
DIR: a transformers folder of the GGUF (transformers' own loading, dequantized to float32, then save_pretrained
of the model and its tokenizer), made once under ~/.cache/disperse-gpt/hf/<name>/. TASKS: one YAML per subject
that includes lm-eval's own mmlu/default/mmlu_<subject>.yaml, so its _default_template_yaml (prompt "question
\\nA. ..\\nD. ..\\nAnswer:", choices A-D, target `answer`, the first_n few-shot sampler, target delimiter " ",
few-shot delimiter "\\n\\n") and the subject's description are lm-eval's by construction; only the data is
swapped for DATA/mmlu/<subject>/{test,dev}.jsonl (dataset_path json, data_files).
data/released.py's rows are cais/mmlu's test split only: each subject's first 5 rows are its few-shot pool
(dev.jsonl) and the rest are scored (test.jsonl), so 5-shot prompts hold real questions but not lm-eval's dev ones.

What is timed, per command line: the whole process (wall clock: start-up, imports, model loading, building the
tasks, scoring, writing results) and, inside it, the log-likelihood phase with tokenisation: lm-eval's
HFLM.loglikelihood (each (context, continuation) pair tokenised, then the forwards) and our tasks.engine.score
(the same tokenisation rule, then the forwards, then the per-document metrics). The phase is timed by a thin
wrapper (this file with --child) that wraps that one function with a clock and then runs the command line's
own entry point: lm_eval.__main__.cli_evaluate (what the `lm_eval` console script runs) or eval.main. Building
the few-shot prompts is outside the phase on both sides. One run per (side, shots), lm-eval first; on a shared
machine both see the same neighbours, so the ratios are worth more than the seconds.

Checked for every document: the chosen answer (the argmax of its four log-likelihoods) is the same on both
sides, the accuracies are equal, and the largest |log-likelihood difference| of any request is printed
(float32 sums in another order: about 1e-5).
BOS: lm-eval's hf model encodes with the tokenizer's default special tokens (add_bos_token unset), so it puts a
BOS in front only where the tokenizer itself does; our engine never does (data/tokenizer.py encodes ordinary
text). SmolLM2's tokenizer (GPT-2-style byte BPE, bos <|im_start|>) adds none: both sides score the same tokens,
which the printed ll difference shows (a BOS in front moves every ll by far more than 1e-4). A tokenizer that
does put a BOS in front by default (Llama-2's, Llama-3's) would be scored with it by lm-eval and without it by us.
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.join(os.path.expanduser("~"), ".cache", "disperse-gpt")
GGUF = os.path.join(CACHE, "released", "SmolLM2-135M-Instruct.Q4_1.gguf")
SUBJECTS = ["high_school_geography", "marketing", "sociology", "us_foreign_policy", "nutrition", "miscellaneous"]


def hf_folder(gguf, root=os.path.join(CACHE, "hf")):
    """A transformers folder (model in float32 + tokenizer) of a GGUF file, made once under root/<name>/ and
    reused; written to a temporary folder first so that a half-written one is never taken for a whole one."""
    out = os.path.join(root, os.path.basename(gguf)[:-len(".gguf")])
    if os.path.isfile(os.path.join(out, "config.json")):
        return out
    if not os.path.isfile(gguf):
        raise SystemExit(f"{gguf} is not a file; fetch it with `python data/released.py smollm2-135m`.")
    import torch
    import transformers
    folder, file = os.path.split(os.path.abspath(gguf))
    gguf_model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.float32)
    # transformers marks a GGUF-loaded model as quantized and refuses to save it: the same float32 weights go
    # into a plain model of the same config instead
    config = gguf_model.config
    del config.quantization_config
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=file)
    tmp = out + ".tmp"
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, out)
    return out


def write_task_yamls(path, data_dir, subjects):
    """One lm-eval task per subject in folder `path` (lm-eval's --include_path), named cli_mmlu_<subject>: lm-eval's
    own mmlu_<subject>.yaml included, its data swapped for data_dir/mmlu/<subject>/{test,dev}.jsonl. Returns the
    task names. The name differs from lm-eval's own (which its default index still holds) and the YAML keeps no
    tag, so lm-eval's mmlu groups never pull these tasks in."""
    import lm_eval
    import yaml
    default = os.path.join(os.path.dirname(lm_eval.__file__), "tasks", "mmlu", "default")
    os.makedirs(path, exist_ok=True)
    names = []
    for subject in subjects:
        files = {split: os.path.join(os.path.abspath(data_dir), "mmlu", subject, f"{split}.jsonl")
                 for split in ("test", "dev")}
        for f in files.values():
            if not os.path.isfile(f):
                raise SystemExit(f"{f} is missing; write the MMLU rows with `python data/released.py --mmlu_dir "
                                 f"{data_dir}`.")
        include = os.path.join(default, f"mmlu_{subject}.yaml")
        if not os.path.isfile(include):
            raise SystemExit(f"lm-eval has no MMLU subject {subject!r} ({include} is missing).")
        names.append(f"cli_mmlu_{subject}")
        cfg = {"include": include, "task": names[-1], "tag": [], "dataset_path": "json", "dataset_name": None,
               "dataset_kwargs": {"data_files": files}}
        with open(os.path.join(path, f"{names[-1]}.yaml"), "w") as f:
            yaml.safe_dump(cfg, f)
    return names


# ---- one command line with its log-likelihood phase timed (this file with --child)

def child(side, record, argv):
    """Run lm-eval's command line (side 'lm_eval') or eval.py's ('ours') with argv, timing the log-likelihood
    phase (HFLM.loglikelihood, tasks.engine.score) and keeping every document's log-likelihoods; writes
    {"seconds", "calls", "lls": [[task, doc index, [ll per choice]], ...]} to `record`."""
    clock, lls = {"seconds": 0.0, "calls": 0}, []

    def timed(owner, name, keep=None):
        inner = getattr(owner, name)

        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            out = inner(*args, **kwargs)
            clock["seconds"] += time.perf_counter() - t
            clock["calls"] += 1
            if keep:
                keep(args, out)
            return out
        setattr(owner, name, wrapper)

    if side == "lm_eval":
        from lm_eval.__main__ import cli_evaluate
        from lm_eval.models.huggingface import HFLM

        def keep(args, out):  # args: (self, requests); each request knows its task, document and choice
            docs = {}
            for req, (ll, _) in zip(args[1], out):
                docs.setdefault((req.task_name, req.doc_id), {})[req.idx] = ll
            lls.extend([t, d, [c[i] for i in sorted(c)]] for (t, d), c in docs.items())
        timed(HFLM, "loglikelihood", keep)
        sys.argv = ["lm_eval"] + argv
        cli_evaluate()
    else:
        import eval as ev
        from tasks import engine
        seen = {}
        metrics = engine.doc_metrics

        def doc_metrics(task, doc, results):  # score calls it per document, each task's in document order
            seen[task.name] = seen.get(task.name, -1) + 1
            lls.append([task.name, seen[task.name], [ll for ll, _ in results]])
            return metrics(task, doc, results)
        engine.doc_metrics = doc_metrics
        timed(engine, "score")
        ev.main(argv)
    with open(record, "w") as f:
        json.dump({**clock, "lls": lls}, f)


# ---- the two command lines side by side

def run_child(side, argv, work):
    """(wall seconds of the whole process, its record) for one command line run through child()."""
    record = os.path.join(work, f"{side}.json")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    t = time.perf_counter()
    p = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", side, record, "--", *argv],
                       cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if p.returncode:
        sys.stderr.write(p.stdout[-2000:] + p.stderr[-4000:])
        raise SystemExit(f"The {side} command line failed (exit status {p.returncode}; its output is above).")
    with open(record) as f:
        return wall, json.load(f)


def lm_eval_acc(out_dir):
    """{task: (acc, documents)} from the results file lm-eval's --output_path wrote."""
    path = sorted(glob.glob(os.path.join(out_dir, "**", "results_*.json"), recursive=True))[-1]
    with open(path) as f:
        r = json.load(f)
    return {t: (v["acc,none"], r["n-samples"][t]["effective"]) for t, v in r["results"].items()}


def ours_acc(out_dir):
    """{task: (acc, documents)} from the tasks.json eval.py wrote."""
    with open(os.path.join(out_dir, "tasks.json")) as f:
        r = json.load(f)
    return {t: (v["acc"], v["n"]) for t, v in r["tasks"].items()}


def overall(accs):
    """The accuracy over all documents of all tasks (lm-eval's group score: tasks weighted by size)."""
    return sum(a * n for a, n in accs.values()) / sum(n for _, n in accs.values())


def compare(model_dir, data_dir, subjects, limit, shots_list, hf_batches=(1,), work=None, log=print):
    """Run lm-eval's command line (hf model, each batch size of hf_batches) and eval.py on the same documents
    at each number of shots -> one dict per shots: accuracies, seconds and every document's log-likelihoods."""
    work = work or tempfile.mkdtemp(prefix="lmcli-")
    log = log or (lambda *args: None)
    include = os.path.join(work, "tasks")
    names = write_task_yamls(include, data_dir, subjects)
    rows = []
    for shots in shots_list:
        row = {"shots": shots, "lm_eval": {}}
        for b in hf_batches:
            out = os.path.join(work, f"lm_eval_{shots}_b{b}")
            wall, rec = run_child("lm_eval", [
                "run", "--model", "hf", "--model_args", f"pretrained={model_dir},dtype=float32", "--device", "cpu",
                "--batch_size", str(b), "--tasks", ",".join(names), "--num_fewshot", str(shots), "--limit",
                str(limit), "--include_path", include, "--output_path", out], work)
            accs = {t[len("cli_"):]: v for t, v in lm_eval_acc(out).items()}
            lls = {(t[len("cli_"):], d): v for t, d, v in rec["lls"]}
            row["lm_eval"][b] = dict(acc=overall(accs), accs=accs, seconds=rec["seconds"], wall=wall, lls=lls)
            log(f"  {shots}-shot lm-eval hf batch {b}: {rec['seconds']:.1f} s scoring, {wall:.1f} s in all")
        out = os.path.join(work, f"ours_{shots}")
        wall, rec = run_child("ours", [
            "--init_from", model_dir, "--device", "cpu", "--tasks", ",".join(f"mmlu_{s}" for s in subjects),
            "--fewshot", str(shots), "--limit", str(limit), "--tasks_data", data_dir, "--out", out], work)
        accs = ours_acc(out)
        row["ours"] = dict(acc=overall(accs), accs=accs, seconds=rec["seconds"], wall=wall,
                           lls={(t, d): v for t, d, v in rec["lls"]})
        log(f"  {shots}-shot ours: {rec['seconds']:.1f} s scoring, {wall:.1f} s in all")
        rows.append(row)
    return rows


def argmax(values):
    return max(range(len(values)), key=lambda i: (values[i], -i))  # the first maximum, as numpy's


def agreement(theirs, ours):
    """(documents with the same chosen answer, documents, largest |ll difference| of any request)."""
    if set(theirs) != set(ours):
        raise SystemExit("The two command lines scored different documents.")
    same = sum(argmax(theirs[k]) == argmax(ours[k]) for k in ours)
    diff = max(abs(a - b) for k in ours for a, b in zip(theirs[k], ours[k]))
    return same, len(ours), diff


def table(rows, hf_batches):
    """The Markdown table: accuracies, agreement and seconds (log-likelihood phase / whole process)."""
    b1 = hf_batches[0]
    head = ["shots", "lm-eval acc", "ours acc", "same answer", "max abs ll diff"]
    head += [f"lm-eval b{b} s (scoring / all)" for b in hf_batches] + ["ours s (scoring / all)",
                                                                        f"ratio scoring (b{b1})", f"ratio all (b{b1})"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for r in rows:
        ref, ours = r["lm_eval"][b1], r["ours"]
        same, n, diff = agreement(ref["lls"], ours["lls"])
        cells = [str(r["shots"]), f"{100 * ref['acc']:.2f}", f"{100 * ours['acc']:.2f}", f"{same}/{n}", f"{diff:.1e}"]
        cells += [f"{r['lm_eval'][b]['seconds']:.1f} / {r['lm_eval'][b]['wall']:.1f}" for b in hf_batches]
        cells += [f"{ours['seconds']:.1f} / {ours['wall']:.1f}", f"{ref['seconds'] / ours['seconds']:.1f}x",
                  f"{ref['wall'] / ours['wall']:.1f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--child"]:  # --child SIDE RECORD -- ARGS...
        return child(argv[1], argv[2], argv[4:])
    p = argparse.ArgumentParser(description="Our engine against lm-eval's command line on real MMLU rows.")
    p.add_argument("--gguf", default=GGUF, help="the released model (default: SmolLM2-135M-Instruct, Q4_1)")
    p.add_argument("--tasks_data", default=os.path.join(CACHE, "tasks"), help="DIR/mmlu/<subject>/{dev,test}.jsonl")
    p.add_argument("--subjects", default=",".join(SUBJECTS))
    p.add_argument("--limit", type=int, default=20, help="test documents per subject (the first N)")
    p.add_argument("--shots", default="0,1,5")
    p.add_argument("--hf_batches", default="1", help="lm-eval hf batch sizes, e.g. 1,16 (the first is the ratio's)")
    args = p.parse_args(argv)
    subjects = [s for s in args.subjects.split(",") if s]
    shots = [int(s) for s in args.shots.split(",")]
    batches = [int(b) for b in args.hf_batches.split(",")]
    model_dir = hf_folder(os.path.expanduser(args.gguf))
    import torch
    print(f"{os.path.basename(args.gguf)} as {model_dir} (float32); MMLU {', '.join(subjects)}: the first "
          f"{args.limit} test rows each; CPU, {torch.get_num_threads()} thread(s) (OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')})", flush=True)
    rows = compare(model_dir, os.path.expanduser(args.tasks_data), subjects, args.limit, shots, batches)
    print(table(rows, batches))
    print("seconds: the log-likelihood phase with tokenisation (lm-eval: HFLM.loglikelihood; ours: tasks.engine."
          "score) / the whole command line (start-up, imports, model loading, tasks, scoring, results); ratio: "
          "lm-eval's seconds over ours")


if __name__ == "__main__":
    main()
