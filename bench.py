"""
bench.py: speed measurements, side by side in one process (timings, not tests).

  python bench.py                          # everything below on the default device
  python bench.py --what=reference         # our GPT vs a plain GPT-2 written the textbook way, same shapes/dtype
  python bench.py --what=dispersion        # step time with the dispersion loss vs cross-entropy only
  python bench.py --what=qwen3             # the small Qwen3-style quick-start model vs the GPT one
  python bench.py --what=condensation      # eval.py's condensation: time and peak memory for N = 10, 100, 300
  python bench.py --what=lmeval            # task scoring (tasks/): ours (batched) vs lm-eval's hf model at batch 1
  python bench.py --what=nanogpt --nanogpt=PATH   # our GPT vs nanoGPT's own model.py (a checkout at PATH), see below
  python bench.py --device=cuda --dtype=bfloat16 --batch_size=16 --block_size=1024 --n_layer=12 --n_embd=768 --n_head=12

Each measurement times full training steps (forward, backward, AdamW step) on the same random batch: `warmup`
untimed steps, then the median of `steps` timed ones. Defaults are the quick-start shapes of
config/train_shakespeare.py (8 x 128 tokens, 4 layers, 128 wide, vocab 50304).
A step costs about 6 * N * tokens FLOPs: for the quick start, N = 7.2M (6.4M of it the tied 50304 x 128 LM
head) and 1,024 tokens, so 6 * 7.2M * 1024 = 44 GFLOP per step.
"""

import math
import os
import statistics
import sys
import time
from contextlib import nullcontext
from dataclasses import fields

import torch
import torch.nn as nn
from torch.nn import functional as F

from configurator import configure, read_file
from disperse import disperse
from model import GPT, GPTConfig, MODELS, build_model

# -----------------------------------------------------------------------------
what = 'all'  # 'all', 'reference', 'dispersion', 'qwen3', 'condensation', 'lmeval', 'nanogpt' (the last three: not in 'all')
nanogpt = ''  # nanogpt: path to a checkout of https://github.com/karpathy/nanoGPT (its model.py is imported from there)
pairs = 20  # nanogpt: interleaved forward+backward pairs timed (after `warmup` untimed ones each)
lmeval_shape = '124m'  # lmeval: '124m' (GPT-2 small shape, random weights, 1024 positions) or 'tiny' (2 x 32, 96)
num_sequences = 0  # condensation: one measurement of N sequences in this process (bench.py runs it for N = 10, 100)
seq_len = 512
device = 'cpu'
dtype = 'float32'
batch_size = 8
block_size = 128
n_layer = 4
n_head = 4
n_embd = 128
vocab_size = 50304
steps = 10
warmup = 3
rounds = 3
seed = 1337
# -----------------------------------------------------------------------------
globals().update(configure({k: v for k, v in globals().items() if not k.startswith('_') and
                            isinstance(v, (int, float, str))}, sys.argv[1:]))
device_type = 'cuda' if device.startswith('cuda') else 'cpu'
ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[dtype]
ctx = nullcontext() if dtype == 'float32' else torch.autocast(device_type=device_type, dtype=ptdtype)


class ReferenceBlock(nn.Module):
    """GPT-2's block the textbook way: separate q/k/v Linears, explicit masked softmax attention, nn.GELU."""

    def __init__(self, d, h, T):
        super().__init__()
        self.h = h
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.fc, self.proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.register_buffer('mask', torch.tril(torch.ones(T, T, dtype=torch.bool)))

    def forward(self, x):
        B, T, C = x.shape
        a = self.ln_1(x)
        q, k, v = (m(a).view(B, T, self.h, C // self.h).transpose(1, 2) for m in (self.q, self.k, self.v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(C // self.h)
        att = att.masked_fill(~self.mask[:T, :T], float('-inf')).softmax(dim=-1)
        x = x + self.o((att @ v).transpose(1, 2).reshape(B, T, C))
        return x + self.proj(F.gelu(self.fc(self.ln_2(x)), approximate='tanh'))


class ReferenceGPT(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(c.vocab_size, c.n_embd), nn.Embedding(c.block_size, c.n_embd)
        self.blocks = nn.ModuleList(ReferenceBlock(c.n_embd, c.n_head, c.block_size) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.n_embd)
        self.head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for b in self.blocks:
            x = b(x)
        logits = self.head(self.ln_f(x))
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))


def time_steps(model, loss_fn, x, y):
    """Median seconds per training step (forward, backward, AdamW step) over `steps` steps after `warmup`."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        with ctx:
            loss = loss_fn(model, x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device_type == 'cuda':
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def ce_loss(model, x, y):
    return model(x, y)[1]  # both GPT classes here return (logits, loss)


def dispersion_ce_loss(model, x, y):
    """train.py's objective with the paper's recommended settings: CE + 0.1 * angular_spread on all blocks."""
    _, ce, hidden = model(x, y, return_hidden=True)
    return ce + 0.1 * disperse(hidden, loc='all', variant='angular_spread', tau=1.0, clamp=0.1, max_tokens=256)


def compare(name, entries, x, y):
    """entries: [(label, model, loss_fn)]. Runs them in `rounds` interleaved rounds (a slow moment of a shared
    machine then hits every entry), keeps each one's fastest round, and prints ms/step, tokens/s and the ratio
    to the first entry."""
    best = {}
    for _ in range(rounds):
        for label, model, loss_fn in entries:
            best[label] = min(best.get(label, float('inf')), time_steps(model, loss_fn, x, y))
    tokens = batch_size * block_size
    first = best[entries[0][0]]
    print(f"\n{name} ({batch_size} x {block_size} tokens per step, {device}, {dtype}, best of {rounds})")
    for label, s in best.items():
        print(f"  {label:<42} {s * 1000:8.1f} ms/step  {tokens / s:10,.0f} tok/s  x{s / first:.3f}")


def model_keys(path):
    """The model-shaping keys a config file sets (train.py's defaults for the ones it leaves out)."""
    namespace = read_file(path)
    defaults = dict(model_type='gpt', n_layer=12, n_head=12, n_embd=768, n_inner=0, n_kv_head=0, head_dim=0, bias=False)
    return {k: namespace.get(k, v) for k, v in defaults.items()}


def condensation_run():
    """One condensation measurement in this process: a 6-layer, 384-wide GPT (30M parameters), N sequences of
    seq_len tokens; prints seconds and this process's peak resident memory."""
    import resource
    from eval import condensation
    torch.manual_seed(seed)
    model = GPT(GPTConfig(n_layer=6, n_head=6, n_embd=384, block_size=seq_len)).to(device).eval()
    seqs = torch.randint(0, 50257, (num_sequences, seq_len))
    t0 = time.perf_counter()
    condensation(model, seqs, batch_size=8, device=device)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # kB -> GiB on Linux
    print(f"  N = {num_sequences:4d}, S = {seq_len}: {time.perf_counter() - t0:7.1f} s, peak memory {peak:.2f} GiB")



def lmeval_speed(shape, seeds=10, shots=1):
    """Log-likelihood phase only, same requests both ways: lm-eval's hf model at batch size 1 (the paper's
    setting; it keeps its one-token-continuation cache) vs our adapter (tasks/engine.py's batched engine, default
    batch). Requests: every document of the test fixtures (tests/fixtures/tasks, hand-written in each dataset's
    schema) with `shots`-shot prompts drawn with `seeds` sampler seeds. Runs alternate, best of `rounds`."""
    import tempfile
    from types import SimpleNamespace
    from lm_eval.models.huggingface import HFLM
    from transformers import GPT2Config, GPT2LMHeadModel
    from data.tokenizer import get_tokenizer
    from model import from_pretrained
    from tasks.engine import TASKS, doc_requests, prepare, resolve_fewshot
    from tasks.lm_eval_adapter import gpt2_tokenizer_dir, register_lm_eval
    fixtures = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'tests', 'fixtures', 'tasks')
    names = [n for n, t in TASKS.items() if os.path.isdir(os.path.join(fixtures, t.folder or n))]
    model_dir = gpt2_tokenizer_dir(os.path.join(tempfile.mkdtemp(), shape))
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(n_positions=1024) if shape == '124m' else
                         GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=96, vocab_size=50257))
    hf.save_pretrained(model_dir)
    shot_spec = resolve_fewshot(','.join(f'{n}={shots}' for n in names), names)
    pairs = []
    for s in range(seeds):
        ready, _ = prepare(names, shot_spec, seed=s, data_dir=fixtures, log=None)
        for task, task_docs, prefixes in ready.values():
            for doc, prefix in zip(task_docs, prefixes):
                pairs += doc_requests(task, doc, prefix)
    requests = [SimpleNamespace(args=p) for p in pairs]
    model = from_pretrained(model_dir).eval()
    lms = {'lm-eval hf, batch size 1': HFLM(pretrained=model_dir, batch_size=1, device='cpu', dtype='float32'),
           'ours, batched': register_lm_eval()(model=model, tokenizer=get_tokenizer(model.config.tokenizer),
                                               device='cpu')}
    best, results = {}, {}
    for _ in range(rounds):
        for label, lm in lms.items():
            t0 = time.perf_counter()
            results[label] = lm.loglikelihood(requests, disable_tqdm=True)
            best[label] = min(best.get(label, float('inf')), time.perf_counter() - t0)
    a, b = results.values()
    assert all(abs(x[0] - y[0]) < 1e-3 and x[1] == y[1] for x, y in zip(a, b)), 'the two disagree'
    for label, t in best.items():
        print(f"  {label:<26} {t:7.2f} s")
    ta, tb = best.values()
    print(f"speed-up {ta / tb:.1f}x: {len(requests)} requests ({len(set(pairs))} distinct), {shots}-shot, "
          f"{shape} GPT-2, {torch.get_num_threads()} CPU threads, best of {rounds}")

def nanogpt_speed(path):
    """Our GPT vs nanoGPT's own model.py (imported from the checkout at `path`, not copied here), same shape, same
    weights (our state dict loaded into theirs: the parameter names are nanoGPT's), same batch: forward (logits of
    every position and the cross-entropy) + backward, no optimizer step. `pairs` interleaved pairs, each model's
    median and the median of the per-pair ratios (a slow moment of a shared machine then hits both alike).
    The models differ in one numeric: nanoGPT's MLP uses the exact (erf) GELU, ours GPT-2's tanh form."""
    import importlib.util
    file = os.path.join(path, 'model.py')
    if not os.path.isfile(file):
        raise SystemExit(f"--nanogpt={path!r} is not a nanoGPT checkout (no model.py there): "
                         f"git clone https://github.com/karpathy/nanoGPT and pass its folder.")
    spec = importlib.util.spec_from_file_location('nanogpt_model', file)
    ng = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ng)
    shape = dict(block_size=block_size, vocab_size=vocab_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                 dropout=0.0, bias=True)
    torch.manual_seed(seed)
    ours = GPT(GPTConfig(**shape)).to(device)
    theirs = ng.GPT(ng.GPTConfig(**shape)).to(device)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randint(0, vocab_size, (batch_size, block_size), device=device)
    y = torch.randint(0, vocab_size, (batch_size, block_size), device=device)

    def fwd_bwd(model):
        t0 = time.perf_counter()
        with ctx:
            loss = model(x, y)[1]
        loss.backward()
        model.zero_grad(set_to_none=True)
        if device_type == 'cuda':
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    for _ in range(warmup):
        fwd_bwd(ours), fwd_bwd(theirs)
    times = [(fwd_bwd(ours), fwd_bwd(theirs)) for _ in range(pairs)]
    a, b = statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)
    ratio = statistics.median(t[0] / t[1] for t in times)
    print(f"\nour GPT vs nanoGPT's model.py ({path}), {n_layer} x {n_embd}, {batch_size} x {block_size} tokens, "
          f"vocab {vocab_size}, {device}, {dtype}, {torch.get_num_threads()} threads, forward + backward, "
          f"medians of {pairs} interleaved pairs")
    print(f"  nanoGPT model.py {b * 1000:8.1f} ms\n  model.GPT        {a * 1000:8.1f} ms\n"
          f"  ours / nanoGPT: x{a / b:.3f} (medians), x{ratio:.3f} (median of the pairs' ratios)")


if __name__ == '__main__':
    if num_sequences:
        condensation_run()
        sys.exit()
    if what == 'condensation':  # a fresh process per N, so that each peak is its own
        import subprocess
        print(f"condensation, 6 x 384 GPT, batch 8, {device}")
        for n in (10, 100, 300):
            subprocess.run([sys.executable, __file__, f'--num_sequences={n}', f'--seq_len={seq_len}',
                            f'--device={device}'], check=True)
        sys.exit()
    if what == 'lmeval':
        lmeval_speed(lmeval_shape)
        sys.exit()
    if what == 'nanogpt':
        nanogpt_speed(nanogpt or '.')
        sys.exit()
    torch.manual_seed(seed)
    x = torch.randint(0, vocab_size, (batch_size, block_size), device=device)
    y = torch.randint(0, vocab_size, (batch_size, block_size), device=device)
    config = GPTConfig(block_size=block_size, vocab_size=vocab_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                       bias=True, dropout=0.0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if what in ('all', 'reference'):
        ours, ref = GPT(config).to(device), ReferenceGPT(config).to(device)
        assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
        compare('our GPT vs a plain GPT-2 implementation', [('plain reference GPT-2', ref, ce_loss),
                                                            ('model.GPT (fused QKV, SDPA)', ours, ce_loss)], x, y)
    if what in ('all', 'dispersion'):
        model = GPT(config).to(device)
        compare('dispersion loss overhead', [('cross-entropy only', model, ce_loss),
                                             ('CE + 0.1 * angular_spread (all)', model, dispersion_ce_loss)], x, y)
    if what in ('all', 'qwen3'):
        here = os.path.dirname(os.path.abspath(__file__))
        entries = []
        for path in ('config/train_shakespeare.py', 'config/train_shakespeare_qwen3.py'):
            keys = model_keys(os.path.join(here, path))
            args = {f.name: keys[f.name] for f in fields(MODELS[keys['model_type']][0]) if f.name in keys}
            model = build_model(dict(args, model_type=keys['model_type'], vocab_size=vocab_size,
                                     block_size=block_size, dropout=0.0)).to(device)
            entries.append((f"{path} ({model.num_params() / 1e6:.2f}M)", model, ce_loss))
        compare('quick-start GPT vs Qwen3-style', entries, x, y)
