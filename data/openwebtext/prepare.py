"""
data/openwebtext/prepare.py: OpenWebText as GPT-2 tokens, the from-scratch pre-training corpus.

  python data/openwebtext/prepare.py [--num_proc 16]   ->  data/openwebtext/{train,val}.bin, meta.json

As nanoGPT: 8,013,769 documents, 0.05% held out as val (seed 2357); train about 9.0B tokens (17 GB of uint16),
val about 4.4M. The dataset is read from the hub's parquet conversion of Skylion007/openwebtext (revision
refs/convert/parquet), because the original script-based dataset fails with datasets >= 4. It needs internet
and about 55 GB of disk for the download cache; offline it stops with one sentence.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
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
