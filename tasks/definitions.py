"""
tasks/definitions.py: the benchmark tasks (lm-eval 0.4's), their prompts and their metrics.

This is the one file to edit to add a benchmark: append a Task to TASKS (and, for a column name in the
tables, an entry to COLUMNS). `python eval.py --ckpt out/ckpt.pt --tasks NAME` then scores it; the engine
(tasks/engine.py) needs no change as long as the task's `kind` is one of those below.

A Task turns one document (a dict in the dataset's own schema) into lm-eval's strings:
  text(doc)    -> the prompt (winogrande: a list, one prompt per option)
  choices(doc) -> what follows the target delimiter " " (lambada: its target, with its own leading space)
  gold(doc)    -> the index of the right choice (an int; a string index such as hellaswag's "2" goes
                  through int(...))
and is scored by kind:
  choice : acc = [argmax_i ll_i == gold],  acc_norm = [argmax_i ll_i / len(choice_i chars) == gold]
  partial: winogrande; one prompt per option, the shared suffix scored, acc as above
  greedy : lambada; acc = every continuation token is the argmax, perplexity = exp(-mean ll)
  mc2    : truthfulqa_mc2; acc = sum_{true} p_i / sum_all p_i with p_i = exp(ll_i)
where ll(c | x) = sum_t log softmax(logits(x + c_<t))[c_t].
"""

import math
import re
from dataclasses import dataclass
from typing import Callable

PAPER_TASKS = ["anli_r2", "lambada_openai", "openbookqa", "piqa", "truthfulqa_mc2", "winogrande",
               "arc_easy", "arc_challenge", "medmcqa", "mmlu"]
EXTRA_TASKS = ["hellaswag"]
PAPER_FEWSHOT = {"arc_easy": 1, "arc_challenge": 1, "medmcqa": 1, "mmlu": 1}  # GPT-2 column; Qwen3 uses 5
COLUMNS = {"anli_r2": "ANLI-R2", "lambada_openai": "LAMBADA", "openbookqa": "OpenBookQA", "piqa": "PIQA",
           "truthfulqa_mc2": "TruthfulQA", "winogrande": "WinoGrande", "arc_easy": "ARC-E",
           "arc_challenge": "ARC-C", "medmcqa": "MedMCQA", "mmlu": "MMLU", "hellaswag": "HellaSwag"}
MMLU_SUBJECTS = [
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge", "college_biology",
    "college_chemistry", "college_computer_science", "college_mathematics", "college_medicine",
    "college_physics", "computer_security", "conceptual_physics", "econometrics", "electrical_engineering",
    "elementary_mathematics", "formal_logic", "global_facts", "high_school_biology", "high_school_chemistry",
    "high_school_computer_science", "high_school_european_history", "high_school_geography",
    "high_school_government_and_politics", "high_school_macroeconomics", "high_school_mathematics",
    "high_school_microeconomics", "high_school_physics", "high_school_psychology", "high_school_statistics",
    "high_school_us_history", "high_school_world_history", "human_aging", "human_sexuality",
    "international_law", "jurisprudence", "logical_fallacies", "machine_learning", "management", "marketing",
    "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition", "philosophy",
    "prehistory", "professional_accounting", "professional_law", "professional_medicine",
    "professional_psychology", "public_relations", "security_studies", "sociology", "us_foreign_policy",
    "virology", "world_religions"]
LETTERS = ["A", "B", "C", "D"]
TRUTHFULQA_QA = (  # the six fixed Q/A pairs of lm-eval's truthfulqa_mc1.yaml, which mc2 includes
    "Q: What is human life expectancy in the United States?\n"
    "A: Human life expectancy in the United States is 78 years.\n\n"
    "Q: Who was president of the United States in 1955?\n"
    "A: Dwight D. Eisenhower was president of the United States in 1955.\n\n"
    "Q: Which party did he belong to?\n"
    "A: He belonged to the Republican Party.\n\n"
    "Q: What is the square root of banana?\n"
    "A: I have no comment.\n\n"
    "Q: How does a telescope work?\n"
    "A: Telescopes use lenses or mirrors to focus light and make objects appear closer.\n\n"
    "Q: Where were the 1992 Olympics held?\n"
    "A: The 1992 Olympics were held in Barcelona, Spain.")


@dataclass(frozen=True)
class Task:
    """One lm-eval task: where its documents live and how one document becomes requests.

    text(doc): the prompt (winogrande: a list, one prompt per option); choices(doc): what follows the target
    delimiter " " (lambada: its target, which carries its own leading space); gold(doc): index of the answer.
    """
    name: str
    hub: tuple                    # (path, config name or None) for datasets.load_dataset
    split: str                    # scored: the test split if the task has one, else validation
    fewshot_split: str            # lm-eval: fewshot_split, else training, else validation, else test split
    text: Callable
    choices: Callable
    gold: Callable
    kind: str = "choice"          # choice | partial (winogrande) | greedy (lambada) | mc2 (truthfulqa)
    metrics: tuple = ("acc",)
    description: str = ""
    first_n: bool = False         # few-shot sampler: first n of the split (MMLU), else Random(seed).sample
    drop_self: bool = False       # lm-eval passes the scored doc to the sampler when test_split is None
    zero_shot: bool = False       # the YAML pins num_fewshot: 0, which lm-eval keeps over --num_fewshot
    folder: str = ""              # under --tasks_data DIR (default: the task name)


def _hellaswag(text):
    """lm-eval's hellaswag preprocess: WikiHow artifacts out, double spaces collapsed."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def _blank(doc):
    return doc["sentence"].index("_")


def _arc(name, config):
    return Task(name, ("allenai/ai2_arc", config), "test", "train",
                text=lambda d: f"Question: {d['question']}\nAnswer:", choices=lambda d: d["choices"]["text"],
                gold=lambda d: d["choices"]["label"].index(d["answerKey"]), metrics=("acc", "acc_norm"))


def _mmlu(subject):
    return Task(f"mmlu_{subject}", ("cais/mmlu", subject), "test", "dev",
                text=lambda d: d["question"].strip() + "".join(
                    f"\n{k}. {c}" for k, c in zip(LETTERS, d["choices"])) + "\nAnswer:",
                choices=lambda d: LETTERS, gold=lambda d: int(d["answer"]), first_n=True, folder=f"mmlu/{subject}",
                description=f"The following are multiple choice questions (with answers) about "
                            f"{subject.replace('_', ' ')}.\n\n")


TASKS = {t.name: t for t in [
    Task("anli_r2", ("facebook/anli", None), "test_r2", "train_r2",
         text=lambda d: f"{d['premise']}\nQuestion: {d['hypothesis']} True, False, or Neither?\nAnswer:",
         choices=lambda d: ["True", "Neither", "False"], gold=lambda d: int(d["label"])),
    Task("lambada_openai", ("EleutherAI/lambada_openai", "default"), "test", "test",
         text=lambda d: " ".join(d["text"].split(" ")[:-1]), choices=lambda d: [" " + d["text"].split(" ")[-1]],
         gold=lambda d: 0, kind="greedy", metrics=("acc", "perplexity")),
    Task("openbookqa", ("allenai/openbookqa", "main"), "test", "train",
         text=lambda d: d["question_stem"], choices=lambda d: d["choices"]["text"],
         gold=lambda d: d["choices"]["label"].index(d["answerKey"].lstrip()), metrics=("acc", "acc_norm")),
    Task("piqa", ("baber/piqa", None), "validation", "train", text=lambda d: f"Question: {d['goal']}\nAnswer:",
         choices=lambda d: [d["sol1"], d["sol2"]], gold=lambda d: int(d["label"]), metrics=("acc", "acc_norm"),
         drop_self=True),
    Task("truthfulqa_mc2", ("truthfulqa/truthful_qa", "multiple_choice"), "validation", "validation",
         text=lambda d: TRUTHFULQA_QA + "\n\nQ: " + d["question"] + "\nA:",
         choices=lambda d: d["mc2_targets"]["choices"], gold=lambda d: 0, kind="mc2", drop_self=True,
         zero_shot=True),
    Task("winogrande", ("allenai/winogrande", "winogrande_xl"), "validation", "train",
         text=lambda d: [d["sentence"][:_blank(d)] + o for o in (d["option1"], d["option2"])],
         choices=lambda d: [d["sentence"][_blank(d) + 1:].strip()], gold=lambda d: int(d["answer"]) - 1,
         kind="partial", drop_self=True),
    _arc("arc_easy", "ARC-Easy"),
    _arc("arc_challenge", "ARC-Challenge"),
    Task("medmcqa", ("openlifescienceai/medmcqa", None), "validation", "train",
         text=lambda d: f"Question: {d['question']}\nChoices:\nA. {d['opa']}\nB. {d['opb']}\nC. {d['opc']}\n"
                        f"D. {d['opd']}\nAnswer:",
         choices=lambda d: LETTERS, gold=lambda d: int(d["cop"]), metrics=("acc", "acc_norm")),
    Task("hellaswag", ("Rowan/hellaswag", None), "validation", "train",
         text=lambda d: _hellaswag(d["activity_label"] + ": " + d["ctx_a"] + " " + d["ctx_b"].capitalize()),
         choices=lambda d: [_hellaswag(e) for e in d["endings"]], gold=lambda d: int(d["label"]),
         metrics=("acc", "acc_norm"), drop_self=True),
] + [_mmlu(s) for s in MMLU_SUBJECTS]}
GROUPS = {"mmlu": [f"mmlu_{s}" for s in MMLU_SUBJECTS]}


def resolve_tasks(spec):
    """'paper' | 'all' | comma list (mmlu or single subjects such as mmlu_anatomy) -> list of names."""
    names = {"paper": PAPER_TASKS, "all": PAPER_TASKS + EXTRA_TASKS}.get(spec)
    names = names or [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in TASKS and n not in GROUPS]
    if unknown:
        raise ValueError(f"Unknown benchmark {unknown[0]!r}: use paper, all, or a comma list of "
                         f"{', '.join(PAPER_TASKS + EXTRA_TASKS)} (or mmlu_<subject>).")
    return list(dict.fromkeys(names))


def resolve_fewshot(spec, names):
    """Shots per task. 'paper' (None): the paper's GPT-2 setting (1 shot for arc_easy, arc_challenge,
    medmcqa, mmlu; 0 elsewhere). An int n: n for those four, 0 elsewhere (5 = the paper's Qwen3 setting).
    'task=n,...': those tasks explicitly, the rest as the paper."""
    spec = "paper" if spec is None else str(spec)
    asked = dict(PAPER_FEWSHOT)
    if spec.isdigit():
        asked = {t: int(spec) for t in PAPER_FEWSHOT}
    elif spec != "paper":
        for item in spec.split(","):
            task, _, n = item.partition("=")
            if task.strip() not in TASKS and task.strip() not in GROUPS or not n.strip().isdigit():
                raise ValueError(f"Cannot read --fewshot {spec!r}: give paper, an integer, or task=n pairs "
                                 f"such as arc_easy=25,hellaswag=10.")
            asked[task.strip()] = int(n)
    shots = {}
    for name in names:
        for member in GROUPS.get(name, [name]):
            group = next((g for g, members in GROUPS.items() if member in members), None)
            shots[member] = 0 if TASKS[member].zero_shot else asked.get(member, asked.get(group, 0))
    return shots


# ---- prompts: lm-eval's doc_to_text / doc_to_choice / build_qa_turn

def fewshot_example(task, doc):
    """One solved example: question + target delimiter + gold answer (lm-eval's build_qa_turn)."""
    text, choices, gold = task.text(doc), task.choices(doc), task.gold(doc)
    if task.kind == "partial":  # winogrande: the gold option's prompt, then the shared suffix
        return text[gold] + " " + choices[0]
    return text + " " + choices[gold]


def doc_requests(task, doc, prefix):
    """The (context, continuation) strings lm-eval scores for one doc, in choice order."""
    text, choices = task.text(doc), task.choices(doc)
    if task.kind == "partial":  # one context per option, the suffix after the blank is scored
        return [(prefix + t, " " + choices[0]) for t in text]
    if task.kind == "greedy":  # output_type loglikelihood: the target is sent as is
        return [(prefix + text, choices[0])]
    return [(prefix + text, " " + c) for c in choices]



def doc_problem(task, doc):
    """What makes `doc` unscorable by `task` (a phrase for an error sentence), or None when it is fine: a
    missing field, a prompt or choice that is not text, a gold answer that is not an index of the choices."""
    try:
        requests = doc_requests(task, doc, "")
    except KeyError as e:
        return f"has no field {e}"
    except (TypeError, ValueError, IndexError, AttributeError) as e:
        return f"cannot be turned into a prompt ({type(e).__name__}: {e})"
    if not requests or not all(isinstance(c, str) and isinstance(k, str) for c, k in requests):
        return "has a prompt or a choice that is not text, or no choices"
    if task.kind == "mc2":
        labels = doc["mc2_targets"].get("labels") if isinstance(doc.get("mc2_targets"), dict) else None
        if not isinstance(labels, list) or len(labels) != len(requests) or set(labels) - {0, 1}:
            return f"has mc2_targets.labels {labels!r}, not one 0/1 label per choice"
        return None
    n = len(requests)
    try:
        gold = task.gold(doc)
    except KeyError as e:
        return f"has no field {e}"
    except (TypeError, ValueError, IndexError, AttributeError) as e:
        return f"has an answer that is not among its {n} choices ({type(e).__name__}: {e})"
    if isinstance(gold, bool) or not isinstance(gold, int) or not 0 <= gold < n:
        return f"has the answer {gold!r}, not an index of its {n} choices"
    return None

# ---- metrics: lm-eval's process_results and aggregation

def _argmax(values):
    return max(range(len(values)), key=lambda i: (values[i], -i))  # first maximum, like np.argmax


def doc_metrics(task, doc, results):
    """Per-document metric values from its requests' (ll, is_greedy) results."""
    lls = [ll for ll, _ in results]
    if task.kind == "greedy":
        return {"acc": float(results[0][1]), "ll": lls[0]}
    if task.kind == "mc2":  # probability mass on the true answers (labels 1), normalised over all
        top = max(lls)
        p = [math.exp(ll - top) for ll in lls]
        true = sum(pi for pi, label in zip(p, doc["mc2_targets"]["labels"]) if label == 1)
        return {"acc": true / sum(p)}
    gold = task.gold(doc)
    out = {"acc": float(_argmax(lls) == gold)}
    if "acc_norm" in task.metrics:
        lengths = [len(c) for c in task.choices(doc)]
        out["acc_norm"] = float(_argmax([ll / n for ll, n in zip(lls, lengths)]) == gold)
    return out


def aggregate(values):
    """Mean of each metric over documents; lambada's perplexity = exp(-mean ll)."""
    out = {}
    for key in values[0]:
        mean = sum(v[key] for v in values) / len(values)
        out["perplexity" if key == "ll" else key] = math.exp(-mean) if key == "ll" else mean
    return out
