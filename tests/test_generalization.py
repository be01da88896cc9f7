"""The second held-out corpus (data/lee_news, gensim's Lee news articles) and eval.py --loss_data: a checkpoint's
loss on any token corpus by train.py's val-loss rule, checked against train.py's own logged val loss.

Run: python -m pytest -q tests/test_generalization.py
"""
import json
import os

import numpy as np
import pytest

import eval as evaluate
from conftest import records, train


def test_lee_news_articles_are_the_350_of_gensims_lee_corpus():
    from data.lee_news.prepare import load_articles
    articles = load_articles()
    assert len(articles) == 300 + 50
    assert articles[0].startswith("Hundreds of people have been forced to vacate their homes in the Southern Highlands")
    assert sum(len(a.split()) for a in articles) == 59890 + 3983  # `wc -w` of lee_background.cor and lee.cor
    assert not any("\n" in a for a in articles)


def test_loss_data_on_the_training_data_is_train_pys_val_loss(tmp_path, data_dir):
    out = tmp_path / "run"
    train(out, data_dir, "--max_iters=3", "--eval_interval=3", "--eval_iters=3", "--batch_size=4", "--probe_windows=0")
    logged = [r["val_loss"] for r in records(out) if "val_loss" in r][-1]
    # another batch size for the forward passes: the same windows, the same mean (up to float rounding)
    path = evaluate.main(["--ckpt", str(out / "ckpt.pt"), "--loss_data", data_dir, "--batch_size", "5"])
    assert path == str(out / "eval" / f"loss_{os.path.basename(data_dir)}.json")
    result = json.load(open(path))
    assert result["loss"] == pytest.approx(logged, abs=1e-6) and result["windows"] == 12 and result["block_size"] == 32


def test_loss_data_refuses_other_tokens_and_missing_data(tmp_path, data_dir):
    out = tmp_path / "run"
    train(out, data_dir, "--max_iters=1", "--eval_interval=1", "--probe_windows=0")
    other = tmp_path / "qwen_data"
    other.mkdir()
    np.arange(100, dtype=np.uint32).tofile(other / "val.bin")
    (other / "meta.json").write_text(json.dumps({"dtype": "uint32", "tokenizer": "Qwen/Qwen3-0.6B", "vocab_size": 151669}))
    with pytest.raises(SystemExit, match="tokenised with 'Qwen/Qwen3-0.6B'"):
        evaluate.main(["--ckpt", str(out / "ckpt.pt"), "--loss_data", str(other)])
    with pytest.raises(SystemExit, match="prepare it first"):
        evaluate.main(["--ckpt", str(out / "ckpt.pt"), "--loss_data", "no_such_corpus"])
