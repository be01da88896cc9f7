"""
tasks/engine.py: score a model on the tasks of tasks/definitions.py the way lm-evaluation-harness 0.4 does.

  results = run_benchmarks(model, tokenizer, "paper", limit=500)     # from Python (train.py does this)
  python eval.py --ckpt out/ckpt.pt --tasks paper --limit 500         # from the command line

Every document becomes (context, continuation) strings (definitions.py), few-shot examples are drawn as
lm-eval's sampler draws them, all requests of all tasks go through one batched log-likelihood engine
    ll(c | x) = sum_t log softmax(logits(x + c_<t))[c_t]          (float32 log_softmax)
and the metrics are lm-eval's (definitions.py). Tested against lm-eval 0.4.13 itself (tests/test_benchmarks.py):
the same prompt strings, per-request lls within 1e-4 and the same metrics. Where we are not bit for bit the
harness:
- batching and padding change float summation order: lls differ in the last digits, so a near-tie between
  two choices can break the other way; the log-softmax is float32 even for bf16 models (lm-eval: model dtype);
- the GPT-2 tokenizer encodes ordinary text ("<|endoftext|>" inside a document is text, HF parses it);
- the softmax spans the model's whole vocabulary: a checkpoint trained with the padded 50304 includes its
  47 never-seen rows (about zero probability after training); released GPT-2 has exactly 50257;
- truthfulqa_mc2 normalises exp(ll - max ll) (lm-eval: exp(ll), NaN when every answer underflows);
- under torchrun lm-eval draws few-shot examples per rank, so its prompts depend on the world size; we
  draw them for all docs on every rank, which gives lm-eval's single-process prompts at any world size;
- no stderr columns.
Data: DIR/<task>/<split>.jsonl|parquet (python -m tasks.download --out DIR), else the Hugging Face hub.
"""

import glob
import inspect
import json
import math
import os
import random
from contextlib import nullcontext

import torch

import hardware
from hf_hub import hub_offline
from tasks.definitions import (GROUPS, PAPER_TASKS, TASKS, aggregate, doc_metrics, doc_problem, doc_requests,
                               fewshot_example, resolve_fewshot, resolve_tasks)

# ---- prompts: lm-eval's fewshot_context and TemplateLM tokenisation

def fewshot_prefixes(task, docs, pool, shots, seed=1234):
    """The text before each doc's prompt: description, then `shots` solved examples joined by "\\n\\n".

    lm-eval draws with ONE Random(seed) per task, doc after doc in order, so a doc's examples depend on the
    docs before it: build the prefixes of all docs first, then shard. When the task has no test split the
    sampler draws shots + 1 and drops the scored doc itself (drop_self)."""
    if shots == 0:
        return [task.description] * len(docs)
    if len(pool) < shots + (task.drop_self and not task.first_n):
        raise ValueError(f"{task.name}: {shots} few-shot examples were asked for but its "
                         f"{task.fewshot_split} split has {len(pool)} documents.")
    rnd = random.Random(seed)
    out = []
    for doc in docs:
        if task.first_n:
            picked = pool[:shots]
        elif task.drop_self:
            picked = [d for d in rnd.sample(pool, shots + 1) if d != doc][:shots]
            if len(picked) < shots:  # the pool holds copies of doc: lm-eval resamples without any of them
                picked = rnd.sample([d for d in pool if d != doc], shots)
        else:
            picked = rnd.sample(pool, shots)
        out.append(task.description + "".join(fewshot_example(task, d) + "\n\n" for d in picked))
    return out


def bos_or_eot(tokenizer):
    """The token an empty context (and a document's first perplexity window) starts with: lm-eval hf's
    prefix_token_id, the tokenizer's BOS where it has one (SmolLM2: <|im_start|>), else its EOT (GPT-2, Qwen)."""
    bos = getattr(tokenizer, "bos_token", None)
    return tokenizer.eot_token if bos is None else bos


def encode_pair(encode, prefix, context, continuation, context_cache=None):
    """lm-eval's TemplateLM tokenisation: trailing whitespace of the context moves to the continuation;
    context + continuation is encoded jointly and split after len(encode(context)); an empty context
    becomes the prefix token (bos_or_eot; unless the continuation already starts with it)."""
    if context == "":
        cont = encode(continuation)
        return ([prefix], cont) if cont[0] != prefix else (cont[:1], cont[1:])
    n = len(context) - len(context.rstrip())
    if n:
        context, continuation = context[:-n], context[-n:] + continuation
    cache = {} if context_cache is None else context_cache
    if context not in cache:
        cache[context] = encode(context)
    ctx = cache[context]
    return ctx, encode(context + continuation)[len(ctx):]


# ---- the log-likelihood engine

def _model_input(context, continuation, max_length):
    """The tokens fed to the model: (context + continuation) cut from the left to max_length + 1, minus
    the last token (whose prediction is never needed). The continuation is scored at the last positions."""
    assert context and continuation, "both context and continuation need at least one token"
    if len(continuation) > max_length:
        raise ValueError(f"A continuation of {len(continuation)} tokens does not fit the model's "
                         f"{max_length}-token window.")
    return tuple((list(context) + list(continuation))[-(max_length + 1):][:-1])


def scored_logits(model, x, b_idx, t_idx, pos=None, attn_mask=None, kv_cache=None):
    """[N, V] logits at the N (row, position) pairs of x [B, T]: model.hidden_states, then the LM head only
    there (no [B, T, V] tensor). pos / attn_mask: position ids and mask of packed rows (see _can_pack);
    kv_cache: the keys and values of a shared prefix that x continues (see _prefix_groups)."""
    packed = {} if pos is None else dict(pos=pos, attn_mask=attn_mask)
    if kv_cache is not None:
        packed["kv_cache"] = kv_cache
    return model.lm_head(model.hidden_states(x, **packed)[-1][b_idx, t_idx])


def _can_pack(model):
    """Whether model.hidden_states takes position ids and a mask (our GPT and Qwen3 do)."""
    return "attn_mask" in inspect.signature(model.hidden_states).parameters


def _n_blocks(model):
    return len(model.transformer.h)


def _can_cache(model):
    """Whether model.hidden_states also continues a KV cache with a mask (our GPT and Qwen3 do)."""
    return _can_pack(model) and "kv_cache" in inspect.signature(model.hidden_states).parameters


LAST_RUN = {}  # what the last loglikelihoods call did: prefixes, their lengths, forwards, the largest prefix's KV bytes

# A shared prefix costs one more forward: it is used only where it saves at least this many token positions
# ((rows - 1) * prefix length), e.g. 2 rows sharing 64 tokens, or 9 sharing 8; 0-shot prompts that share only
# "Question:" (2 tokens) over few rows fall back to plain rows.
MIN_SAVED = 64


def _prefix_groups(rows, units, requests, min_saved=MIN_SAVED):
    """[(P, rows)]: the rows split into groups whose tokens start with the same P tokens (P = 0: no prefix).

    A row's "head" is its tokens before its first scored position (the logits there must come from the row's
    own forward), so P never reaches a scored position. Heads sorted lexicographically: the longest common
    prefix of a run of them is the minimum of adjacent ones, so the candidate groups form a tree (a run split
    where its adjacent common prefix is smallest); each node keeps its own prefix when that saves more token
    positions, (n - 1) * P, than its children together (e.g. a subject's few-shot block over all its documents
    rather than two documents that also share their question)."""
    heads = []
    for tokens, shared, placed in rows:
        first = min(len(m) - max(len(requests[i][1]) for i in units[m]) for m, _ in placed)
        heads.append(tokens[:min(first, shared)])
    order = sorted(range(len(rows)), key=heads.__getitem__)
    lcp = []
    for a, b in zip(order, order[1:]):
        ha, hb, n = heads[a], heads[b], 0
        while n < min(len(ha), len(hb)) and ha[n] == hb[n]:
            n += 1
        lcp.append(n)

    def split(lo, hi):  # order[lo:hi] -> (saved positions, [(P, indices)])
        if hi - lo < 2:
            return 0, [(0, order[lo:hi])]
        P = min(lcp[lo:hi - 1])
        cuts = [lo] + [k + 1 for k in range(lo, hi - 1) if lcp[k] == P] + [hi]
        parts = [split(a, b) for a, b in zip(cuts, cuts[1:])] if P < max(lcp[lo:hi - 1]) else []
        below = sum(saved for saved, _ in parts)
        here = (hi - lo - 1) * P
        if P and here >= max(below, min_saved):
            return here, [(P, order[lo:hi])]
        if not parts:
            return 0, [(0, order[lo:hi])]
        return below, [g for _, groups in parts for g in groups]

    groups = split(0, len(order))[1] if order else []
    plain = sorted(i for P, idx in groups if not P for i in idx)  # one group: batched together as before
    groups = [(P, idx) for P, idx in groups if P] + ([(0, plain)] if plain else [])
    return [(P, [rows[i] for i in idx]) for P, idx in groups]


def _rows(requests, units, max_length, pack):
    """The rows to run, each (tokens, prefix, placed): `placed` lists (model input, offset) pairs. A plain row
    is one model input m (prefix = len(m)). A packed row holds a context shared by several model inputs once,
    then each input's remaining tokens at its offset: index j of m sits at j if j < prefix, else at
    offset + j - prefix. Only untruncated inputs are packed (m = context + continuation[:-1] exactly, so
    positions stay those of the request alone), and a packed row stays within max_length tokens."""
    groups, rows = {}, []
    for m, served in units.items():
        ctx, cont = requests[served[0]]
        if pack and len(ctx) + len(cont) <= max_length + 1:
            groups.setdefault(tuple(ctx), []).append(m)
        else:
            rows.append((m, len(m), [(m, 0)]))
    for ctx, ms in groups.items():
        if len(ms) == 1:
            rows.append((ms[0], len(ms[0]), [(ms[0], 0)]))
            continue
        tokens, placed = list(ctx), []
        for m in ms:
            if placed and len(tokens) + len(m) - len(ctx) > max_length:  # full: another row for the rest
                rows.append((tuple(tokens), len(ctx), placed))
                tokens, placed = list(ctx), []
            placed.append((m, len(tokens)))
            tokens += m[len(ctx):]
        rows.append((tuple(tokens), len(ctx), placed))
    return rows


def _packed_inputs(batch, width, cached=0):
    """Position ids [B, width] and mask [B, width, cached + width] for a batch with packed rows whose first
    `cached` tokens are in a KV cache (x holds tokens[cached:]). Segment ids: 0 for a row's prefix, k for its
    k-th packed input, -1 for padding; a token sees the cached tokens, earlier tokens of the prefix and of its
    own segment. Padding sees earlier padding and itself (a query with no key would give NaN)."""
    pos = torch.arange(cached, cached + width).repeat(len(batch), 1)
    seg = torch.full((len(batch), width), -1)
    for b, (tokens, prefix, placed) in enumerate(batch):
        seg[b, :len(tokens) - cached] = 0
        for k, (m, offset) in enumerate(placed):
            n = len(m) - prefix
            if offset >= prefix and n > 0:
                seg[b, offset - cached:offset - cached + n] = k + 1
                pos[b, offset - cached:offset - cached + n] = torch.arange(prefix, prefix + n)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    mask = causal & ((seg[:, None, :] == 0) | (seg[:, None, :] == seg[:, :, None]))
    return pos, torch.cat([torch.ones(len(batch), width, cached, dtype=torch.bool), mask], dim=2)


def _scoring_plan(batch, units, requests, cached=0):
    """What one batch scores: positions, the (row, column) pairs whose logits are gathered, and targets, one
    (index into positions, token id, request index) per continuation token. Each model input m needs only its
    last `need` positions (need = its longest continuation), shared by all its requests, so the log-softmax
    runs once per scored position; a request's continuation of length k reads the last k of them."""
    positions, targets = [], []
    for b, (row, prefix, placed) in enumerate(batch):
        for m, offset in placed:
            need = max(len(requests[i][1]) for i in units[m])
            # position j of m: column j within the shared context (j < prefix), else after its packed offset
            positions += [(b, (j if j < prefix else offset + j - prefix) - cached)
                          for j in range(len(m) - need, len(m))]
            end = len(positions)  # positions[end - 1] is m's last position
            for i in units[m]:
                cont = requests[i][1]
                targets += [(end - len(cont) + k, token, i) for k, token in enumerate(cont)]
    return positions, targets


@torch.no_grad()
def loglikelihoods(model, requests, max_length, batch_tokens=None, autocast=None, progress=False, in_step=False):
    """(sum of continuation log-probs, is_greedy) for each (context_ids, continuation_ids) request.

    Requests with the same model input (same context, one-token continuations; or any two whose
    context + continuation[:-1] agree) share it. Model inputs with the same context (the choices of one
    document) share one packed row when the model takes position ids and a mask: the context once, then each
    continuation[:-1] with positions restarting at len(context), attending to the context and to itself
    only, so every logit is that of the request alone and the context is computed once. Rows that start with
    the same tokens (a task's few-shot block, found from the tokens by _prefix_groups) run that prefix once
    (model.hidden_states with a KV cache); each batch of the group then runs only its rows' remaining tokens,
    at positions P.., attending to the cached keys and values. The prefix is at most max_length tokens, so its
    cache is no bigger than one full-length row's, and it is freed when its group ends. Rows are sorted
    longest first (like lm-eval) and packed, right-padded, into batches of at most batch_tokens tokens; one
    forward per batch. Default: 16384 tokens on a GPU, 1024 on a CPU, where bigger batches were slower
    (RESULTS.md, "Speed and cost"). in_step: every process of the group calls this with its own requests and runs
    as many forwards as the busiest one (a sharded model's forward is a collective), padding with one-token rows."""
    units = {}  # model input -> indices of the requests it answers
    for i, (ctx, cont) in enumerate(requests):
        units.setdefault(_model_input(ctx, cont, max_length), []).append(i)
    rows = _rows(requests, units, max_length, _can_pack(model))
    groups = _prefix_groups(rows, units, requests) if _can_cache(model) else [(0, rows)]
    device = next(model.parameters()).device
    batch_tokens = batch_tokens or (16384 if device.type == "cuda" else 1024)
    autocast = autocast or nullcontext()
    out = [None] * len(requests)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(requests), desc="task requests", leave=False)
    plan = []  # per group: (P, rows longest first, [start, end) rows of each forward)
    for P, members in groups:
        order = sorted(members, key=lambda r: (-len(r[0]), r[0]))
        bounds, start = [], 0
        while start < len(order):
            bounds.append((start, start + max(1, batch_tokens // (len(order[start][0]) - P))))
            start = bounds[-1][1]
        plan.append((P, order, bounds))
    mine = sum(len(bounds) + (P > 0) for P, _, bounds in plan)  # a prefix is one forward more
    padding = hardware.busiest(mine, device) - mine if in_step else 0
    for _ in range(padding):
        with autocast:
            scored_logits(model, torch.zeros(1, 1, dtype=torch.long, device=device), [0], [0])
    peak_prefix = 0
    for P, order, bounds in plan:
        prefix_kv = None
        if P:  # the shared prefix once: its keys and values serve every batch of the group, then are freed
            prefix_kv = [{} for _ in range(_n_blocks(model))]
            with autocast:
                model.hidden_states(torch.tensor([order[0][0][:P]], device=device), kv_cache=prefix_kv)
            peak_prefix = max(peak_prefix, sum(t.numel() * t.element_size() for c in prefix_kv for t in c.values()))
        for lo, hi in bounds:
            batch = order[lo:hi]
            width = len(batch[0][0]) - P
            x = torch.zeros(len(batch), width, dtype=torch.long)
            for b, (row, _, _) in enumerate(batch):
                x[b, :len(row) - P] = torch.tensor(row[P:])
            positions, targets = _scoring_plan(batch, units, requests, P)
            b_idx, t_idx = (list(v) for v in zip(*positions))
            pick, tokens, owner = (list(v) for v in zip(*targets))
            packed = {}
            if P or any(len(placed) > 1 for _, _, placed in batch):
                pos, mask = _packed_inputs(batch, width, P)
                packed = dict(pos=pos.to(device), attn_mask=mask.to(device))
            if P:  # a copy per batch: the blocks add this batch's keys to the copy, never to the prefix's
                packed["kv_cache"] = [dict(c) for c in prefix_kv]
            with autocast:
                logits = scored_logits(model, x.to(device), b_idx, t_idx, **packed)
            del packed
            logp = logits.float().log_softmax(-1)  # [positions, V]
            pick = torch.tensor(pick, device=logp.device)
            tokens = torch.tensor(tokens, device=logp.device)
            token_lp = logp[pick, tokens].tolist()
            greedy = (logp.argmax(-1)[pick] == tokens).tolist()
            for i, lp, g in zip(owner, token_lp, greedy):
                ll, all_greedy = out[i] or (0.0, True)
                out[i] = (ll + lp, all_greedy and g)
            if bar is not None:
                bar.update(sum(len(units[m]) for _, _, placed in batch for m, _ in placed))
        del prefix_kv
    if bar is not None:
        bar.close()
    LAST_RUN.update(prefixes=sum(P > 0 for P, _, _ in plan), prefix_tokens=[P for P, _, _ in plan if P],
                    forwards=sum(len(b) + (P > 0) for P, _, b in plan), peak_prefix_bytes=peak_prefix)
    return out


# ---- data: --tasks_data DIR/<task>/<split>.{jsonl,parquet} (tasks/download.py writes it), else the hub

class MissingData(Exception):
    """A task's data is neither in the data folder nor on the hub: that task is skipped, the others run."""


class BadData(ValueError):
    """A task's data is there but broken: the run stops (a broken file never silently drops its task)."""


_DOCS = {}  # (folder, split, data_dir) -> docs; train.py calls run_benchmarks again and again


def _read_local(data_dir, task, split):
    """(rows, where) from data_dir/<folder>/<split>.jsonl|.json|.parquet|-*.parquet, where(i) naming row i's
    file and line; None when no such file exists. A line that is not JSON is a BadData sentence."""
    d = os.path.join(data_dir, task.folder or task.name)
    for pattern in (f"{split}.jsonl", f"{split}.json", f"{split}.parquet", f"{split}-*.parquet"):
        files = sorted(glob.glob(os.path.join(d, pattern)))
        if files and files[0].endswith("parquet"):
            import pyarrow.parquet as pq
            rows, where = [], []
            for f in files:
                table = pq.read_table(f).to_pylist()
                rows += table
                where += [f"{f} row {k + 1}" for k in range(len(table))]
            return rows, where.__getitem__
        if files:
            rows, lines = [], []
            with open(files[0], encoding="utf-8") as f:
                for k, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        rows.append(json.loads(line))
                    except ValueError:
                        raise BadData(f"{task.name}: {files[0]} line {k} is not a JSON object; fix or remove "
                                      f"that line (or download the task again).") from None
                    lines.append(k)
            return rows, lambda i: f"{files[0]} line {lines[i]}"
    return None


def load_docs(task, split, data_dir=None):
    """The documents of one split, as a list of dicts in the dataset's own schema, each one checked
    (definitions.doc_problem): a broken one stops with a sentence naming the task, file and line."""
    folder = task.folder or task.name
    key = (folder, split, data_dir)
    if key not in _DOCS:
        local = _read_local(data_dir, task, split) if data_dir else None
        if local is None:
            offline = hub_offline()
            try:
                import datasets
                docs = list(datasets.load_dataset(task.hub[0], task.hub[1], split=split))
            except Exception:  # offline, not cached, hub down: every failure means the same to the user
                where = f"in {data_dir}/{folder}/ nor" if data_dir else "in no data folder (--tasks_data) nor"
                hub = "in the local hub cache (offline)" if offline else "on the hub"
                raise MissingData(
                    f"{task.name}: no {split} split of {task.hub[0]} found {where} {hub}; on a machine with "
                    f"internet run `python -m tasks.download --out DIR` and pass --tasks_data DIR.") from None
            local = docs, lambda i: f"the hub's {task.hub[0]} {split} split, row {i + 1}"
        docs, where = local
        if not docs:
            raise BadData(f"{task.name}: the {split} split in {data_dir}/{folder}/ holds no documents; "
                          f"download it again (python -m tasks.download).")
        for i, doc in enumerate(docs):
            problem = doc_problem(task, doc) if isinstance(doc, dict) else "is not a JSON object"
            if problem:
                raise BadData(f"{task.name}: the document at {where(i)} {problem}; fix or remove it.")
        _DOCS[key] = docs
    return _DOCS[key]


def limit_docs(docs, limit):
    """lm-eval's --limit: the first N docs (a fraction below 1.0: the first ceil(N_total * limit))."""
    if limit is None:
        return docs
    return docs[:int(math.ceil(len(docs) * limit)) if limit < 1.0 else int(limit)]


# ---- putting it together

def _dist():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _gather(items):
    rank, world = _dist()
    if world == 1:
        return items
    parts = [None] * world
    torch.distributed.all_gather_object(parts, items)
    return [x for part in parts for x in part]


def prepare(names, shots, limit=None, seed=1234, data_dir=None, log=print):
    """{task name: (task, docs, prefixes)} for every (sub)task whose data is found, and the sentences for
    those that are not (a group such as mmlu is missing when any of its members is)."""
    ready, missing = {}, {}
    for name in names:
        members = {}
        try:
            for member in GROUPS.get(name, [name]):
                task = TASKS[member]
                docs = limit_docs(load_docs(task, task.split, data_dir), limit)
                pool = load_docs(task, task.fewshot_split, data_dir) if shots[member] else []
                members[member] = (task, docs, fewshot_prefixes(task, docs, pool, shots[member], seed))
        except BadData:
            raise
        except (MissingData, ValueError) as e:  # no data, or too few documents for the shots asked for
            missing[name] = str(e)
            if log:
                log(str(e))
            continue
        ready.update(members)
    return ready, missing


def score(model, tokenizer, ready, batch_tokens=None, autocast=None, progress=True):
    """Per-document metric values {task: [(doc index, values)]} for this rank's share of the docs
    (rank r takes docs r::world), gathered from all ranks."""
    rank, world = _dist()
    encode, prefix = tokenizer.encode, bos_or_eot(tokenizer)
    requests, spans, cache = [], [], {}
    for name, (task, docs, prefixes) in ready.items():
        for j in range(rank, len(docs), world):
            pairs = doc_requests(task, docs[j], prefixes[j])
            spans.append((name, j, len(requests), len(pairs)))
            requests += [encode_pair(encode, prefix, c, k, cache) for c, k in pairs]
    results = loglikelihoods(model, requests, model.config.block_size, batch_tokens, autocast,
                             progress and rank == 0, in_step=world > 1)
    mine = [(name, j, doc_metrics(ready[name][0], ready[name][1][j], results[s:s + n]))
            for name, j, s, n in spans]
    per_task = {name: [] for name in ready}
    for name, j, values in sorted(_gather(mine), key=lambda x: (x[0], x[1])):
        per_task[name].append((j, values))
    return per_task


def run_benchmarks(model, tokenizer, tasks="paper", limit=None, fewshot=None, seed=1234, data_dir=None,
                   batch_tokens=None, autocast=None, progress=True, log=print):
    """Score `model` on lm-eval tasks the way lm-eval does; callable from train.py every tasks_interval.

    model: hidden_states(idx, pos=, attn_mask=) -> the hidden-state list, whose last entry goes through
    lm_head (scored_logits), and config.block_size, as our GPT and Qwen3; tokenizer: encode(text) -> ids,
    eot_token (and bos_token where it has one: bos_or_eot). tasks: 'paper' | 'all' | 'a,b,...' or a list;
    limit: first N docs per task (per MMLU subject); fewshot: see resolve_fewshot; seed: the few-shot
    sampler's (lm-eval: 1234); data_dir: offline data; autocast: a context manager such as
    torch.autocast('cuda', torch.bfloat16); log: where the one-sentence messages of missing tasks go (None:
    nowhere). Under torchrun every rank must call it (docs are sharded, results gathered); every rank returns
    the same dict:
      {"tasks": {name: {"acc": .., "acc_norm": .., "n": .., "shots": ..}}, "average": mean acc of the
       paper's ten (None unless all ten ran), "missing": {name: sentence}, "settings": {...}}."""
    names = resolve_tasks(tasks if isinstance(tasks, str) else ",".join(tasks))
    shots = resolve_fewshot(fewshot, names)
    ready, missing = prepare(names, shots, limit, seed, data_dir, log)
    was_training = model.training
    model.eval()
    try:
        per_task = score(model, tokenizer, ready, batch_tokens, autocast, progress)
    finally:
        model.train(was_training)
    out = {}
    for name in names:
        members = [m for m in GROUPS.get(name, [name]) if per_task.get(m)]
        if not members:  # missing data (already said), or no documents at all (e.g. --limit 0)
            missing.setdefault(name, f"{name}: no documents to score.")
            continue
        values = [v for m in members for _, v in per_task[m]]
        out[name] = {**aggregate(values), "n": len(values), "shots": shots[members[0]]}
        if name in GROUPS:  # lm-eval's group score: subjects weighted by size = the mean over all docs
            out[name]["subjects"] = {m[len(name) + 1:]: {**aggregate([v for _, v in per_task[m]]),
                                                         "n": len(per_task[m])} for m in members}
    ten = [out[t]["acc"] for t in PAPER_TASKS if t in out]
    return {"tasks": out, "average": sum(ten) / len(ten) if len(ten) == len(PAPER_TASKS) else None,
            "missing": missing, "settings": {"limit": limit, "seed": seed,
                                             "fewshot": {n: out[n]["shots"] for n in out}}}
