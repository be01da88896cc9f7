"""
bench.py: speed measurements, side by side in one process (timings, not tests).

  python bench.py                          # everything below on the default device
  python bench.py --what=reference         # our GPT vs a plain GPT-2 written the textbook way, same shapes/dtype
  python bench.py --what=dispersion        # step time with the dispersion loss vs cross-entropy only
  python bench.py --what=qwen3             # the small Qwen3-style quick-start model vs the GPT one
  python bench.py --what=condensation      # eval.py's condensation: time and peak memory for N = 10, 100, 300
  python bench.py --what=hf_condensation   # eval.py --init_from's path: a SmolLM-135M-shaped transformers Llama
  python bench.py --what=lmeval            # task scoring (tasks/): ours (batched) vs lm-eval's hf model at batch 1
  python bench.py --what=mmlu              # real MMLU rows at 0, 1, 5 shots: ours vs lm-eval hf at batch 1 and 16
  python bench.py --what=nanogpt --nanogpt=PATH   # our GPT vs nanoGPT's own model.py (a checkout at PATH): e.g.
      OMP_NUM_THREADS=1 python bench.py --what=nanogpt --nanogpt=../nanoGPT --n_layer=6 --n_head=6 --n_embd=384 \
          --block_size=256 --batch_size=8 --vocab_size=50304
  python bench.py --what=released           # SmolLM2-135M's training step: ours vs transformers (bench_released.py)
  python bench.py --what=lmeval_cli         # SmolLM2-135M on real MMLU: ours vs lm-eval's command line (bench_lmeval_cli.py)
  python bench.py --what=gpu                # one GPU, one Markdown table (gpu_table; CPU smoke: --device=cpu --tiny=True)
  python bench.py --device=cuda --dtype=bfloat16 --batch_size=16 --block_size=1024 --n_layer=12 --n_embd=768 --n_head=12

Each measurement times full training steps (forward, backward, AdamW step) on the same random batch: `warmup`
untimed steps, then the median of `steps` timed ones. Defaults are the quick-start shapes of
config/train_shakespeare.py (8 x 128 tokens, 4 layers, 128 wide, vocab 50304).
A step costs about 6 * N * tokens FLOPs: for the quick start, N = 7.2M (6.4M of it the tied 50304 x 128 LM
head) and 1,024 tokens, so 6 * 7.2M * 1024 = 44 GFLOP per step.
"""

import logging
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import fields

import torch
import torch.nn as nn
from torch.nn import functional as F

import hardware
from configurator import configure, read_file, script_defaults
from disperse import disperse
from model import GPT, GPTConfig, MODELS, build_model

# -----------------------------------------------------------------------------
what = 'all'  # 'all', 'reference', 'dispersion', 'qwen3', 'condensation', 'hf_condensation', 'lmeval', 'mmlu', 'released', 'lmeval_cli' (not in 'all': the last six)
lmeval_shape = '124m'  # lmeval, mmlu: '124m' (GPT-2 small shape, random weights, 1024 positions) or 'tiny' (2 x 32, 96)
tasks_data = '~/.cache/disperse-gpt/tasks'  # mmlu: DIR/mmlu/<subject>/{dev,test}.jsonl (python data/released.py --mmlu_dir DIR)
mmlu_docs = 20  # mmlu: first N test documents of each subject
hf = False  # with num_sequences: the hf_condensation model instead of the GPT
num_sequences = 0  # condensation: one measurement of N sequences in this process (bench.py runs it for N = 10, 100)
seq_len = 512
device = 'auto'  # 'auto' = cuda if available, else cpu
dtype = 'float32'  # what=gpu always measures bfloat16
tiny = False  # what=gpu: every part at toy size (the CPU smoke test of the GPU command: --device=cpu --tiny=True)
compile = True  # what=gpu: torch.compile the models as train.py does on CUDA
nanogpt = ''  # what=nanogpt (not in 'all', nor is 'gpu'): a checkout of https://github.com/karpathy/nanoGPT
pairs = 20  # nanogpt: interleaved forward+backward pairs timed (after `warmup` untimed ones each)
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
device = hardware.resolve_device(device)  # the one resolution train.py, eval.py and sample.py use
device_type = 'cuda' if device.startswith('cuda') else 'cpu'
ctx = hardware.autocast(dtype, device)


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


def clock(fn):
    """(fn(), its seconds), synchronised on CUDA so that the seconds include the kernels fn queued: the one timer
    of every measurement in this file."""
    t0 = time.perf_counter()
    out = fn()
    if device_type == 'cuda':
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def timed(step, n, untimed=0):
    """Median seconds of n calls of step(), after `untimed` calls that warm up (compilation, allocator, caches)."""
    times = [clock(step)[1] for _ in range(untimed + n)]
    return statistics.median(times[untimed:])


def time_steps(model, loss_fn, x, y):
    """Median seconds per training step (forward, backward, AdamW step) over `steps` steps after `warmup`."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        with ctx:
            loss = loss_fn(model, x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return timed(step, steps, warmup)


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


MODEL_KEYS = ('model_type', 'n_layer', 'n_head', 'n_embd', 'n_inner', 'n_kv_head', 'head_dim', 'bias')


def model_keys(path):
    """The model-shaping keys a config file sets (train.py's defaults, read from train.py, for the ones it leaves
    out)."""
    namespace = read_file(path)
    defaults = script_defaults(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'train.py'))[0]
    return {k: namespace.get(k, defaults[k]) for k in MODEL_KEYS}


def condensation_run():
    """One condensation measurement in this process: a 6-layer, 384-wide GPT (30M parameters), N sequences of
    seq_len tokens; prints seconds and this process's peak resident memory."""
    import resource
    from condensation import condensation
    torch.manual_seed(seed)
    model = smollm_135m() if hf else GPT(GPTConfig(n_layer=6, n_head=6, n_embd=384, block_size=seq_len)).to(device).eval()
    seqs = torch.randint(0, 49152 if hf else 50257, (num_sequences, seq_len))
    _, dt = clock(lambda: condensation(model, seqs, batch_size=batch_size if hf else 8, device=device))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # kB -> GiB on Linux
    print(f"  N = {num_sequences:4d}, S = {seq_len}: {dt:7.1f} s ({dt / num_sequences:.2f} s per sequence), "
          f"peak memory {peak:.2f} GiB")


def smollm_135m():
    """A randomly initialised transformers Llama of SmolLM-135M's shape (30 layers, 576 wide, 9 heads over 3 KV
    heads, MLP 1536, vocab 49152, tied: 134.5M parameters) behind hf_lm.py's interface, as --init_from runs it."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from hf_lm import HFHiddenStates
    cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                      tie_word_embeddings=True)
    hf = LlamaForCausalLM(cfg).to(device).eval()
    print(f"  {sum(p.numel() for p in hf.parameters()) / 1e6:.1f}M parameters, {torch.get_num_threads()} threads")
    return HFHiddenStates(hf, None, "smollm-135m-shaped", 2048)



def lmeval_speed(shape, seeds=10, shots=1, device='cpu', quiet=False):
    """Log-likelihood phase only, same requests both ways: lm-eval's hf model at batch size 1 (the paper's
    setting; it keeps its one-token-continuation cache) vs our adapter (tasks/engine.py's batched engine, default
    batch). Requests: every document of the test fixtures (tests/fixtures/tasks, hand-written in each dataset's
    schema) with `shots`-shot prompts drawn with `seeds` sampler seeds. Runs alternate, best of `rounds`.
    Returns (lm-eval's seconds, ours, number of requests)."""
    import tempfile
    from types import SimpleNamespace
    from lm_eval.models.huggingface import HFLM
    from transformers import GPT2Config, GPT2LMHeadModel
    from data.tokenizer import get_tokenizer, write_gpt2_hf_tokenizer
    from hf_convert import from_pretrained
    from tasks.engine import TASKS, doc_requests, prepare, resolve_fewshot
    from tasks.lm_eval_adapter import register_lm_eval
    fixtures = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'tests', 'fixtures', 'tasks')
    names = [n for n, t in TASKS.items() if os.path.isdir(os.path.join(fixtures, t.folder or n))]
    model_dir = write_gpt2_hf_tokenizer(os.path.join(tempfile.mkdtemp(), shape))
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
    lms = {'lm-eval hf, batch size 1': HFLM(pretrained=model_dir, batch_size=1, device=device, dtype='float32'),
           'ours, batched': register_lm_eval()(model=model, tokenizer=get_tokenizer(model.config.tokenizer),
                                               device=device)}
    best, results = {}, {}
    for _ in range(rounds):
        for label, lm in lms.items():
            results[label], t = clock(lambda: lm.loglikelihood(requests, disable_tqdm=True))
            best[label] = min(best.get(label, float('inf')), t)
    a, b = results.values()
    assert all(abs(x[0] - y[0]) < 1e-3 and x[1] == y[1] for x, y in zip(a, b)), 'the two disagree'
    if quiet:
        return (*best.values(), len(requests))
    for label, t in best.items():
        print(f"  {label:<26} {t:7.2f} s")
    ta, tb = best.values()
    print(f"speed-up {ta / tb:.1f}x: {len(requests)} requests ({len(set(pairs))} distinct), {shots}-shot, "
          f"{shape} GPT-2, {torch.get_num_threads()} CPU threads, best of {rounds}")


def mmlu_speed(shape, data_dir, subjects=('anatomy', 'astronomy'), docs=20, shots_list=(0, 1, 5),
               hf_batches=(1, 16)):
    """Real MMLU rows (DIR/mmlu/<subject>/{dev,test}.jsonl), the first `docs` test documents of each subject at
    0, 1 and 5 shots (lm-eval's MMLU prompts; first_n few-shot examples, so one block per subject): lm-eval's
    hf model at each batch size of hf_batches vs our engine through its lm-eval adapter, on the same requests,
    interleaved, the log-likelihood phase with tokenisation (lm.loglikelihood). Prints time, speed-up over
    lm-eval batch 1, accuracy of each (they must agree) and the largest cached prefix's keys and values."""
    import resource
    import tempfile
    from types import SimpleNamespace
    from lm_eval.models.huggingface import HFLM
    from transformers import GPT2Config, GPT2LMHeadModel
    from data.tokenizer import get_tokenizer, write_gpt2_hf_tokenizer
    from hf_convert import from_pretrained
    from tasks import engine
    from tasks.engine import doc_metrics, doc_requests, prepare, resolve_fewshot
    from tasks.lm_eval_adapter import register_lm_eval
    model_dir = write_gpt2_hf_tokenizer(os.path.join(tempfile.mkdtemp(), shape))
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_positions=1024) if shape == '124m' else
                    GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=96, vocab_size=50257)).save_pretrained(model_dir)
    model = from_pretrained(model_dir).eval()
    lms = {f'lm-eval hf, batch {b}': HFLM(pretrained=model_dir, batch_size=b, device='cpu', dtype='float32')
           for b in hf_batches}
    lms['ours (engine, prefix once)'] = register_lm_eval()(model=model, tokenizer=get_tokenizer('gpt2'), device='cpu')
    names = [f'mmlu_{s}' for s in subjects]
    print(f"MMLU {', '.join(subjects)}: first {docs} test rows each, {shape} GPT-2 shape (random weights), "
          f"{torch.get_num_threads()} CPU thread(s); seconds of lm.loglikelihood (tokenisation included)")
    print("| shots | requests | " + " | ".join(lms) + " | speed-up vs batch 1 | acc (all equal) | prefix KV |")
    print("|---" * (len(lms) + 5) + "|")
    for shots in shots_list:
        ready, missing = prepare(names, resolve_fewshot(str(shots), names), docs, data_dir=data_dir, log=None)
        if missing:
            raise SystemExit(" ".join(missing.values()))
        spans, pairs = [], []
        for task, task_docs, prefixes in ready.values():
            for doc, prefix in zip(task_docs, prefixes):
                p = doc_requests(task, doc, prefix)
                spans.append((task, doc, len(pairs), len(p)))
                pairs += p
        requests = [SimpleNamespace(args=p) for p in pairs]
        times, accs = {}, {}
        for label, lm in lms.items():
            res, times[label] = clock(lambda: lm.loglikelihood(requests, disable_tqdm=True))
            accs[label] = sum(doc_metrics(t, d, res[a:a + n])['acc'] for t, d, a, n in spans) / len(spans)
        assert len(set(accs.values())) == 1, f"accuracies differ: {accs}"
        base = times[f'lm-eval hf, batch {hf_batches[0]}']
        kv = engine.LAST_RUN.get('peak_prefix_bytes', 0) / 2**20
        print(f"| {shots} | {len(requests)} | " + " | ".join(f"{t:.1f}" for t in times.values()) +
              f" | {base / times['ours (engine, prefix once)']:.1f}x | {100 * accs[label]:.1f} | {kv:.1f} MiB |",
              flush=True)
    print(f"peak RSS of the process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


def nanogpt_speed(path):
    """Our GPT vs nanoGPT's own model.py (imported from the checkout at `path`, not copied here), same shape, same
    weights (our state dict loaded into theirs: the parameter names are nanoGPT's), same batch: forward (logits of
    every position and the cross-entropy) + backward, no optimizer step. `pairs` interleaved pairs, each model's
    median and the median of the per-pair ratios (a slow moment of a shared machine then hits both alike); the two
    take turns going first.
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

    def fwd_bwd(model):  # seconds of one forward + backward
        def run():
            with ctx:
                loss = model(x, y)[1]
            loss.backward()
            model.zero_grad(set_to_none=True)
        return clock(run)[1]

    for _ in range(warmup):
        fwd_bwd(ours), fwd_bwd(theirs)
    times = []
    for i in range(pairs):  # each goes first in every other pair (no order effect from caches or the allocator)
        first, second = (ours, theirs) if i % 2 == 0 else (theirs, ours)
        t_first, t_second = fwd_bwd(first), fwd_bwd(second)
        times.append((t_first, t_second) if i % 2 == 0 else (t_second, t_first))
    a, b = statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)
    ratio = statistics.median(t[0] / t[1] for t in times)
    print(f"\nour GPT vs nanoGPT's model.py ({path}), {n_layer} x {n_embd}, {batch_size} x {block_size} tokens, "
          f"vocab {vocab_size}, {device}, {dtype}, {torch.get_num_threads()} threads, forward + backward, "
          f"medians of {pairs} interleaved pairs")
    print(f"  nanoGPT model.py {b * 1000:8.1f} ms\n  model.GPT        {a * 1000:8.1f} ms\n"
          f"  ours / nanoGPT: x{a / b:.3f} (medians), x{ratio:.3f} (median of the pairs' ratios)")


# -----------------------------------------------------------------------------
# what=gpu: the one command that measures a GPU

class RecompileCounter(logging.Handler):
    """Counts dynamo's "Recompiling function" records (TORCH_LOGS=recompiles, switched on by the constructor)."""

    def __init__(self):
        super().__init__()
        self.count = 0
        torch._logging.set_logs(recompiles=True)
        logging.getLogger('torch._dynamo').addHandler(self)

    def emit(self, record):
        self.count += 'Recompiling function' in record.getMessage()


def memory_now():
    """Peak accelerator memory since the last reset in GB (1e9 bytes, as fsdp.memory_gb), None on the CPU."""
    return torch.cuda.max_memory_allocated() / 1e9 if device_type == 'cuda' else None


def reset_memory():
    if device_type == 'cuda':
        import gc
        gc.collect()  # the previous measurement's model and optimizer
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def syncs_during(fn):
    """(fn(), host syncs it caused): torch.cuda.set_sync_debug_mode('warn') warns once per synchronising call.
    None on the CPU, which has nothing to synchronise with."""
    if device_type != 'cuda':
        return fn(), None
    import warnings
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        torch.cuda.set_sync_debug_mode('warn')
        try:
            out = fn()
        finally:
            torch.cuda.set_sync_debug_mode('default')
    return out, sum('synchroniz' in str(w.message) for w in caught)


def gpt2_rows(recompiles):
    """GPT-2 124M (tiny: 2 x 64), bf16 autocast, compiled as train.py compiles it, AdamW (fused on CUDA): tokens/s,
    MFU, peak memory; then the same with train.py's dispersion term (0.1 x angular_spread on all blocks, 256
    tokens): its overhead and the host syncs of one step's loss and backward."""
    cfg = GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=64, vocab_size=512) if tiny else GPTConfig()
    B, T = (2, cfg.block_size) if tiny else (16, 1024)
    torch.manual_seed(seed)
    raw = GPT(cfg).to(device)
    model = torch.compile(raw) if compile else raw
    opt = raw.configure_optimizers(0.1, 6e-4, (0.9, 0.95), device_type)
    x, y = (torch.randint(0, cfg.vocab_size, (B, T), device=device) for _ in range(2))
    amp = torch.autocast(device_type=device_type, dtype=torch.bfloat16)
    gen = torch.Generator().manual_seed(0)  # train.py's: a CPU generator for the token subsets
    max_tokens = 16 if tiny else 256  # fewer than T: the subsampling (and its one copy to the device) runs

    def loss_ce():
        with amp:
            return model(x, y)[1]

    def loss_disp():
        with amp:
            _, ce, hidden = model(x, y, return_hidden=True)
            return ce + 0.1 * disperse(hidden, loc='all', variant='angular_spread', max_tokens=max_tokens,
                                       generator=gen)

    def step(loss_fn):
        loss_fn().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    rows, sec = [], {}
    name = torch.cuda.get_device_name() if device_type == 'cuda' else 'cpu'
    for label, fn in (('CE', loss_ce), ('CE + dispersion', loss_disp)):
        before = recompiles.count
        reset_memory()
        sec[label] = timed(lambda: step(fn), steps, warmup)  # the compile happens in the untimed steps
        mem = memory_now()
        _, syncs = syncs_during(lambda: fn().backward())
        opt.zero_grad(set_to_none=True)
        peak = hardware.peak_flops(name, 'bfloat16')
        mfu = raw.estimate_mfu(B, sec[label], peak) if peak else None
        what = f"GPT-2 {raw.num_params() / 1e6:.3g}M, {B} x {T}, bf16{', compiled' if compile else ''}, {label}"
        rows.append((what, f"{B * T / sec[label]:,.0f} tok/s, {sec[label] * 1e3:.1f} ms/step, "
                           f"MFU {'n/a' if mfu is None else f'{mfu * 100:.1f}%'}, peak memory "
                           f"{'n/a' if mem is None else f'{mem:.1f} GB'}, "
                           f"{'n/a' if syncs is None else syncs} host syncs in loss + backward, "
                           f"{recompiles.count - before} recompiles"))
    rows.append(("dispersion loss overhead (step time)", f"{sec['CE + dispersion'] / sec['CE'] - 1:+.1%}"))
    return rows


def fsdp_rows(recompiles):
    """One FSDP process (world size 1; fsdp.shard as train.py calls it: per-block compile, the recipe's activation
    checkpointing, bf16 parameters) of the largest config/train_qwen3_*.py shape whose fsdp.memory_gb estimate
    fits in 90% of this GPU (tiny: a 2 x 64 Qwen3), its micro-batch B x T: step time and predicted vs measured
    peak memory. Weights are drawn in place on the device (N(0, 0.02), norms 1): no CPU copy of the model."""
    import torch.distributed as dist
    import fsdp
    here = os.path.dirname(os.path.abspath(__file__))
    total = torch.cuda.get_device_properties(device).total_memory / 1e9 if device_type == 'cuda' else None
    chosen = None
    for size in ('8b', '4b', '1.7b', '0.6b'):
        path = os.path.join(here, 'config', f'train_qwen3_{size}.py')
        ns = read_file(path)
        keys = model_keys(path)
        args = dict({f.name: keys[f.name] for f in fields(MODELS['qwen3'][0]) if f.name in keys}, model_type='qwen3',
                    vocab_size=50304, block_size=ns['block_size'], tie_embeddings=ns.get('tie_embeddings', True))
        B, T, ac = ns['batch_size'], ns['block_size'], ns.get('activation_checkpointing', False)
        if tiny:
            args.update(n_layer=2, n_head=2, n_kv_head=1, head_dim=16, n_embd=64, n_inner=128, vocab_size=512,
                        block_size=64)
            B, T = 2, 64
        with torch.device('meta'):
            model = build_model(args)
        c = model.config
        predicted = fsdp.memory_gb(model.num_params(non_embedding=False), c.n_layer, c.n_embd, c.vocab_size, B * T,
                                   world_size=1, fsdp=True, ac=ac, accumulate=False)
        if tiny or total is None or predicted < 0.9 * total:
            chosen = (size, model, B, T, ac, predicted)
            break
    if chosen is None:
        return [("FSDP step, Qwen3 recipes", f"none fits in {total:.0f} GB")]
    size, model, B, T, ac, predicted = chosen
    started = not dist.is_initialized()
    if started:
        os.environ.setdefault('MASTER_ADDR', '127.0.0.1')
        os.environ.setdefault('MASTER_PORT', str(29500 + os.getpid() % 1000))
        dist.init_process_group('nccl' if device_type == 'cuda' else 'gloo', rank=0, world_size=1)
    try:
        before = recompiles.count
        reset_memory()
        model = fsdp.shard(model, device, 'bfloat16', ac, compile, from_rank0=False)
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(1.0) if p.dim() == 1 else p.normal_(0.0, 0.02)
        opt = model.configure_optimizers(0.1, 2e-4, (0.9, 0.95), device_type)
        x, y = (torch.randint(0, model.config.vocab_size, (B, T), device=device) for _ in range(2))

        def step():  # under bf16 autocast, as train.py runs FSDP: fp32 residual stream, bf16 block weights
            with hardware.autocast('bfloat16', device):
                loss = model(x, y)[1]
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        sec = timed(step, 3, 2)
        mem = memory_now()
    finally:
        if started:
            dist.destroy_process_group()
    shape = f"tiny Qwen3 (2 x 64), the {size.upper()} recipe's settings" if tiny else f"Qwen3-{size.upper()} recipe"
    label = f"FSDP step, 1 process, {shape}, {B} x {T}" + \
            f"{', AC' if ac else ''}, bf16{', compiled per block' if compile else ''}"
    return [(label, f"{sec * 1e3:.0f} ms/step, {B * T / sec:,.0f} tok/s, memory predicted {predicted:.1f} GB / "
                    f"measured {'n/a' if mem is None else f'{mem:.1f} GB'}, {recompiles.count - before} recompiles")]


def gpu_table():
    """Every GPU figure the README wants, as one Markdown table: GPT-2 124M training speed, MFU and memory, the
    dispersion loss's overhead and host syncs, recompiles, task scoring vs lm-eval's hf model (same requests),
    one FSDP step of the largest Qwen3 recipe that fits with fsdp.memory_gb's prediction beside the measurement."""
    t0 = time.perf_counter()
    name = torch.cuda.get_device_name() if device_type == 'cuda' else f'cpu ({torch.get_num_threads()} threads)'
    recompiles = RecompileCounter()
    rows = gpt2_rows(recompiles)
    hf_s, ours_s, n = lmeval_speed('tiny' if tiny else '124m', seeds=1 if tiny else 10, device=device, quiet=True)
    rows.append((f"task scoring, {n} requests, {'tiny' if tiny else '124M'} GPT-2, fp32",
                 f"lm-eval hf (batch 1) {hf_s:.2f} s, ours (batched) {ours_s:.2f} s: {hf_s / ours_s:.1f}x"))
    rows += fsdp_rows(recompiles)
    print(f"\n{name}, torch {torch.__version__}{', tiny shapes' if tiny else ''}, "
          f"{time.perf_counter() - t0:.0f} s in all\n")
    print("| what | figure |\n|---|---|")
    for what_, figure in rows:
        print(f"| {what_} | {figure} |")

if __name__ == '__main__':
    if num_sequences:
        condensation_run()
        sys.exit()
    if what == 'condensation':  # a fresh process per N, so that each peak is its own
        print(f"condensation, 6 x 384 GPT, batch 8, {device}")
        for n in (10, 100, 300):
            subprocess.run([sys.executable, __file__, f'--num_sequences={n}', f'--seq_len={seq_len}',
                            f'--device={device}'], check=True)
        sys.exit()
    if what == 'hf_condensation':  # fresh processes: peak memory for two N shows it flat in N
        import subprocess
        print(f"condensation through transformers (hf_lm.py), SmolLM-135M shape, batch {batch_size}, {device}")
        for n in (4, 8):
            subprocess.run([sys.executable, __file__, f'--num_sequences={n}', f'--seq_len={seq_len}', '--hf=True',
                            f'--device={device}', f'--batch_size={batch_size}'], check=True)
        sys.exit()
    if what == 'lmeval':
        lmeval_speed(lmeval_shape)
        sys.exit()
    if what == 'mmlu':
        mmlu_speed(lmeval_shape, os.path.expanduser(tasks_data), docs=mmlu_docs)
        sys.exit()
    if what == 'nanogpt':
        nanogpt_speed(nanogpt or '.')
        sys.exit()
    if what == 'gpu':
        gpu_table()
        sys.exit()
    if what in ('released', 'lmeval_cli'):  # released weights: bench_released.py, bench_lmeval_cli.py, each as its
        # own script (bench_released's worker processes start from their parent's main module, which must not be
        # this flat script)
        sys.exit(subprocess.call([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                               f'bench_{what}.py')]))
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
