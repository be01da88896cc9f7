"""
data/: two kinds of files.

Library modules, imported by train.py, eval.py and the scripts:
  data/tokenizer.py   get_tokenizer(name): GPT-2 (offline) or a Hugging Face tokenizer
  data/tokens.py      token files: write_tokens, load_split, get_batch

Scripts, one per corpus, each writing data/<name>/{train,val}.bin and meta.json:
  data/prepare.py                your own .txt / .jsonl / .parquet files, or any Hugging Face dataset
  data/shakespeare/prepare.py    the quick start's corpus, offline
  data/openwebtext/prepare.py    the from-scratch pre-training corpus
  data/benchmarks/download.py    the benchmark datasets, for air-gapped machines

Run a script as a file (python data/shakespeare/prepare.py) or as a module (python -m data.shakespeare.prepare).
"""
