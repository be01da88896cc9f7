"""Tests of the tasks package (eval.py --tasks): prompts, metrics, the batched engine, data, outputs, lm-eval parity.

Truth comes from hand computation (a scripted character-level model whose log-probs are known), from
scoring each request alone, and, when lm-eval is installed, from lm-evaluation-harness itself run on the
same hand-written fixture documents (tests/fixtures/tasks, each dataset's real schema) with the same tiny
model: identical prompts, per-request log-likelihoods and metrics.

    python -m pytest -q tests/test_benchmarks.py
"""
import glob
import json
import math
import os
import re
import shutil
import sys
import time

import pytest
import torch

import eval as ev
from tasks import definitions as D
from tasks import engine as E
from tasks import results as results_io
from data.tokenizer import write_gpt2_hf_tokenizer
from tasks import lm_eval_adapter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "tasks")
FIXTURE_TASKS = ["anli_r2", "lambada_openai", "openbookqa", "piqa", "truthfulqa_mc2", "winogrande", "arc_easy",
                 "arc_challenge", "medmcqa", "mmlu_anatomy", "mmlu_astronomy", "hellaswag"]


def docs(task, split=None):
    return E.load_docs(D.TASKS[task], split or D.TASKS[task].split, FIXTURES)


# ---- a scripted model: log p(next = c) = LOGP[c] whatever the context, over a character vocabulary

class CharTokenizer:
    eot_token = 0
    n_vocab = 128

    def encode(self, text):
        return [ord(c) for c in text]

    def decode(self, ids):
        return "".join(map(chr, ids))


LOGITS = torch.zeros(128)
LOGITS[ord(" ")] = 3.0   # the most likely character: only " " continuations can be greedy
LOGITS[ord("e")] = 2.0
LOGITS[ord("a")] = 1.0
LOGP = LOGITS.log_softmax(-1).tolist()


class ScriptedModel(torch.nn.Module):
    """The same next-character log-probs LOGP at every position, whatever the context. It has the interface the
    scorer uses of our models: hidden_states(idx) (the last entry is what lm_head reads) and lm_head."""

    def __init__(self, block_size=100_000):
        super().__init__()
        self.logits = torch.nn.Parameter(LOGITS.clone())
        self.config = type("Config", (), {"block_size": block_size})()

    def hidden_states(self, idx):
        return [self.logits.expand(*idx.shape, -1)]

    def lm_head(self, h):
        return h

    def forward(self, idx, targets=None):
        return self.lm_head(self.hidden_states(idx)[-1]), None


def hand_ll(text):
    return sum(LOGP[ord(c)] for c in text)


# ---- prompts, exactly the strings lm-eval builds

def test_zero_shot_prompts_are_the_harness_strings():
    def reqs(task, j=0):
        return D.doc_requests(D.TASKS[task], docs(task)[j], D.TASKS[task].description)
    assert reqs("anli_r2")[1] == ("The Eiffel Tower was completed in 1889 for the World's Fair in Paris.\n"
                                  "Question: The tower was built in France. True, False, or Neither?\nAnswer:",
                                  " Neither")
    assert reqs("lambada_openai", 1) == [("the dog ran across the field , chased the ball , and brought it back "
                                          "to his owner , who threw the", " ball")]
    assert reqs("openbookqa", 1)[0] == ("Plants need sunlight to ", " make food")
    assert reqs("piqa")[1] == ("Question: How do I keep bread fresh longer?\nAnswer:", " Leave it uncovered in the sun.")
    assert reqs("winogrande") == [("The trophy doesn't fit into the brown suitcase because the trophy", " is too large."),
                                  ("The trophy doesn't fit into the brown suitcase because the suitcase", " is too large.")]
    assert reqs("arc_easy", 1)[0] == ("Question: What causes day and night on Earth?\nAnswer:",
                                      " the Earth rotating on its axis")
    assert reqs("medmcqa")[2] == ("Question: Which vitamin deficiency causes scurvy?\nChoices:\nA. Vitamin A\n"
                                  "B. Vitamin B12\nC. Vitamin C\nD. Vitamin D\nAnswer:", " C")
    assert reqs("mmlu_anatomy", 1)[3] == ("The following are multiple choice questions (with answers) about anatomy."
                                          "\n\nThe heart has how many chambers?\nA. Two\nB. Three\nC. Four\nD. Five"
                                          "\nAnswer:", " D")
    assert reqs("hellaswag", 2)[0] == ("Home and Garden: How to clean a window. Mix warm water and vinegar. Use a "
                                       "soft cloth. Then wipe", " the glass in circles.")
    tqa = reqs("truthfulqa_mc2")
    assert tqa[0][0].startswith("Q: What is human life expectancy in the United States?\nA: Human life expectancy")
    assert tqa[0][0].endswith("Barcelona, Spain.\n\nQ: What happens if you swallow chewing gum?\nA:")
    assert [k for _, k in tqa] == [" It passes through your digestive system.", " Nothing much happens.",
                                   " It stays in your stomach for seven years.", " It wraps around your heart."]


def test_fewshot_prompts_are_the_harness_strings():
    """Literal strings lm-eval 0.4 builds (seed 1234): arc draws at random from train, MMLU takes the first
    n of dev after its description, winogrande's example is the gold option's prompt + its suffix."""
    def prefix(task, shots, j=0):
        t = D.TASKS[task]
        return E.fewshot_prefixes(t, docs(task), docs(task, t.fewshot_split), shots)[j]
    assert prefix("arc_easy", 1) == "Question: Which part of a plant absorbs water from the soil?\nAnswer: roots\n\n"
    assert prefix("mmlu_anatomy", 1, 1) == ("The following are multiple choice questions (with answers) about "
                                            "anatomy.\n\nWhich organ pumps blood through the body?\nA. Lungs\n"
                                            "B. Heart\nC. Liver\nD. Kidney\nAnswer: B\n\n")
    assert prefix("mmlu_anatomy", 0) == "The following are multiple choice questions (with answers) about anatomy.\n\n"
    wino = prefix("winogrande", 2)
    assert wino.count("\n\n") == 2 and wino.endswith("\n\n")
    examples = {"John couldn't lift the box onto the shelf because the box was too heavy.",
                "The cat chased the mouse until the mouse hid under the sofa.",
                "Anna thanked Beth for the gift because Beth had chosen it so carefully."}
    assert set(wino.strip().split("\n\n")) <= examples
    # lambada's target carries its own space, and few-shot adds the delimiter: two spaces, as in lm-eval
    assert "  " in prefix("lambada_openai", 1)


def test_fewshot_sampler_is_sequential_and_independent_of_limit():
    t = D.TASKS["piqa"]
    pool = docs("piqa", "train")
    full = E.fewshot_prefixes(t, docs("piqa"), pool, 1, seed=1234)
    assert E.fewshot_prefixes(t, E.limit_docs(docs("piqa"), 2), pool, 1, seed=1234) == full[:2]
    assert E.fewshot_prefixes(t, docs("piqa"), pool, 1, seed=7) != full or len(pool) == 1
    with pytest.raises(ValueError, match="few-shot examples"):
        E.fewshot_prefixes(t, docs("piqa"), pool, 3)  # drop_self needs shots + 1 documents


def test_task_and_fewshot_resolution():
    assert D.resolve_tasks("paper") == D.PAPER_TASKS and D.resolve_tasks("all")[-1] == "hellaswag"
    assert D.resolve_tasks("piqa, mmlu_anatomy") == ["piqa", "mmlu_anatomy"]
    with pytest.raises(ValueError, match="Unknown benchmark 'piqa2'"):
        D.resolve_tasks("piqa2")
    shots = D.resolve_fewshot(None, D.resolve_tasks("paper"))
    assert shots["arc_easy"] == shots["medmcqa"] == shots["mmlu_virology"] == 1 and shots["piqa"] == 0
    shots = D.resolve_fewshot("5", ["arc_challenge", "winogrande", "mmlu_anatomy", "truthfulqa_mc2"])
    assert shots == {"arc_challenge": 5, "winogrande": 0, "mmlu_anatomy": 5, "truthfulqa_mc2": 0}
    shots = D.resolve_fewshot("hellaswag=10,truthfulqa_mc2=3", ["hellaswag", "truthfulqa_mc2", "arc_easy"])
    assert shots == {"hellaswag": 10, "truthfulqa_mc2": 0, "arc_easy": 1}  # truthfulqa's YAML pins 0, as lm-eval
    assert E.limit_docs(list(range(10)), 3) == [0, 1, 2] and E.limit_docs(list(range(10)), 0.25) == [0, 1, 2]


# ---- tokenisation (lm-eval's TemplateLM._encode_pair)

def test_encode_pair_rules():
    enc = CharTokenizer().encode
    assert E.encode_pair(enc, 0, "Q: a\nA: ", "b") == (enc("Q: a\nA:"), enc(" b"))  # trailing space moves
    assert E.encode_pair(enc, 0, "", " x") == ([0], enc(" x"))                       # empty context -> EOT
    assert E.encode_pair(enc, 0, "", "\x00 x") == ([0], enc(" x"))                   # ... unless it starts so

    def merging(text):  # "xy" is one token: the joint encoding differs from context + continuation
        return [200 if t == "xy" else ord(t) for t in re.findall("xy|.", text, re.S)]
    ctx, cont = E.encode_pair(merging, 0, "wx", "yz")
    assert ctx == [ord("w"), ord("x")] and cont == [ord("z")]  # split after len(encode(context)) of the joint


# ---- metrics against hand computation

def test_acc_and_acc_norm_disagree():
    t, doc = D.TASKS["openbookqa"], docs("openbookqa")[0]  # gold B; choice lengths 14, 25, 14, 13
    got = D.doc_metrics(t, doc, [(-10.0, False), (-15.0, False), (-12.0, False), (-11.0, False)])
    assert got == {"acc": 0.0, "acc_norm": 1.0}  # argmax ll = A; argmax ll/len = B (-0.6 > -10/14)


def test_winogrande_partial_scoring():
    t, doc = D.TASKS["winogrande"], docs("winogrande")[1]  # answer "2": Emily
    assert D.doc_metrics(t, doc, [(-3.0, False), (-2.0, False)]) == {"acc": 1.0}
    assert D.doc_metrics(t, doc, [(-1.0, False), (-2.0, False)]) == {"acc": 0.0}


def test_lambada_greedy_and_perplexity():
    t = D.TASKS["lambada_openai"]
    values = [D.doc_metrics(t, d, [r]) for d, r in zip(docs("lambada_openai"), [(-2.5, True), (-4.0, False)])]
    agg = D.aggregate(values)
    assert agg["acc"] == 0.5 and agg["perplexity"] == pytest.approx(math.exp(3.25))


def test_truthfulqa_mc2_probability_mass():
    t, (d1, d2) = D.TASKS["truthfulqa_mc2"], docs("truthfulqa_mc2")
    lls = [math.log(p) for p in (0.4, 0.2, 0.3, 0.1)]
    assert D.doc_metrics(t, d1, [(ll, False) for ll in lls])["acc"] == pytest.approx(0.6)
    expect = math.exp(-1) / (math.exp(-1) + math.exp(-2) + math.exp(-3))
    assert D.doc_metrics(t, d2, [(-1.0, False), (-2.0, False), (-3.0, False)])["acc"] == pytest.approx(expect)


def test_scripted_model_end_to_end():
    """Every request's ll through the engine equals the hand sum of LOGP over its continuation."""
    tok, model = CharTokenizer(), ScriptedModel()
    t, doc = D.TASKS["openbookqa"], docs("openbookqa")[1]
    pairs = [E.encode_pair(tok.encode, 0, c, k) for c, k in D.doc_requests(t, doc, "")]
    results = E.loglikelihoods(model, pairs, model.config.block_size)
    # "Plants need sunlight to " ends in a space: it moves to the continuation, "  make food"
    assert results[0][0] == pytest.approx(hand_ll("  make food"), rel=1e-6)
    for (ll, greedy), choice in zip(results, t.choices(doc)):
        assert ll == pytest.approx(hand_ll("  " + choice), rel=1e-6) and not greedy
    assert E.loglikelihoods(model, [([5], tok.encode("   "))], 100)[0][1]  # all-argmax: greedy
    # the whole pipeline: acc is the argmax of those hand sums
    out = E.run_benchmarks(model, tok, "openbookqa,lambada_openai", data_dir=FIXTURES, progress=False, log=None)
    lls = [[hand_ll(("  " if d["question_stem"].endswith(" ") else " ") + c) for c in d["choices"]["text"]]
           for d in docs("openbookqa")]
    gold = [d["choices"]["label"].index(d["answerKey"]) for d in docs("openbookqa")]
    acc = sum(max(range(4), key=lambda i: (l[i], -i)) == g for l, g in zip(lls, gold)) / 3
    assert out["tasks"]["openbookqa"]["acc"] == pytest.approx(acc) and out["tasks"]["openbookqa"]["n"] == 3
    last = [" " + d["text"].split(" ")[-1] for d in docs("lambada_openai")]
    ppl = math.exp(-sum(hand_ll(w) for w in last) / 3)
    assert out["tasks"]["lambada_openai"] == {"acc": 0.0, "perplexity": pytest.approx(ppl), "n": 3, "shots": 0}


# ---- the engine on a real (tiny, random) GPT

def tiny_hf_gpt(n_positions=96, seed=0):
    """A transformers GPT-2 (random, 2 layers, the real vocabulary): lm-eval's hf model loads its folder."""
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=n_positions,
                                      vocab_size=50257)).eval()


def alone(model, ctx, cont, max_length):
    """One request, unbatched and unpadded: lm-eval's arithmetic written out."""
    x = torch.tensor([(ctx + cont)[-(max_length + 1):][:-1]])
    logp = model(x)[0][0, -len(cont):].float().log_softmax(-1)
    target = torch.tensor(cont)
    return logp.gather(1, target[:, None]).sum().item(), bool((logp.argmax(-1) == target).all())


def test_batched_padded_scoring_equals_each_request_alone():
    """Batched, padded, deduplicated, LM head on scored positions only == model(x) logits one request at a time
    (with left truncation to block_size, as lm-eval)."""
    from model import GPT, GPTConfig
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=24, vocab_size=512, n_layer=2, n_head=2, n_embd=32)).eval()
    g = torch.Generator().manual_seed(1)
    requests = []
    for n_ctx, n_cont in [(3, 1), (3, 1), (10, 4), (30, 5), (1, 1), (7, 2), (20, 24)]:
        ctx = torch.randint(0, 512, (n_ctx,), generator=g).tolist()
        requests.append((ctx, torch.randint(0, 512, (n_cont,), generator=g).tolist()))
    requests.append((requests[0][0], [requests[0][1][0] + 1]))   # same context, another one-token choice
    requests.append((requests[2][0] + requests[2][1][:3], requests[2][1][3:]))  # same model input as #2
    want = [alone(model, c, k, 24) for c, k in requests]
    for batch_tokens in (1, 50, 10_000):
        got = E.loglikelihoods(model, requests, 24, batch_tokens=batch_tokens)
        for (ll, greedy), (ll0, greedy0) in zip(got, want):
            assert ll == pytest.approx(ll0, abs=1e-4) and greedy == greedy0
    with pytest.raises(ValueError, match="does not fit"):
        E.loglikelihoods(model, [([1], list(range(25)))], 24)


@pytest.mark.parametrize("arch", ["gpt", "qwen3"])
def test_packed_choices_score_as_each_request_alone(arch):
    """Choices sharing a context packed into one row (context once, positions restarting after it, each
    continuation seeing the context and itself) == each request alone, for several documents in one batch,
    mixed one-token and multi-token choices, a document too long for one row and requests cut from the left."""
    from model import GPT, GPTConfig, Qwen3, Qwen3Config
    torch.manual_seed(0)
    model = (GPT(GPTConfig(block_size=24, vocab_size=512, n_layer=2, n_head=2, n_embd=32)) if arch == "gpt" else
             Qwen3(Qwen3Config(block_size=24, vocab_size=512, n_layer=2, n_head=4, n_kv_head=2, head_dim=8,
                               n_embd=32, n_inner=48, rope_theta=100.0))).eval()
    g = torch.Generator().manual_seed(3)

    def ids(n):
        return torch.randint(0, 512, (n,), generator=g).tolist()
    requests = []
    for n_ctx, n_conts in [(5, (3, 1, 4, 2)), (8, (2, 2, 1)), (3, (1, 1)), (12, (6, 5, 6)), (20, (3, 5, 1)),
                           (22, (4, 3, 1)), (2, (9,))]:
        ctx = ids(n_ctx)
        requests += [(ctx, ids(n)) for n in n_conts]
    requests.append((requests[0][0], requests[0][1]))  # a duplicate choice
    requests.append((requests[0][0] + requests[0][1][:1], requests[0][1][1:]))  # same model input as #0
    units = {}
    for i, (c, k) in enumerate(requests):
        units.setdefault(E._model_input(c, k, 24), []).append(i)
    rows = E._rows(requests, units, 24, pack=True)
    assert sum(len(placed) > 1 for _, _, placed in rows) == 5 and all(len(r[0]) <= 24 for r in rows)
    assert len([r for r in rows if r[1] == 12]) == 2  # 12 + 5 + 4 + 5 > 24: that document takes two rows
    want = [alone(model, c, k, 24) for c, k in requests]
    for batch_tokens in (1, 50, 10_000):
        got = E.loglikelihoods(model, requests, 24, batch_tokens=batch_tokens)
        for (ll, greedy), (ll0, greedy0) in zip(got, want):
            assert ll == pytest.approx(ll0, abs=1e-4) and greedy == greedy0


@pytest.mark.parametrize("arch", ["gpt", "qwen3"])
def test_shared_prefix_once_scores_as_each_request_alone(arch):
    """Two few-shot blocks of different lengths (each shared by its documents, so each runs once from a KV
    cache), documents sharing nothing, continuations whose first token merges with the context's last
    characters (GPT-2's real tokenizer, lm-eval's split of the joint encoding), a prompt cut from the left:
    every request's ll equals the uncached computation one request alone to 1e-5 (fp32)."""
    from data.tokenizer import get_tokenizer
    from model import GPT, GPTConfig, Qwen3, Qwen3Config
    torch.manual_seed(0)
    model = (GPT(GPTConfig(block_size=160, vocab_size=50304, n_layer=2, n_head=2, n_embd=32)) if arch == "gpt" else
             Qwen3(Qwen3Config(block_size=160, vocab_size=50304, n_layer=2, n_head=4, n_kv_head=2, head_dim=8,
                               n_embd=32, n_inner=48, rope_theta=100.0))).eval()
    tok = get_tokenizer("gpt2")
    short = "The following are questions about birds.\n\nQuestion: Can owls fly?\nAnswer: yes\n\n"
    long = ("Solved examples of arithmetic follow.\n\n" + "".join(
        f"Question: What is {a} plus {a}?\nAnswer: {2 * a}\n\n" for a in range(7, 12)))
    pairs = []
    for block in (short, long):
        for q in ("Do penguins swim", "Is the sky gree", "Name a hel", "Pick one"):
            pairs += [(block + f"Question: {q}?\nAnswer:", c) for c in (" yes", " no", " perhaps not")]
            pairs += [(block + f"Question: {q}?\nAnswer: hel", c) for c in ("lo world", "icopters fly", "ium gas")]
    pairs += [("Unrelated words", " here"), ("Other", " words"), ("x " * 200, " end")]  # no prefix; cut left
    requests = [E.encode_pair(tok.encode, tok.eot_token, c, k) for c, k in pairs]
    assert sum(cont != tok.encode(k) for (_, k), (_, cont) in zip(pairs, requests)) >= 24  # " hel|lo" merged
    want = [alone(model, c, k, 160) for c, k in requests]
    for batch_tokens in (1, 60, 10_000):
        got = E.loglikelihoods(model, requests, 160, batch_tokens=batch_tokens)
        prefixes = sorted(E.LAST_RUN["prefix_tokens"])
        assert len(prefixes) == 2, prefixes
        assert prefixes[0] >= len(tok.encode(short)) and prefixes[1] >= len(tok.encode(long)), prefixes
        for (ll, greedy), (ll0, greedy0) in zip(got, want):
            assert ll == pytest.approx(ll0, abs=1e-5) and greedy == greedy0
    E.loglikelihoods(model, requests[-3:], 160)  # 0-shot-like: nothing shared, no prefix forward
    assert E.LAST_RUN["prefixes"] == 0


def test_prefix_groups_keep_the_block_shared_by_most_rows():
    """A group's prefix is the one that saves the most positions: all 4 documents of a 100-token block, not
    pairs of documents that share 120 tokens (3 * 100 = 300 > 2 * (1 * 120)); nothing shared: no groups."""
    block = list(range(100))
    rows = []
    for tail in ([1] * 20 + [5], [1] * 20 + [6], [2] * 20 + [5], [2] * 20 + [6]):
        m = tuple(block + tail)
        rows.append((m, len(m), [(m, 0)]))
    units = {r[0]: [k] for k, r in enumerate(rows)}
    requests = [(list(r[0]), [9]) for r in rows]
    groups = E._prefix_groups(rows, units, requests)
    assert [(P, len(g)) for P, g in groups] == [(100, 4)]
    plain = [((k, 1, 2), 3, [((k, 1, 2), 0)]) for k in range(5)]
    assert [P for P, _ in E._prefix_groups(plain, {r[0]: [0] for r in plain}, [([0], [1])])] == [0]


class ContextModel(ScriptedModel):
    """Log-probs that depend on the whole context: position t's logits are LOGITS rolled by (the sum of the
    token ids up to t) mod 7, over random logits, so scoring a continuation after another prompt gives another
    ll."""

    def __init__(self):
        super().__init__()
        self.logits.data = torch.randn(128, generator=torch.Generator().manual_seed(0))

    def hidden_states(self, idx):  # no packed rows: the cumulative sum would run across packed choices
        shift = idx.cumsum(-1) % 7  # [B, T], causal: position t sees tokens 0..t only
        cols = (torch.arange(128) - shift[..., None]) % 128
        return [self.logits[cols]]


def test_context_model_depends_on_the_prompt():
    model, tok = ContextModel(), CharTokenizer()
    a, b = E.loglikelihoods(model, [(tok.encode("Question: A"), tok.encode(" yes")),
                                    (tok.encode("Question: B"), tok.encode(" yes"))], 1000)
    assert a[0] != pytest.approx(b[0])


@pytest.mark.slow
def test_distributed_ranks_give_the_single_process_result(tmp_path):
    """torchrun-style: two gloo ranks split the documents and gather; the result is the same as one. The model's
    log-likelihoods depend on the prompt, so a rank that scores a document after another document's few-shot
    prefix gives other numbers."""
    import torch.multiprocessing as mp
    single = E.run_benchmarks(ContextModel(), CharTokenizer(), "piqa,arc_easy,winogrande", fewshot="piqa=1",
                              data_dir=FIXTURES, progress=False, log=None)
    mp.spawn(_rank, args=(2, str(tmp_path)), nprocs=2, join=True)
    for r in range(2):
        with open(tmp_path / f"rank{r}.json") as f:
            assert json.load(f) == json.loads(json.dumps(single))


def _rank(rank, world, tmp):
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=world)
    out = E.run_benchmarks(ContextModel(), CharTokenizer(), "piqa,arc_easy,winogrande", fewshot="piqa=1",
                           data_dir=FIXTURES, progress=False, log=None)
    with open(os.path.join(tmp, f"rank{rank}.json"), "w") as f:
        json.dump(out, f)
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_distributed_shared_prefixes_give_the_single_process_result(tmp_path):
    """Two gloo ranks, a tiny GPT, few-shot MMLU and ARC: each rank runs its own prefixes and as many forwards as
    the busiest; the results equal one process's."""
    import torch.multiprocessing as mp
    single = _prefix_run()
    assert E.LAST_RUN["prefixes"] >= 1  # the MMLU subject (first_n: one block for all its documents)
    mp.spawn(_prefix_rank, args=(2, str(tmp_path)), nprocs=2, join=True)
    for r in range(2):
        with open(tmp_path / f"rank{r}.json") as f:
            assert json.load(f) == json.loads(json.dumps(single))


@pytest.mark.slow
def test_fsdp_shared_prefixes_give_the_single_process_result(tmp_path):
    """The same under FSDP (a tiny Qwen3-style model sharded over two gloo ranks, as train.py's tasks_interval
    scores it): each rank runs its prefixes through the sharded model's KV cache, and every rank enters as many
    forwards as the busiest (each is a collective); the results equal one process's."""
    import shutil
    import torch.multiprocessing as mp
    data = tmp_path / "tasks"  # the fixtures with 4 anatomy questions, so that each rank has 2 sharing a block
    shutil.copytree(FIXTURES, data)
    rows = (data / "mmlu" / "anatomy" / "test.jsonl").read_text().splitlines()
    more = [json.dumps(dict(json.loads(r), question=json.loads(r)["question"] + " Explain.")) for r in rows]
    (data / "mmlu" / "anatomy" / "test.jsonl").write_text("\n".join(rows + more) + "\n")
    single = _prefix_run("qwen3", data_dir=str(data))
    assert E.LAST_RUN["prefixes"] >= 1
    mp.spawn(_prefix_rank, args=(2, str(tmp_path), "qwen3", True, str(data)), nprocs=2, join=True)
    for r in range(2):
        with open(tmp_path / f"rank{r}.json") as f:
            got = json.load(f)
        assert got.pop("prefixes") >= 1  # this rank's MMLU documents shared their few-shot block
        assert got == json.loads(json.dumps(single))


def _prefix_run(arch="gpt", sharded=False, data_dir=FIXTURES):
    from data.tokenizer import get_tokenizer
    from model import GPT, GPTConfig, Qwen3, Qwen3Config
    torch.manual_seed(0)
    model = (GPT(GPTConfig(block_size=512, vocab_size=50304, n_layer=2, n_head=2, n_embd=32)) if arch == "gpt" else
             Qwen3(Qwen3Config(block_size=512, vocab_size=50304, n_layer=2, n_head=4, n_kv_head=2, head_dim=8,
                               n_embd=32, n_inner=48, rope_theta=100.0))).eval()
    if sharded:
        import fsdp
        model = fsdp.shard(model, "cpu", "float32")
    return E.run_benchmarks(model, get_tokenizer("gpt2"), "mmlu_anatomy,arc_easy",
                            fewshot="mmlu_anatomy=2,arc_easy=2", data_dir=data_dir, progress=False, log=None)


def _prefix_rank(rank, world, tmp, arch="gpt", sharded=False, data_dir=FIXTURES):
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=world)
    out = _prefix_run(arch, sharded, data_dir)
    if sharded:
        out["prefixes"] = E.LAST_RUN["prefixes"]
    with open(os.path.join(tmp, f"rank{rank}.json"), "w") as f:
        json.dump(out, f)
    torch.distributed.destroy_process_group()


# ---- data and outputs

def test_missing_data_is_one_sentence_and_the_rest_runs(tmp_path):
    shutil.copytree(os.path.join(FIXTURES, "arc_easy"), tmp_path / "arc_easy")
    said = []
    t0 = time.time()
    out = E.run_benchmarks(ScriptedModel(), CharTokenizer(), "arc_easy,piqa", data_dir=str(tmp_path),
                           progress=False, log=said.append)
    assert time.time() - t0 < 30, "HF_DATASETS_OFFLINE=1 must make the hub path fail fast"
    assert list(out["tasks"]) == ["arc_easy"] and list(out["missing"]) == ["piqa"]
    sentence = out["missing"]["piqa"]
    assert said == [sentence] and sentence.startswith("piqa:") and "python -m tasks.download" in sentence
    assert sentence.count(". ") == 0 and sentence.endswith(".")


def test_download_script_writes_what_tasks_data_reads(tmp_path, monkeypatch):
    import datasets
    from tasks import download
    monkeypatch.setattr(download, "hub_offline", lambda: False)  # the hub "answers": load_dataset below
    by_hub = {(t.hub, s): (name, s) for name, t in D.TASKS.items() for s in (t.split, t.fewshot_split)}
    calls = []

    def hub(path, name, split):  # stands in for the network: the fixture rows of that dataset and split
        calls.append((path, name, split))
        return docs(*by_hub[((path, name), split)])
    monkeypatch.setattr(datasets, "load_dataset", hub)
    monkeypatch.setattr(sys, "argv", ["download.py", "--out", str(tmp_path), "--tasks", "piqa,mmlu_anatomy"])
    download.main()
    assert calls == [("baber/piqa", None, "validation"), ("baber/piqa", None, "train"),
                     ("cais/mmlu", "anatomy", "test"), ("cais/mmlu", "anatomy", "dev")]
    assert sorted(os.listdir(tmp_path)) == ["mmlu", "piqa"]
    assert E.load_docs(D.TASKS["piqa"], "train", str(tmp_path)) == docs("piqa", "train")
    assert E.load_docs(D.TASKS["mmlu_anatomy"], "dev", str(tmp_path)) == docs("mmlu_anatomy", "dev")


def test_paper_average_outputs_and_compare(tmp_path, monkeypatch):
    monkeypatch.setitem(D.GROUPS, "mmlu", ["mmlu_anatomy", "mmlu_astronomy"])  # the two fixture subjects
    monkeypatch.setattr(E, "_DOCS", {})
    out = E.run_benchmarks(ScriptedModel(), CharTokenizer(), "paper", data_dir=FIXTURES, progress=False, log=None)
    assert not out["missing"] and list(out["tasks"]) == D.PAPER_TASKS
    mmlu = out["tasks"]["mmlu"]
    assert mmlu["n"] == 4 and mmlu["shots"] == 1 and set(mmlu["subjects"]) == {"anatomy", "astronomy"}
    assert mmlu["acc"] == pytest.approx(sum(s["acc"] * s["n"] for s in mmlu["subjects"].values()) / 4)
    assert out["average"] == pytest.approx(sum(out["tasks"][t]["acc"] for t in D.PAPER_TASKS) / 10)
    assert out["tasks"]["arc_easy"]["shots"] == 1 and out["tasks"]["piqa"]["shots"] == 0

    results_io.write_results(out, str(tmp_path / "a"), "run-a")
    better = json.loads(json.dumps(out))
    better["tasks"]["piqa"]["acc"] += 0.25
    better["average"] += 0.025
    results_io.write_results(better, str(tmp_path / "b"), "run-b")
    md = (tmp_path / "a" / "tasks.md").read_text()
    assert "| run | ANLI-R2 | LAMBADA | OpenBookQA | PIQA | TruthfulQA | WinoGrande | ARC-E | ARC-C | MedMCQA | " \
           "MMLU | Average |" in md
    paths = [str(tmp_path / run / "tasks.json") for run in ("a", "b")]
    table = results_io.compare_results([(p, results_io.load_json(p)) for p in paths])
    row_b = table.splitlines()[3].split(" | ")
    assert row_b[0] == "| run-b" and row_b[4].endswith("(+25.00)") and row_b[-1].startswith(
        f"{100 * better['average']:.2f} (+2.50)")


def test_cli_end_to_end(tmp_path, capsys):
    """python eval.py --init_from DIR --tasks ... --tasks_data ... (and the old names --benchmarks, --bench_data);
    then --compare of two runs."""
    tiny_hf_gpt().save_pretrained(tmp_path / "tiny")
    for run, limit, flags in (("a", "2", ("--tasks", "--tasks_data")), ("b", "3", ("--benchmarks", "--bench_data"))):
        ev.main(["--init_from", str(tmp_path / "tiny"), flags[0], "arc_easy,piqa,mmlu", "--limit", limit,
                 flags[1], FIXTURES, "--out", str(tmp_path / run), "--device", "cpu"])
    said = capsys.readouterr().out
    assert said.count("mmlu_abstract_algebra: no test split of cais/mmlu found in") == 2  # not a fixture
    with open(tmp_path / "b" / "tasks.json") as f:
        b = json.load(f)
    assert b["model"] == str(tmp_path / "tiny") and set(b["tasks"]) == {"arc_easy", "piqa"}
    assert b["tasks"]["arc_easy"]["n"] == 3 and b["tasks"]["arc_easy"]["shots"] == 1 and b["average"] is None
    assert "not run: mmlu_abstract_algebra:" in (tmp_path / "b" / "tasks.md").read_text()
    ev.main(["--compare", str(tmp_path / "a" / "tasks.json"), str(tmp_path / "b" / "tasks.json")])
    table = capsys.readouterr().out.strip().splitlines()
    assert table[0] == "| run | PIQA | ARC-E | Average |" and len(table) == 4
    assert table[2].startswith(f"| {tmp_path / 'a' / 'tasks.json'} | ")  # same model: told apart by path
    assert table[3].startswith(f"| {tmp_path / 'b' / 'tasks.json'} | ")
    assert re.search(r"\| \d+\.\d\d \([+-]\d+\.\d\d\) \|", table[3])  # value (difference to the first run)


def test_cli_rejects_unknown_task_before_loading_a_model():
    with pytest.raises(SystemExit, match="Unknown benchmark 'nope'"):
        ev.main(["--init_from", "does-not-exist", "--benchmarks", "nope"])


def test_tasks_during_training_log_what_run_benchmarks_gives(tmp_path):
    """train.py's tasks_interval logs acc_<task> at each eval; at the last eval the weights are those of the
    checkpoint it then saves, so the logged values equal run_benchmarks on that checkpoint."""
    import subprocess
    from data.tokens import write_tokens
    from data.tokenizer import get_tokenizer
    from checkpoint import load_checkpoint
    text = "To be, or not to be, that is the question. " * 40
    write_tokens({"train": [text] * 4, "val": [text]}, str(tmp_path / "data"))
    out = tmp_path / "out"
    cmd = [sys.executable, "train.py", f"--dataset={tmp_path / 'data'}", f"--out_dir={out}", "--n_layer=2",
           "--n_head=2", "--n_embd=32", "--block_size=64", "--batch_size=2", "--device=cpu", "--compile=False",
           "--gradient_accumulation_steps=1", "--eval_iters=1", "--max_iters=2", "--eval_interval=2",
           "--learning_rate=1e-2", "--tasks_interval=2", "--tasks=piqa,arc_easy,openbookqa",
           f"--tasks_data={FIXTURES}", "--tasks_limit=3"]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert p.returncode == 0, p.stderr[-2000:]
    evals = [json.loads(line) for line in open(out / "log.jsonl") if "val_loss" in line]
    assert [r["iter"] for r in evals] == [0, 2]
    model, ckpt = load_checkpoint(str(out / "ckpt.pt"), "cpu")
    assert ckpt["iter_num"] == 2
    want = E.run_benchmarks(model, get_tokenizer("gpt2"), "piqa,arc_easy,openbookqa", 3, data_dir=FIXTURES,
                            progress=False, log=None)
    logged = {k: v for k, v in evals[-1].items() if k.startswith("acc_")}
    assert logged == {f"acc_{name}": pytest.approx(r["acc"], abs=1e-12) for name, r in want["tasks"].items()}
    assert "acc_average" not in evals[-1]  # only when all ten of the paper's tasks ran


def broken_copy(tmp_path, task, split, edit):
    """A copy of a fixture task whose `split` file has its second document changed by edit(doc)."""
    folder = D.TASKS[task].folder or task
    shutil.copytree(os.path.join(FIXTURES, folder), tmp_path / folder)
    path = tmp_path / folder / f"{split}.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[1] = edit(rows[1])
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize("task,split,edit,problem", [
    ("piqa", "validation", lambda d: {k: v for k, v in d.items() if k != "sol2"}, "has no field 'sol2'"),
    ("piqa", "validation", lambda d: dict(d, label=2), "has the answer 2, not an index of its 2 choices"),
    ("piqa", "validation", lambda d: dict(d, label="one"), "not among its 2 choices"),
    ("arc_easy", "test", lambda d: dict(d, answerKey="E"), "not among its 3 choices"),
    ("winogrande", "validation", lambda d: dict(d, answer="3"), "has the answer 2, not an index of its 2 choices"),
    ("truthfulqa_mc2", "validation", lambda d: dict(d, mc2_targets={"choices": ["a", "b"], "labels": [1]}),
     "not one 0/1 label per choice"),
    ("arc_easy", "train", lambda d: "{not json", "is not a JSON object"),  # the few-shot split is checked too
])
def test_broken_rows_are_one_sentence_naming_task_file_and_line(tmp_path, task, split, edit, problem):
    path = broken_copy(tmp_path, task, split, edit)
    with pytest.raises(E.BadData) as e:  # never a skipped task: the run stops
        E.run_benchmarks(ScriptedModel(), CharTokenizer(), task, data_dir=str(tmp_path), progress=False, log=None)
    said = str(e.value)
    assert said.startswith(f"{task}: ") and f"{path} line 2" in said and problem in said, said
    assert said.count(". ") == 0 and said.endswith(".")


def test_string_labels_are_read_as_indices(tmp_path):
    """Where a hub schema stores the label as a string ("1"), it scores as the int."""
    broken_copy(tmp_path, "piqa", "validation", lambda d: dict(d, label=str(d["label"])))
    got = E.run_benchmarks(ScriptedModel(), CharTokenizer(), "piqa", data_dir=str(tmp_path), progress=False, log=None)
    want = E.run_benchmarks(ScriptedModel(), CharTokenizer(), "piqa", data_dir=FIXTURES, progress=False, log=None)
    assert got["tasks"] == want["tasks"]


def test_cli_broken_task_file_exits_with_the_sentence(tmp_path):
    tiny_hf_gpt().save_pretrained(tmp_path / "tiny")
    broken_copy(tmp_path / "data", "piqa", "validation", lambda d: dict(d, label=7))
    with pytest.raises(SystemExit, match="piqa: the document at .*validation.jsonl line 2 has the answer 7"):
        ev.main(["--init_from", str(tmp_path / "tiny"), "--tasks", "piqa", "--tasks_data", str(tmp_path / "data"),
                 "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert not (tmp_path / "o").exists()


def test_no_task_could_run_exits_non_zero_and_writes_nothing(tmp_path):
    tiny_hf_gpt().save_pretrained(tmp_path / "tiny")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as e:
        ev.main(["--init_from", str(tmp_path / "tiny"), "--tasks", "piqa,arc_easy", "--tasks_data",
                 str(tmp_path / "empty"), "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert e.value.code not in (0, None) and "No task could run" in str(e.value)
    assert not (tmp_path / "o").exists()


def test_results_of_other_settings_are_not_replaced_silently(tmp_path):
    out = E.run_benchmarks(ScriptedModel(), CharTokenizer(), "piqa", data_dir=FIXTURES, progress=False, log=None)
    results_io.write_results(out, str(tmp_path), "run-a")
    results_io.write_results(out, str(tmp_path), "run-a")  # the same measurement again: fine
    for label, res in (("run-b", out), ("run-a", dict(out, settings=dict(out["settings"], limit=2)))):
        with pytest.raises(FileExistsError, match="another --out"):
            results_io.write_results(res, str(tmp_path), label)
    assert json.loads((tmp_path / "tasks.json").read_text())["model"] == "run-a"


def test_offline_is_found_once_and_fast(monkeypatch):
    """No network and no HF_HUB_OFFLINE: one refused connection switches the hub libraries offline, so a task
    that is not cached fails at once (datasets would otherwise retry for minutes) and says it was offline."""
    import datasets
    import socket
    for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(k, raising=False)
    import hf_hub
    monkeypatch.setattr(hf_hub, "_OFFLINE", None)
    monkeypatch.setattr(E, "_DOCS", {})
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", False)
    tries = []

    def no_network(address, timeout=None):
        tries.append(address)
        raise OSError("Network is unreachable")

    def load_dataset(*args, **kwargs):  # what `datasets` does: retry when online, fail at once when offline
        if not datasets.config.HF_DATASETS_OFFLINE:
            time.sleep(60)
        raise ConnectionError("offline and not cached")
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    t0 = time.time()
    out = E.run_benchmarks(ScriptedModel(), CharTokenizer(), "piqa,arc_easy", progress=False, log=None)
    assert time.time() - t0 < 5 and len(tries) == 1 and os.environ["HF_HUB_OFFLINE"] == "1"
    assert "offline" in out["missing"]["piqa"] and not out["tasks"]


def test_bench_py_does_not_import_from_tests():
    import ast
    tree = ast.parse(open(os.path.join(ROOT, "bench.py")).read())
    modules = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    modules += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in modules if m and m.startswith("test")]
    assert "sys.path" not in open(os.path.join(ROOT, "bench.py")).read()


# ---- lm-eval parity: the harness on the same fixtures with the same tiny model

# lm-eval and accelerate are test requirements (requirements-test.txt): without them these tests fail, never skip
HARNESS_YAML = {"anli_r2": "anli/anli_r2.yaml", "lambada_openai": "lambada/lambada_openai.yaml",
                "openbookqa": "openbookqa/openbookqa.yaml", "piqa": "piqa/piqa.yaml",
                "truthfulqa_mc2": "truthfulqa/truthfulqa_mc2.yaml", "winogrande": "winogrande/default.yaml",
                "arc_easy": "arc/arc_easy.yaml", "arc_challenge": "arc/arc_challenge.yaml",
                "medmcqa": "medmcqa/medmcqa.yaml", "mmlu_anatomy": "mmlu/default/mmlu_anatomy.yaml",
                "mmlu_astronomy": "mmlu/default/mmlu_astronomy.yaml", "hellaswag": "hellaswag/hellaswag.yaml"}
SHOTS = 2  # exercises the random sampler, drop_self, first_n and descriptions at once


def harness_task_dir(path, fixtures=FIXTURES):
    """One YAML per fixture task: lm-eval's own task file (include) with its data swapped for the fixtures."""
    import lm_eval
    import yaml
    tasks = os.path.join(os.path.dirname(lm_eval.__file__), "tasks")
    os.makedirs(path, exist_ok=True)
    for name, rel in HARNESS_YAML.items():
        folder = D.TASKS[name].folder or name
        files = {os.path.basename(f)[:-len(".jsonl")]: f for f in glob.glob(os.path.join(fixtures, folder, "*.jsonl"))}
        cfg = {"include": os.path.join(tasks, rel), "task": f"fx_{name}", "tag": [], "dataset_path": "json",
               "dataset_name": None, "dataset_kwargs": {"data_files": files}}
        with open(os.path.join(path, f"fx_{name}.yaml"), "w") as f:
            yaml.safe_dump(cfg, f)
    return path


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    """lm-eval's hf model at batch size 1 on the fixtures, log_samples on; and the tiny model's folder."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    root = tmp_path_factory.mktemp("harness")
    model_dir = write_gpt2_hf_tokenizer(str(root / "tiny"))
    tiny_hf_gpt().save_pretrained(model_dir)
    tm = TaskManager(include_path=harness_task_dir(str(root / "tasks")), include_defaults=False)
    out = simple_evaluate(model="hf", model_args=f"pretrained={model_dir},dtype=float32", tasks=[
        f"fx_{n}" for n in HARNESS_YAML], num_fewshot=SHOTS, batch_size=1, device="cpu", task_manager=tm,
        log_samples=True)
    return out, model_dir, tm


def our_side(model_dir):
    """The project's own loading path: hf_convert.from_pretrained(HF folder) and its tokenizer (tiktoken GPT-2)."""
    from data.tokenizer import get_tokenizer
    from hf_convert import from_pretrained
    model = from_pretrained(model_dir).eval()
    return model, get_tokenizer(model.config.tokenizer)


def test_same_requests_loglikelihoods_and_metrics_as_lm_eval(harness):
    out, model_dir, _ = harness
    model, tok = our_side(model_dir)
    shots = D.resolve_fewshot(f"{','.join(f'{n}={SHOTS}' for n in HARNESS_YAML)}", list(HARNESS_YAML))
    ready, missing = E.prepare(list(HARNESS_YAML), shots, data_dir=FIXTURES, log=None)
    assert not missing
    for name, (task, task_docs, prefixes) in ready.items():
        samples = sorted(out["samples"][f"fx_{name}"], key=lambda s: s["doc_id"])
        assert len(samples) == len(task_docs)
        for s, doc, prefix in zip(samples, task_docs, prefixes):
            pairs = D.doc_requests(task, doc, prefix)
            assert [tuple(a) for a in s["arguments"]] == pairs, f"{name} doc {s['doc_id']}: prompts differ"
            ours = E.loglikelihoods(model, [E.encode_pair(tok.encode, tok.eot_token, c, k) for c, k in pairs], 96)
            theirs = [r[0] if isinstance(r, list) else r for r in s["resps"]]
            for (ll, greedy), (ll0, greedy0) in zip(ours, theirs):
                assert ll == pytest.approx(ll0, abs=1e-4) and greedy == greedy0, name
    ran = E.run_benchmarks(model, tok, list(HARNESS_YAML), fewshot=",".join(f"{n}={SHOTS}" for n in HARNESS_YAML),
                           data_dir=FIXTURES, progress=False, log=None)
    for name in HARNESS_YAML:
        theirs = out["results"][f"fx_{name}"]
        for metric in ("acc", "acc_norm", "perplexity"):
            if f"{metric},none" in theirs or metric in ran["tasks"][name]:
                assert ran["tasks"][name][metric] == pytest.approx(float(theirs[f"{metric},none"]), rel=1e-6), \
                    f"{name} {metric}"


def test_lm_eval_adapter_runs_harness_tasks_with_our_engine(harness):
    from lm_eval import simple_evaluate
    out, model_dir, tm = harness
    model, tok = our_side(model_dir)
    lm = lm_eval_adapter.register_lm_eval()(model=model, tokenizer=tok, device="cpu")
    from lm_eval.api.registry import get_model
    assert get_model("disperse-gpt") is type(lm)
    # perplexity tasks: one window for a short text, [EOT] then every token; generation: greedy, cut at `until`
    from types import SimpleNamespace
    text = docs("lambada_openai")[0]["text"]
    ids = tok.encode(text)
    assert lm.loglikelihood_rolling([SimpleNamespace(args=(text,))], disable_tqdm=True)[0] == \
        pytest.approx(alone(model, [tok.eot_token], ids, 96)[0], abs=1e-4)
    long_text = " ".join([text] * 4)  # several windows of at most 96 tokens; each token scored once
    windows = lm.loglikelihood_rolling([SimpleNamespace(args=(long_text,))], disable_tqdm=True)[0]
    assert len(tok.encode(long_text)) > 96 and windows < 0 and math.isfinite(windows)
    # greedy decoding written out: append the argmax of the last position's logits, 6 times
    for prompt in ("The", "Question: What is the capital of France?\nAnswer:"):
        ids = tok.encode(prompt)
        with torch.no_grad():
            for _ in range(6):
                ids.append(int(model(torch.tensor([ids]))[0][0, -1].argmax()))
        greedy = tok.decode(ids[len(tok.encode(prompt)):])
        said = lm.generate_until([SimpleNamespace(args=(prompt, {"until": ["\n\n\n"], "max_gen_toks": 6}))], True)
        assert said == [greedy.split("\n\n\n")[0]]
        stop = greedy[len(greedy) // 2:][:2]  # a stop string inside the greedy text: cut just before it
        said = lm.generate_until([SimpleNamespace(args=(prompt, {"until": [stop], "max_gen_toks": 6}))], True)
        assert said == [greedy.split(stop)[0]] and len(said[0]) < len(greedy)
    ours = simple_evaluate(model=lm, tasks=[f"fx_{n}" for n in HARNESS_YAML], num_fewshot=SHOTS, task_manager=tm)
    for name in HARNESS_YAML:
        for key, value in out["results"][f"fx_{name}"].items():
            if key.split(",")[0] in ("acc", "acc_norm", "perplexity"):
                assert float(ours["results"][f"fx_{name}"][key]) == pytest.approx(float(value), rel=1e-6), (name, key)
