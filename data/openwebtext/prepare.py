"""
data/openwebtext/prepare.py: OpenWebText as GPT-2 tokens, the from-scratch pre-training corpus.

  python data/openwebtext/prepare.py [--num_proc 16]   ->  data/openwebtext/{train,val}.bin, meta.json

As nanoGPT: 8,013,769 documents, 0.05% held out as val (seed 2357); train about 9.0B tokens (17 GB of uint16),
val about 4.4M. The dataset is read from the hub's parquet conversion of Skylion007/openwebtext (revision
refs/convert/parquet), because the original script-based dataset fails with datasets >= 4. It needs internet
and about 55 GB of disk for the download cache; offline it stops with one sentence.
"""

import os
import sys

if __name__ == "__main__" and not __package__:
    # run as a file: re-run as `python -m data.openwebtext.prepare` with the repository root on PYTHONPATH, so that
    # the package `data` imports; the arguments and the working directory stay as given
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    sys.exit(subprocess.call([sys.executable, "-m", "data.openwebtext.prepare", *sys.argv[1:]], env=env))

import argparse  # noqa: E402

from data.prepare import load_hub_dataset, train_val  # noqa: E402
from data.tokens import write_tokens  # noqa: E402

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num_proc", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    p.add_argument("--dataset", default="Skylion007/openwebtext")
    p.add_argument("--revision", default="refs/convert/parquet")
    args = p.parse_args()
    ds = load_hub_dataset(args.dataset, revision=args.revision, num_proc=args.num_proc)
    splits = train_val(ds, 0.0005, "text")
    write_tokens(splits, os.path.dirname(os.path.abspath(__file__)), num_proc=args.num_proc)
