"""
tasks/download.py: save the task datasets for an air-gapped machine: one folder per task, one jsonl file per
split, in the dataset's own schema, exactly what `python eval.py --tasks_data DIR` reads.

    python -m tasks.download --out tasks_data                  # the paper's ten + hellaswag
    python -m tasks.download --out tasks_data --tasks piqa,mmlu --no_fewshot
    rsync -a tasks_data cluster:disperse-gpt/   # then: python eval.py --ckpt ... --tasks paper --tasks_data tasks_data

Layout: tasks_data/<task>/<split>.jsonl, and tasks_data/mmlu/<subject>/{test,dev}.jsonl. The few-shot split
is saved too unless --no_fewshot (medmcqa's train split is the big one, about 183k questions).
"""
import argparse
import json
import os

import datasets

from hf_hub import hub_offline
from tasks.definitions import GROUPS, TASKS, resolve_tasks


def save_split(task, split, out):
    path = os.path.join(out, task.folder or task.name, f"{split}.jsonl")
    if os.path.exists(path):
        print(f"{path} exists, kept")
        return
    if hub_offline():
        raise SystemExit(f"{task.name}: the Hugging Face hub is unreachable or HF_HUB_OFFLINE is set; this script "
                         f"downloads, so run it on a machine with internet.")
    try:
        rows = datasets.load_dataset(task.hub[0], task.hub[1], split=split)
    except Exception as e:  # offline, hub down, renamed dataset: say which and stop
        raise SystemExit(f"{task.name}: could not download the {split} split of {task.hub[0]} "
                         f"({type(e).__name__}); this script needs the Hugging Face hub.")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(path + ".tmp", path)  # a half-written file never looks like data
    print(f"{path}: {len(rows)} documents")


def main():
    p = argparse.ArgumentParser(description="Save task splits as DIR/<task>/<split>.jsonl for eval.py --tasks_data.")
    p.add_argument("--out", required=True, help="folder to fill; pass it to eval.py as --tasks_data")
    p.add_argument("--tasks", default="all", help="paper, all, or a comma list (as eval.py --tasks)")
    p.add_argument("--no_fewshot", action="store_true", help="skip the few-shot splits (zero-shot runs only)")
    args = p.parse_args()
    try:
        names = resolve_tasks(args.tasks)
    except ValueError as e:
        raise SystemExit(str(e))
    for name in names:
        for member in GROUPS.get(name, [name]):
            task = TASKS[member]
            splits = [task.split] if args.no_fewshot or task.zero_shot else [task.split, task.fewshot_split]
            for split in dict.fromkeys(splits):
                save_split(task, split, args.out)


if __name__ == "__main__":
    main()
