"""
text_sources.py: the authors' text sampler for condensation (arXiv 2602.00217 section 2, their
key_observations/utils/text_data.py), as eval.py sources: wikitext103 (the paper's), pubmed_qa, imdb, squad;
and the other sources eval.py reads: word spans of a local .txt / .jsonl file or raw WikiText-103 (text_spans), and
windows of a prepared token split (val_windows).

    python eval.py --init_from gpt2 --source wikitext103           # from the hub or its local cache
    python eval.py --init_from gpt2 --source imdb --text_data DIR  # from DIR/imdb/ (parquet / save_to_disk)
    python text_sources.py --download DIR                          # on a machine with internet: all four

Repetition (seed) r = 0..N-1 draws one text from the train split of the dataset:
    rng = numpy.random.default_rng(r);  row = rng.integers(0, int(0.95 * rows))
    text = ''; while words(text) < 1024: text += rows[row][field]; row += 1; if words(text) > 1280: stop
(rows joined without a separator; the 1280 check can only fire once 1024 is passed, so in effect the loop stops
at the first row that brings the count to 1024 or more). The window is tokenizer(text, truncation=True,
max_length=S): the first S tokens, the tokenizer's special tokens included, exactly as their code calls it.

words(text) is nltk's word_tokenize count. word_tokenize splits sentences with nltk's trained English Punkt
model (the punkt_tab data, a separate download, not on PyPI). Where that data is missing (offline machines)
the same nltk word tokenizer runs over nltk's untrained Punkt, which also splits after abbreviations such as
"Mr." (one word more each). The count only decides at which row the text stops, 1024+ words (more than 1.5 x S
tokens for S = 512), so the first S tokens, the window, are the same either way; the result records which
counter ran. Datasets (field): wikitext103 = Salesforce/wikitext wikitext-103-v1 (text, the non-raw version),
pubmed_qa = qiaojin/PubMedQA pqa_labeled (long_answer), imdb = stanfordnlp/imdb (text), squad = rajpurkar/squad
(context).
"""

import argparse
import functools
import glob
import json
import os

import numpy as np
import torch

# source -> (hub repo, config, field, the authors' legacy hub name)
SOURCES = {
    "wikitext103": ("Salesforce/wikitext", "wikitext-103-v1", "text", "wikitext"),
    "pubmed_qa": ("qiaojin/PubMedQA", "pqa_labeled", "long_answer", "pubmed_qa"),
    "imdb": ("stanfordnlp/imdb", None, "text", "imdb"),
    "squad": ("rajpurkar/squad", None, "context", "squad"),
}
WORDS = (1024, 1280)  # the authors' min_word_count / max_word_count
START_FRACTION = 0.95  # the start row is drawn from the first 95% of the rows


@functools.lru_cache(maxsize=None)
def _word_tokenizer():
    """(nltk's word_tokenize when its English Punkt data is installed, else nltk's word tokenizer over an
    untrained Punkt), and the name of the one chosen."""
    import nltk
    from nltk.tokenize import NLTKWordTokenizer, word_tokenize
    from nltk.tokenize.punkt import PunktSentenceTokenizer
    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
        return word_tokenize, "nltk word_tokenize (punkt_tab english)"
    except LookupError:
        sentences, words = PunktSentenceTokenizer(), NLTKWordTokenizer()
        return (lambda text: [w for s in sentences.tokenize(text) for w in words.tokenize(s)],
                "nltk NLTKWordTokenizer over an untrained Punkt (punkt_tab data not installed)")


def word_count(text):
    """The number of nltk words of text (see the docstring for which tokenizer)."""
    return len(_word_tokenizer()[0](text))


def sample_text(row, n_rows, seed, words=WORDS, count=word_count):
    """The authors' text for repetition `seed`: (text, first row, one past the last row, its word count).
    row(i) -> the text field of row i."""
    lo, hi = words
    rng = np.random.default_rng(seed)
    start = idx = rng.integers(0, int(n_rows * START_FRACTION)).item()
    text, n = "", 0
    while n < lo:
        if idx >= n_rows:
            raise ValueError(f"Seed {seed}'s text starts at row {start} and runs past the last row ({n_rows}) with "
                             f"{n} words, fewer than {lo}; the dataset is too small.")
        text += row(idx)
        idx += 1
        n = count(text)
        if n > hi:
            break
    return text, start, idx, n


def load_rows(source, text_data=None):
    """The train split of `source` as a datasets.Dataset: DIR/<source>/ when --text_data DIR is given (a
    save_to_disk folder, or *.parquet / *.jsonl files), else the hub or its local cache. One sentence if neither."""
    if source not in SOURCES:
        raise ValueError(f"Unknown text source {source}; choose one of {', '.join(SOURCES)}.")
    repo, config, field, legacy = SOURCES[source]
    import datasets
    if text_data:
        folder = os.path.join(text_data, source)
        if any(os.path.isfile(os.path.join(folder, f)) for f in ("dataset_dict.json", "state.json")):
            ds = datasets.load_from_disk(folder)
            ds = ds["train"] if isinstance(ds, datasets.DatasetDict) else ds
        else:
            files = sorted(glob.glob(os.path.join(folder, "train*.parquet")) or glob.glob(os.path.join(folder, "*.parquet")))
            kind = "parquet"
            if not files:
                files, kind = sorted(glob.glob(os.path.join(folder, "train*.jsonl"))), "json"
            if not files:
                raise ValueError(f"{folder} holds no dataset (save_to_disk folder, train*.parquet or train*.jsonl); "
                                 f"write it with `python text_sources.py --download {text_data}` where there is "
                                 f"internet.")
            ds = datasets.load_dataset(kind, data_files=files, split="train")
    else:
        from hf_hub import hub_offline
        offline = hub_offline()
        ds, errors = None, []
        for name in (repo, legacy):
            try:
                ds = datasets.load_dataset(name, config, split="train")
                break
            except Exception as e:  # offline without a cache, hub down, renamed: the same for the user
                errors.append(type(e).__name__)
        if ds is None:
            where = "the local hub cache (offline)" if offline else "the Hugging Face hub"
            raise ValueError(f"{repo} ({config or 'default'}) could not be loaded from {where} "
                             f"({', '.join(errors)}); on a machine with internet run `python text_sources.py "
                             f"--download DIR` and pass --text_data DIR.")
    if field not in ds.column_names:
        raise ValueError(f"The {source} data has no column '{field}' (columns: {', '.join(ds.column_names)}).")
    return ds.select_columns([field])


def windows(source, num, seq_len, encode, text_data=None):
    """Seeds 0..num-1 -> (LongTensor [num, seq_len] of token ids, one dict per window: first row, end row, words,
    and the counter used). encode(text) -> the first seq_len token ids (the model's tokenizer, truncating)."""
    ds = load_rows(source, text_data)
    field = SOURCES[source][2]
    rows, meta = [], []
    for seed in range(num):
        text, start, end, n = sample_text(lambda i: ds[i][field] or "", len(ds), seed)
        ids = list(encode(text))[:seq_len]
        if len(ids) < seq_len:
            raise ValueError(f"Seed {seed}'s text ({n} words, rows {start}..{end - 1} of {source}) gives "
                             f"{len(ids)} tokens, fewer than --seq_len {seq_len}.")
        rows.append(ids)
        meta.append({"seed": seed, "start_row": start, "end_row": end, "words": n})
    return torch.tensor(rows, dtype=torch.long), meta


def describe(source):
    repo, config, field, _ = SOURCES[source]
    return (f"{repo}{'/' + config if config else ''} train, field {field}: the authors' sampler "
            f"({WORDS[0]}+ words from a random row, first S tokens); words by {_word_tokenizer()[1]}")


def download(out):
    """Each source's train split as out/<source>/train.parquet (run where the hub is reachable)."""
    import datasets
    for source, (repo, config, field, _) in SOURCES.items():
        ds = datasets.load_dataset(repo, config, split="train").select_columns([field])
        os.makedirs(os.path.join(out, source), exist_ok=True)
        path = os.path.join(out, source, "train.parquet")
        ds.to_parquet(path)
        print(f"wrote {path} ({len(ds)} rows)")



# word spans and val windows: what eval.py measures when the source is not one of the four above
# sequences: seed i (0..N-1) draws sequence i, so the first 10 of N=100 are the N=10 set

WIKITEXT = ("Salesforce/wikitext", "wikitext-103-raw-v1", "test")  # the paper's text (its split is not stated)
SPAN_WORDS = (1024, 1280)  # seed i picks a random span of 1024..1280 words, tokenised, cut to the first S tokens


def val_windows(data_dir, num, seq_len, split="val"):
    """Seed i -> a window of seq_len tokens of data_dir's split, starting where np.random.default_rng(i) says."""
    from data.tokens import get_batch, load_split
    n_tokens = len(load_split(data_dir, split))
    if n_tokens <= seq_len:
        raise ValueError(f"{data_dir}'s {split} split has {n_tokens} tokens, too few for windows of {seq_len}.")
    # starts < n_tokens - seq_len leave room for get_batch's shifted targets
    starts = np.array([np.random.default_rng(i).integers(0, n_tokens - seq_len) for i in range(num)])
    x, _ = get_batch(data_dir, split, num, seq_len, None, "cpu", starts=starts)
    assert x.shape == (num, seq_len), f"get_batch gave {tuple(x.shape)}, expected {(num, seq_len)}"
    return x


def text_spans(words, num, seq_len, encode):
    """Seed i -> a random span of SPAN_WORDS words of `words`, encoded and cut to the first seq_len tokens."""
    lo, hi = SPAN_WORDS
    if len(words) < hi:
        raise ValueError(f"The text has {len(words)} words, fewer than the {hi} a span may need.")
    rows = []
    for i in range(num):
        rng = np.random.default_rng(i)
        n = int(rng.integers(lo, hi + 1))
        start = int(rng.integers(0, len(words) - n + 1))
        ids = encode(" ".join(words[start:start + n]))[:seq_len]
        if len(ids) < seq_len:
            raise ValueError(f"Seed {i}'s span of {n} words gives {len(ids)} tokens, fewer than seq_len {seq_len}.")
        rows.append(ids)
    return torch.tensor(rows, dtype=torch.long)


def read_documents(path):
    """[(line number, text)] of a local file: a .jsonl holds one {"text": ...} document a line (blank lines skipped),
    any other file is one document (line 1). A line that is not such an object is a ValueError in one sentence."""
    with open(path, encoding="utf-8") as f:
        if not path.endswith(".jsonl"):
            return [(1, f.read())]
        docs = []
        for k, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except ValueError:
                doc = None
            if not isinstance(doc, dict) or not isinstance(doc.get("text"), str):
                raise ValueError(f"{path} line {k} is not a JSON object with a \"text\" string; a .jsonl source "
                                 f"holds one {{\"text\": ...}} document a line.")
            docs.append((k, doc["text"]))
        return docs


def read_words(path):
    """The words of a local file (read_documents: a .txt is one document, a .jsonl one document a line)."""
    return [w for _, text in read_documents(path) for w in text.split()]


def wikitext_words():
    """The words of WikiText-103 (raw) through `datasets` (or its cache); offline this fails with one sentence."""
    from hf_hub import hub_offline
    offline = hub_offline()
    try:
        from datasets import load_dataset
        ds = load_dataset(WIKITEXT[0], WIKITEXT[1], split=WIKITEXT[2])
    except Exception as e:  # offline, no cache, hub errors: all end the same way for the user
        where = "the local hub cache (offline)" if offline else "the Hugging Face hub"
        raise ValueError(f"WikiText-103 could not be loaded from {where} ({type(e).__name__}); "
                         "use --source val or a local .txt/.jsonl file instead.") from e
    return " ".join(ds["text"]).split()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description="Save the authors' four condensation text sources for offline use.")
    p.add_argument("--download", metavar="DIR", required=True, help="writes DIR/<source>/train.parquet")
    download(p.parse_args().download)
