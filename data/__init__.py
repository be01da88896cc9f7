"""Data: tokenizers (data/tokenizer.py), token files (data/tokens.py) and per-dataset prepare scripts."""
