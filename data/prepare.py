"""
data/prepare.py: token files from your own text or from any Hugging Face dataset.

  # local files: .txt (one document per file), .jsonl (one document per line, field --text_key), .parquet
  python data/prepare.py --name mytext --input notes/*.txt
  # a Hugging Face dataset, e.g. the paper's mid-training corpus (WikiText-103, rows are lines of articles,
  # so they are concatenated without separators as in the paper):
  python data/prepare.py --name wikitext103 --dataset Salesforce/wikitext --dataset_config wikitext-103-raw-v1 --no_eot
  # released Qwen3 weights need Qwen3's tokenizer (uint32 token files):
  python data/prepare.py --name wikitext103_qwen3 --dataset Salesforce/wikitext \
      --dataset_config wikitext-103-raw-v1 --no_eot --tokenizer Qwen/Qwen3-0.6B

Writes data/<name>/{train,val}.bin and meta.json. The val split is the dataset's own 'validation' split when
it has one, else a random --val_fraction of the documents (seed 2357, as nanoGPT's OpenWebText split).
"""

import os
import sys

if __name__ == "__main__" and not __package__:
    # run as a file: re-run as `python -m data.prepare` with the repository root on PYTHONPATH, so that
    # the package `data` imports; the arguments and the working directory stay as given
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    sys.exit(subprocess.call([sys.executable, "-m", "data.prepare", *sys.argv[1:]], env=env))

import argparse  # noqa: E402

from data.tokens import write_tokens  # noqa: E402
from hf_hub import hub_offline  # noqa: E402

DATA_DIR = os.path.dirname(os.path.abspath(__file__))


def load_hub_dataset(dataset, config=None, revision=None, num_proc=None):
    """datasets.load_dataset, ending in one sentence when the hub cannot be reached."""
    import datasets
    try:
        return datasets.load_dataset(dataset, config, revision=revision, num_proc=num_proc)
    except Exception as e:
        offline = " (offline mode is on: HF_DATASETS_OFFLINE / HF_HUB_OFFLINE, or the hub unreachable)"
        raise SystemExit(
            f"Could not load the dataset '{dataset}' from the Hugging Face hub"
            f"{offline if hub_offline() else ''}: run this on a "
            f"machine with internet access, or pass local files with --input. ({type(e).__name__}: {e})") from None


def load_local_files(paths, text_key="text"):
    """A datasets.Dataset of documents from .txt / .jsonl / .parquet files."""
    import datasets
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise SystemExit(f"Input file not found: {missing[0]}.")
    kinds = {os.path.splitext(p)[1].lower() for p in paths}
    if kinds == {".txt"}:
        docs = []
        for p in paths:
            with open(p, encoding="utf-8") as f:
                docs.append(f.read())
        return datasets.Dataset.from_dict({text_key: docs})
    if kinds <= {".jsonl", ".json"}:
        ds = datasets.load_dataset("json", data_files=list(paths), split="train")
    elif kinds == {".parquet"}:
        ds = datasets.load_dataset("parquet", data_files=list(paths), split="train")
    else:
        raise SystemExit(f"--input takes .txt, .jsonl or .parquet files (one kind at a time), got {sorted(kinds)}.")
    if text_key not in ds.column_names:
        raise SystemExit(f"The input has no '{text_key}' field (it has {ds.column_names}): pass --text_key.")
    return ds


def train_val(ds, val_fraction, text_key):
    """{'train': ..., 'val': ...} from a DatasetDict (its validation split if any) or a single Dataset."""
    import datasets
    if isinstance(ds, datasets.DatasetDict):
        if "validation" in ds and "train" in ds:
            return {"train": ds["train"], "val": ds["validation"]}
        ds = ds["train"] if "train" in ds else datasets.concatenate_datasets(list(ds.values()))
    if len(ds) < 2:
        raise SystemExit("Need at least 2 documents to make a train and a val split.")
    split = ds.train_test_split(test_size=val_fraction if len(ds) * val_fraction >= 1 else 1, seed=2357, shuffle=True)
    return {"train": split["train"], "val": split["test"]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="output folder data/<name>/")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", nargs="+", help="local .txt / .jsonl / .parquet files")
    src.add_argument("--dataset", help="Hugging Face dataset id")
    p.add_argument("--dataset_config", default=None)
    p.add_argument("--revision", default=None, help="dataset revision, e.g. refs/convert/parquet")
    p.add_argument("--text_key", default="text")
    p.add_argument("--val_fraction", type=float, default=0.0005)
    p.add_argument("--tokenizer", default="gpt2", help="'gpt2' or a Hugging Face tokenizer name / directory")
    p.add_argument("--no_eot", action="store_true", help="concatenate documents without the EOT separator")
    p.add_argument("--num_proc", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    p.add_argument("--out_root", default=DATA_DIR, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    ds = load_local_files(args.input, args.text_key) if args.input else \
        load_hub_dataset(args.dataset, args.dataset_config, args.revision)
    splits = train_val(ds, args.val_fraction, args.text_key)
    return write_tokens(splits, os.path.join(args.out_root, args.name), tokenizer=args.tokenizer,
                        num_proc=args.num_proc, text_key=args.text_key, append_eot=not args.no_eot)


if __name__ == "__main__":
    main()
