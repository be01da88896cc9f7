"""
data/lee_news/prepare.py: a second held-out corpus of another domain, offline: modern English news as GPT-2 tokens.

The Lee corpus (Lee, Pincombe & Welsh 2005, "An empirical evaluation of models of text document similarity"):
350 short news articles of the Australian Broadcasting Corporation's news mail service (2001-2002: bushfires,
the Middle East, cricket, ...), one article per line, as the package `gensim` ships them in its test data
(gensim/test/test_data/lee_background.cor, 300 articles, and lee.cor, 50 more). Why this corpus: real English
prose far from the training domain (present-day journalism against Early Modern English verse drama), a known
evaluation corpus, and installed from PyPI with nothing downloaded at run time. gensim is not imported, only its
files read. Every article is one document (the EOT token after each); a val split only: it is never trained on.
About 77k GPT-2 tokens (64k words), so train.py's rule of eval_iters x batch_size = 80 windows of 128 tokens
covers an eighth of it.

  python data/lee_news/prepare.py      ->  data/lee_news/val.bin, meta.json, and lee_news.jsonl (the articles as
                                            text, one {"text": ...} a line: a source in any model's own tokenizer)
  python -m data.lee_news.prepare      (the same)
  python data/lee_news/prepare.py --tokenizer MODEL.gguf --name lee_news_smollm2   # in a released model's ids
  python eval.py --ckpt RUN/ckpt.pt --loss_data lee_news     # a checkpoint's loss on it (RUN/eval/loss_lee_news.json)
"""

import os
import sys

if __name__ == "__main__" and not __package__:
    # run as a file: re-run as `python -m data.lee_news.prepare` with the repository root on PYTHONPATH, so that
    # the package `data` imports; the arguments and the working directory stay as given
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    sys.exit(subprocess.call([sys.executable, "-m", "data.lee_news.prepare", *sys.argv[1:]], env=env))

import importlib.util  # noqa: E402
import json  # noqa: E402

from data.tokens import corpus_args, write_tokens  # noqa: E402

FILES = ("lee_background.cor", "lee.cor")  # gensim/test/test_data/


def load_articles():
    """The 350 articles, one string each, in the files' order."""
    spec = importlib.util.find_spec("gensim")  # located, not imported (gensim's import pulls in scipy)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("The Lee news corpus comes from the package gensim: run `pip install gensim`.")
    folder = os.path.join(list(spec.submodule_search_locations)[0], "test", "test_data")
    articles = []
    for name in FILES:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise SystemExit(f"{path} is missing: this gensim ships no Lee corpus; run `pip install gensim==4.4.0`.")
        with open(path, encoding="latin-1") as f:  # ASCII, but for a few Latin-1 bytes in lee.cor (the £ sign)
            articles.extend(line.strip() for line in f if line.strip())
    return articles


if __name__ == "__main__":
    tokenizer, out_dir = corpus_args(__doc__, "lee_news")
    articles = load_articles()
    print(f"{len(articles)} articles from gensim's Lee corpus ({', '.join(FILES)})")
    here = os.path.dirname(os.path.abspath(__file__))
    write_tokens({"val": articles}, out_dir, tokenizer=tokenizer)
    # the same articles as text, for sources tokenized by a released model's own tokenizer
    # (python eval.py --init_from MODEL --source data/lee_news/lee_news.jsonl)
    with open(os.path.join(here, "lee_news.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": a}) + "\n" for a in articles)
