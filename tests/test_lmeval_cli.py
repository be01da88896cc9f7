"""bench_lmeval_cli.py at toy size: lm-eval's own command line (its hf model) and eval.py --tasks on a tiny random
Llama with GPT-2's tokenizer, on the MMLU fixture rows (tests/fixtures/tasks/mmlu): the same documents, the same
log-likelihoods, the same answers and accuracies. lm-eval is the truth here; its task YAMLs include lm-eval's own
MMLU files, so prompts, few-shot examples and delimiters are its own.

    python -m pytest -q tests/test_lmeval_cli.py
"""
import json
import os

import pytest
import torch
import transformers
import yaml

import bench_lmeval_cli as cli
from data.tokenizer import write_gpt2_hf_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "tasks")
SUBJECTS = ["anatomy", "astronomy"]  # 2 test rows and 2 few-shot rows each


def tiny_llama(path):
    """A random 2-block Llama over GPT-2's vocabulary, with GPT-2's tokenizer saved beside it (lm-eval reads it
    with transformers, ours with tiktoken's GPT-2 encoding)."""
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=50257, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, bos_token_id=50256, eos_token_id=50256,
        tie_word_embeddings=True)).save_pretrained(path)
    transformers.GPT2TokenizerFast.from_pretrained(write_gpt2_hf_tokenizer(path)).save_pretrained(path)
    return path


def test_task_yamls_are_lm_eval_mmlu_on_local_rows(tmp_path):
    import lm_eval
    names = cli.write_task_yamls(str(tmp_path), FIXTURES, SUBJECTS)
    assert names == ["cli_mmlu_anatomy", "cli_mmlu_astronomy"]
    cfg = yaml.safe_load((tmp_path / "cli_mmlu_anatomy.yaml").read_text())
    default = os.path.join(os.path.dirname(lm_eval.__file__), "tasks", "mmlu", "default")
    assert cfg["include"] == os.path.join(default, "mmlu_anatomy.yaml")
    assert cfg["dataset_path"] == "json" and cfg["tag"] == []
    assert cfg["dataset_kwargs"]["data_files"] == {s: os.path.join(FIXTURES, "mmlu", "anatomy", f"{s}.jsonl")
                                                   for s in ("test", "dev")}
    with pytest.raises(SystemExit, match="no_such_subject/test.jsonl is missing"):
        cli.write_task_yamls(str(tmp_path), FIXTURES, ["no_such_subject"])


@pytest.mark.slow  # four command lines, each importing lm-eval or transformers: about a minute
def test_lm_eval_command_line_and_ours_agree_per_document(tmp_path):
    model_dir = tiny_llama(str(tmp_path / "model"))
    rows = cli.compare(model_dir, FIXTURES, SUBJECTS, limit=2, shots_list=[0, 2], work=str(tmp_path / "work"),
                       log=None)
    for row in rows:
        theirs, ours = row["lm_eval"][1], row["ours"]
        # every document of every subject, four choices each, on both sides
        assert sorted(theirs["lls"]) == sorted(ours["lls"]) == [(f"mmlu_{s}", d) for s in SUBJECTS for d in (0, 1)]
        for key, lls in theirs["lls"].items():
            assert len(lls) == 4 and ours["lls"][key] == pytest.approx(lls, abs=1e-4), (row["shots"], key)
            assert cli.argmax(ours["lls"][key]) == cli.argmax(lls), (row["shots"], key)
        assert ours["accs"] == {t: (pytest.approx(a, abs=1e-9), n) for t, (a, n) in theirs["accs"].items()}
        assert ours["acc"] == pytest.approx(theirs["acc"], abs=1e-9)
        assert theirs["seconds"] > 0 and ours["seconds"] > 0 and theirs["wall"] > theirs["seconds"]
    # the shots change the prompts: a 2-shot document's log-likelihoods are not its 0-shot ones
    assert rows[0]["ours"]["lls"][("mmlu_anatomy", 0)] != pytest.approx(rows[1]["ours"]["lls"][("mmlu_anatomy", 0)],
                                                                      abs=1e-3)
    table = cli.table(rows, [1])
    assert table.count("\n") == 3 and "| 2 |" in table and "4/4" in table
