"""
train.py: train a GPT-2 or Qwen3-style model, from scratch or from released weights, on one process or many.

  python train.py config/train_shakespeare.py                                    # laptop CPU, minutes
  torchrun --standalone --nproc_per_node=8 train.py config/gpt2_dispersion.py    # one node, 8 GPUs
  torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --master_addr=10.0.0.1 --master_port=29500 train.py ...

Config: the module-level assignments below are the defaults (GPT-2 124M on OpenWebText); a config file and
--key=value arguments override them (configurator.py). The whole config goes into every checkpoint and into
the first record of out_dir/log.jsonl.

One optimizer step ("iter") sees batch_size * block_size * gradient_accumulation_steps tokens, where
gradient_accumulation_steps is the global number of micro-batches: each of the world_size processes runs
gradient_accumulation_steps / world_size of them, and DDP averages the gradients across processes on the
last micro-step only. The loss is
  loss = CE + dispersion_coeff * L_disp(hidden states)          (L_disp only when dispersion is set)
each micro-batch's loss divided by the number of micro-batches so the accumulated gradient is the mean's.

Checkpoints (out_dir/ckpt.pt, the latest; best.pt, the lowest val loss) hold the un-compiled, un-wrapped
model state dict, the optimizer, model_args, iter_num, best_val_loss, config and every RNG state of every
process, so that --init_from=resume continues exactly where the run stopped. They are written atomically.
"""

import json
import math
import os
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from configurator import configure
from data.tokens import fixed_starts, get_batch, load_meta, load_split
import fsdp
from model import build_model, config_keys, from_pretrained, make_config, model_args_of, save_checkpoint

# -----------------------------------------------------------------------------
# default config values: GPT-2 124M on OpenWebText, 8 GPUs (see config/train_gpt2.py for the arithmetic)
# I/O
out_dir = 'out'
eval_interval = 2000
log_interval = 1
eval_iters = 200  # val loss over eval_iters * batch_size fixed windows
eval_only = False  # evaluate once and exit
always_save_checkpoint = True  # save ckpt.pt at every eval, not only when val loss improves
save_best = True  # also keep best.pt, the checkpoint with the lowest val loss
init_from = 'scratch'  # 'scratch', 'resume' (out_dir/ckpt.pt), 'gpt2'..'gpt2-xl', 'Qwen/Qwen3-0.6B'.., or a local HF dir
# wandb logging
wandb_log = False
wandb_project = 'disperse-gpt'
wandb_run_name = 'gpt2'
# data
dataset = 'openwebtext'  # data/<dataset>/{train,val}.bin
gradient_accumulation_steps = 5 * 8  # global micro-batches per step (divided among the processes)
batch_size = 12  # micro-batch size per process
block_size = 1024
# model
model_type = 'gpt'  # 'gpt' (GPT-2) or 'qwen3'
n_layer = 12
n_head = 12
n_embd = 768
n_inner = 0  # MLP width; 0 = 4 * n_embd for GPT, 3 * n_embd for Qwen3
dropout = 0.0  # 0 for pre-training, try 0.1+ for fine-tuning
bias = False  # GPT only: biases in Linears and LayerNorms
n_kv_head = 0  # Qwen3 only: K/V heads (0 = n_head)
head_dim = 0  # Qwen3 only: 0 = n_embd // n_head
rope_theta = 1e6  # Qwen3 only
norm_eps = 1e-6  # Qwen3 only
tie_embeddings = True  # Qwen3 only (GPT is always tied)
# dispersion loss (disperse.py), added to the cross-entropy in training only
dispersion = None  # None, or one of disperse.VARIANTS: 'angular_spread' (the paper's), 'orthogonalization', ...
dispersion_coeff = 0.1  # lambda: loss = CE + lambda * L_disp
dispersion_loc = 'all'  # 'all', 'last', 'early_half', 'late_half', or a list of block indices
dispersion_tau = 1.0  # temperature of angular_spread / infonce_cosine
dispersion_clamp = 0.1  # t of the straight-through clamp of cosines to [-1+t, 1-t]
dispersion_eps = 1e-2  # in z / (|z| + eps) and the authors' constant shifts
dispersion_margin = 0.5  # orthogonalization pushes pairs closer than this angular distance
dispersion_tau_l2 = 1.0  # temperature of l2_repel / perplexity_entropy (1 underflows on raw states: use ~F)
dispersion_max_tokens = 256  # token positions sampled per sequence and layer; 0 = all
# the paper's baselines
noise_alpha = 0.0  # noisy embeddings: U(-m, m), m = alpha / sqrt(L * d) added to token embeddings; 0 = off
forget_every = 0  # active forgetting: re-initialise the token embedding every this many steps; 0 = off
# condensation probe at every eval (eval.py's measurement on a few fixed val windows)
probe_windows = 8  # 0 = off
# benchmarks during training (eval.py's lm-eval-style scoring), as the paper did during mid-training
bench_interval = 0  # every this many iters (a multiple of eval_interval); 0 = off
bench_tasks = 'paper'  # 'paper', 'all' or a comma list such as 'arc_easy,piqa'
bench_limit = 100  # first N documents per task (and per MMLU subject)
bench_data = ''  # offline benchmark data (data/benchmarks/download.py); '' = the Hugging Face hub
# AdamW
learning_rate = 6e-4
max_iters = 600000
weight_decay = 1e-1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0  # 0 = off
# learning rate schedule: linear warmup, then cosine decay to min_lr at lr_decay_iters
decay_lr = True
warmup_iters = 2000
warmup_frac = 0.0  # if > 0: warmup_iters = warmup_frac * max_iters (the paper's mid-training: 0.2)
lr_decay_iters = 0  # 0 = max_iters
min_lr = 6e-5  # ~ learning_rate / 10 (Chinchilla)
# system
device = 'auto'  # 'auto' (cuda if available, else cpu), 'cpu', 'cuda', 'cuda:1', 'mps'
dtype = 'auto'  # 'auto' (bfloat16 on CUDA where supported, else float16 with a GradScaler; float32 on CPU)
compile = None  # None = on for CUDA, off elsewhere (a cold compile costs 30-55 s per process on a small CPU)
backend = 'auto'  # DDP backend: nccl on CUDA, gloo on CPU
parallelism = 'ddp'  # 'ddp' (a whole copy per process) or 'fsdp' (sharded: fsdp.py; needs torchrun)
activation_checkpointing = False  # recompute each block in the backward: less memory, ~1/3 more compute
peak_flops = 0.0  # for MFU; 0 = guess from the GPU name (A100 312e12, H100/H200 989e12)
seed = 1337
# -----------------------------------------------------------------------------
config_keys_ = [k for k, v in globals().items()
                if not k.startswith('_') and k != 'config_keys_' and isinstance(v, (int, float, bool, str, type(None), list, tuple))]
globals().update(configure({k: globals()[k] for k in config_keys_}, sys.argv[1:]))
config = {k: globals()[k] for k in config_keys_}
# -----------------------------------------------------------------------------


def log0(*args):
    if master_process:
        print(*args, flush=True)


# distributed setup: torchrun sets RANK, LOCAL_RANK and WORLD_SIZE
ddp = int(os.environ.get('RANK', -1)) != -1
if device == 'auto':
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
if ddp:
    ddp_rank, ddp_local_rank, ddp_world_size = (int(os.environ[k]) for k in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE'))
    if device.startswith('cuda'):
        device = f'cuda:{ddp_local_rank}'
        torch.cuda.set_device(device)
    if backend == 'auto':
        backend = 'nccl' if device.startswith('cuda') else 'gloo'
    dist.init_process_group(backend=backend)
else:
    ddp_rank, ddp_local_rank, ddp_world_size = 0, 0, 1
master_process = ddp_rank == 0
if parallelism not in ('ddp', 'fsdp'):
    raise SystemExit(f"parallelism must be 'ddp' or 'fsdp', not '{parallelism}'.")
if parallelism == 'fsdp' and not ddp:
    raise SystemExit("parallelism='fsdp' runs under torchrun, even on one process: torchrun --nproc_per_node=1 train.py ...")
if gradient_accumulation_steps % ddp_world_size != 0:
    raise SystemExit(f"gradient_accumulation_steps ({gradient_accumulation_steps}) must be a multiple of the number "
                     f"of processes ({ddp_world_size}).")
grad_accum = gradient_accumulation_steps // ddp_world_size  # micro-batches per process per step
tokens_per_iter = gradient_accumulation_steps * batch_size * block_size
log0(f"tokens per iteration: {tokens_per_iter:,} ({gradient_accumulation_steps} micro-batches x {batch_size} x {block_size})")

device_type = 'cuda' if device.startswith('cuda') else device.split(':')[0]
if dtype == 'auto':
    dtype = ('bfloat16' if torch.cuda.is_bf16_supported() else 'float16') if device_type == 'cuda' else 'float32'
if dtype not in ('float32', 'bfloat16', 'float16'):
    raise SystemExit(f"dtype must be 'auto', 'float32', 'bfloat16' or 'float16', not '{dtype}'.")
if model_type not in ('gpt', 'qwen3'):
    raise SystemExit(f"model_type must be 'gpt' or 'qwen3', not '{model_type}'.")
if compile is None:
    compile = device_type == 'cuda'
if device_type == 'cuda':
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[dtype]
ctx = nullcontext() if dtype == 'float32' else torch.autocast(device_type=device_type, dtype=ptdtype)

# Dropout masks: every process seeds its own stream. Training data and the dispersion loss's token subsets are
# drawn per global micro-batch from (seed, iter, micro-batch index): the same windows whatever the number of
# processes, different on every process, and a resumed run needs no saved stream to redraw them.
torch.manual_seed(seed + ddp_rank)
random.seed(seed + ddp_rank)
np.random.seed(seed + ddp_rank)
disp_gen = torch.Generator()


def train_batch(it, micro_step):
    """The training windows of global micro-batch (it, micro_step); also reseeds the dispersion subsampling."""
    m = ddp_rank * grad_accum + micro_step  # this process's share of the step's micro-batches
    seq = np.random.SeedSequence([seed, it, m])
    disp_gen.manual_seed(int(seq.generate_state(1, np.uint64)[0] >> 1))
    return get_batch(data_dir, 'train', batch_size, block_size, np.random.default_rng(seq), device)


# data: check it is there and large enough before building anything
data_dir = dataset if os.path.isabs(dataset) else os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', dataset)
try:
    n_val = len(load_split(data_dir, 'val'))
    n_train = len(load_split(data_dir, 'train'))
    val_starts = fixed_starts(n_val, block_size, eval_iters * batch_size)
    train_starts = fixed_starts(n_train, block_size, eval_iters * batch_size)
except (FileNotFoundError, ValueError) as e:
    raise SystemExit(str(e))
meta = load_meta(data_dir)
config['tokenizer'] = meta['tokenizer']  # eval.py encodes text with the checkpoint's tokenizer

# model
iter_num, best_val_loss, checkpoint = 0, 1e9, None
init_origin = init_from  # 'scratch' or the released weights the run started from
args = {k: globals()[k] for k in config_keys(model_type) if k in globals()}  # the model keys of this config
if init_from == 'scratch':
    vocab_size = math.ceil(meta['vocab_size'] / 64) * 64  # pad for fast matmuls: 50257 -> 50304
    with fsdp.build_device(parallelism, ddp_rank, init_from):  # FSDP: rank 0 only; the others on 'meta'
        model = build_model(model_type, dict(args, vocab_size=vocab_size, block_size=block_size))
    log0(f"initialising a new {model_type} model from scratch (vocab {vocab_size})")
elif init_from == 'resume':
    ckpt_path = os.path.join(out_dir, fsdp.CKPT if parallelism == 'fsdp' else 'ckpt.pt')
    if not os.path.exists(ckpt_path):
        raise SystemExit(f"Cannot resume: there is no checkpoint at {ckpt_path}. Train with --init_from=scratch first.")
    checkpoint = fsdp.read_meta(ckpt_path) if parallelism == 'fsdp' else torch.load(ckpt_path, map_location='cpu', weights_only=False)
    saved = checkpoint['model_args']
    init_origin = checkpoint.get('init_origin', 'scratch')
    if init_origin == 'scratch':  # the config shapes the model: it must be the checkpoint's
        wanted = dict(asdict(make_config(model_type, dict(args, vocab_size=saved['vocab_size'], block_size=block_size))),
                      model_type=model_type)
        diff = {k: (saved.get(k), v) for k, v in wanted.items() if k != 'dropout' and saved.get(k) != v}
        if diff:
            raise SystemExit(f"The checkpoint in {out_dir} is a different model from this config (key: (checkpoint, "
                             f"config) {diff}); resume with the config it was trained with.")
    model_type = config['model_type'] = saved['model_type']
    with fsdp.build_device(parallelism, ddp_rank, init_from):  # FSDP: weights come from the shards (fsdp.load)
        model = build_model(model_type, dict(saved, dropout=dropout))
    if parallelism == 'ddp':
        model.load_state_dict({k.removeprefix('_orig_mod.'): v for k, v in checkpoint['model'].items()})
    iter_num, best_val_loss = checkpoint['iter_num'], checkpoint['best_val_loss']
    log0(f"resuming from {ckpt_path} at iter {iter_num}")
else:
    log0(f"initialising from released weights: {init_from}")
    model = fsdp.from_pretrained(init_from, dropout, ddp_rank) if parallelism == 'fsdp' else from_pretrained(init_from, dropout=dropout)
    if model.tokenizer_name != meta['tokenizer']:
        raise SystemExit(f"{init_from} uses the tokenizer '{model.tokenizer_name}' but data/{dataset} was tokenised "
                         f"with '{meta['tokenizer']}': prepare the data with --tokenizer {model.tokenizer_name}.")
    model_type = config['model_type'] = model.model_type
    if block_size < model.config.block_size:
        model.crop_block_size(block_size)
if block_size > model.config.block_size:
    raise SystemExit(f"block_size {block_size} is larger than the model's context {model.config.block_size}.")
model_args = model_args_of(model)
if parallelism == 'fsdp':  # shard every block, then the root; weights from rank 0 (or, on resume, the shards)
    model = fsdp.shard(model, device, dtype, activation_checkpointing, compile, from_rank0=init_from != 'resume')
else:
    model.to(device)
log0(f"number of parameters: {model.num_params() / 1e6:.2f}M (non-embedding)")

# the paper's baselines hook into the model from outside, without changing its code
if noise_alpha > 0 or forget_every > 0 or dispersion:
    import disperse
disp_kwargs = dict(loc=dispersion_loc, variant=dispersion, tau=dispersion_tau, clamp=dispersion_clamp,
                   eps=dispersion_eps, margin=dispersion_margin, tau_l2=dispersion_tau_l2,
                   max_tokens=dispersion_max_tokens)  # every parameter of disperse.dispersion_loss
if noise_alpha > 0:
    disperse.add_embedding_noise(model, noise_alpha)

scaler = torch.amp.GradScaler(device_type, enabled=(dtype == 'float16'))
optimizer = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type)
if checkpoint is not None:
    if parallelism == 'fsdp':
        fsdp.load(ckpt_path, model, optimizer)
    else:
        optimizer.load_state_dict(checkpoint['optimizer'])
    rng = checkpoint.get('rng')
    if rng is not None and len(rng) == ddp_world_size:  # the same process layout: continue every stream exactly
        r = rng[ddp_rank]
        random.setstate(r['python'])
        np.random.set_state(r['numpy'])
        torch.set_rng_state(r['torch'])
        if r.get('cuda') is not None and device_type == 'cuda':
            torch.cuda.set_rng_state(r['cuda'])
    else:
        log0("note: the checkpoint was written by a different number of processes; dropout masks are reseeded")
checkpoint = None  # free memory

raw_model = model
if activation_checkpointing and parallelism == 'ddp':
    fsdp.wrap_blocks(model, activation_checkpointing=True, compile=False)
if compile and parallelism == 'ddp':  # FSDP compiles per block (fsdp.shard)
    log0("compiling the model... (takes a minute)")
    model = torch.compile(model)
if ddp and parallelism == 'ddp':
    model = DDP(model, device_ids=[ddp_local_rank] if device_type == 'cuda' else None)


def forward_loss(X, Y, train):
    """(total, ce, disp) for one micro-batch. The dispersion term exists in training only, and hidden states are
    returned only when it is on (they cost nothing extra: the forward computes them anyway)."""
    with ctx:
        if train and dispersion:
            _, ce, hidden = model(X, Y, return_hidden=True)
            disp = disperse.disperse(hidden, generator=disp_gen, **disp_kwargs)
            return ce + dispersion_coeff * disp, ce, disp
        _, ce = model(X, Y)
        return ce, ce, None


@torch.no_grad()
def estimate_loss():
    """Mean loss over the fixed windows of each split, shared out among the processes and summed back: the same
    number for any world size."""
    out = {}
    model.eval()
    for split, starts in (('train', train_starts), ('val', val_starts)):
        mine = starts[ddp_rank::ddp_world_size]
        total = torch.zeros(2, device=device, dtype=torch.float64)  # sum of window losses, number of windows
        for i in range(0, len(mine), batch_size):
            X, Y = get_batch(data_dir, split, 0, block_size, device=device, starts=mine[i:i + batch_size])
            _, loss, _ = forward_loss(X, Y, train=False)
            total += torch.tensor([loss.item() * len(X), len(X)], device=device, dtype=torch.float64)
        if ddp:
            dist.all_reduce(total)
        out[split] = (total[0] / total[1]).item()
    model.train()
    return out


def get_lr(it):
    """Linear warmup for warmup_iters, then cosine from learning_rate down to min_lr at lr_decay_iters."""
    warm = int(warmup_frac * max_iters) if warmup_frac > 0 else warmup_iters
    decay_end = lr_decay_iters or max_iters
    if it < warm:
        return learning_rate * (it + 1) / (warm + 1)
    if it > decay_end:
        return min_lr
    ratio = (it - warm) / max(1, decay_end - warm)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)


def rng_states():
    """This process's global RNG states (dropout); the data order needs none: it follows from (seed, iter)."""
    return {'python': random.getstate(), 'numpy': np.random.get_state(), 'torch': torch.get_rng_state(),
            'cuda': torch.cuda.get_rng_state() if device_type == 'cuda' else None}


def checkpoint_dict(rng):
    return {'model': raw_model.state_dict(), 'optimizer': optimizer.state_dict(), 'model_args': model_args,
            'iter_num': iter_num, 'best_val_loss': best_val_loss, 'config': config, 'rng': rng,
            'init_origin': init_origin}


def log_record(record):
    """One JSON line in out_dir/log.jsonl (and wandb)."""
    if not master_process:
        return
    record = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
    with open(os.path.join(out_dir, 'log.jsonl'), 'a') as f:
        f.write(json.dumps(record) + '\n')  # standard JSON: a NaN (e.g. rho of a constant curve) becomes null
    if wandb_log:
        wandb.log({k: v for k, v in record.items() if k != 'iter'}, step=record['iter'])


if master_process:
    os.makedirs(out_dir, exist_ok=True)
    log_record({'iter': iter_num, 'event': 'start', 'config': config, 'model_args': model_args,
                'world_size': ddp_world_size, 'device': device, 'dtype': dtype, 'compile': compile})
if wandb_log and master_process:
    import wandb
    wandb.init(project=wandb_project, name=wandb_run_name, config=config)

if peak_flops == 0 and device_type == 'cuda':
    name = torch.cuda.get_device_name()
    peak_flops = 989e12 if ('H100' in name or 'H200' in name) else 312e12

# training loop
X, Y = train_batch(iter_num, 0)  # the first batch
t0 = time.time()
local_iter_num = 0
running_mfu = -1.0
while True:
    lr = get_lr(iter_num) if decay_lr else learning_rate
    for group in optimizer.param_groups:
        group['lr'] = lr

    if iter_num % eval_interval == 0 or eval_only:
        losses = estimate_loss()
        log0(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
        if not all(map(math.isfinite, losses.values())):
            raise SystemExit(f"Non-finite eval loss at iter {iter_num} ({losses}): stopping; the last good checkpoint "
                             f"in {out_dir} is kept. Lower the learning rate or use bfloat16/float32.")
        record = {'iter': iter_num, 'train_loss': losses['train'], 'val_loss': losses['val'], 'lr': lr}
        if probe_windows > 0:
            from eval import condensation_probe
            spread = val_starts[np.linspace(0, len(val_starts) - 1, min(probe_windows, len(val_starts))).astype(int)]
            probe_x, _ = get_batch(data_dir, 'val', 0, block_size, device=device, starts=spread)
            with ctx:
                record.update(condensation_probe(raw_model, probe_x))
        if bench_interval > 0 and iter_num % bench_interval == 0:
            from eval import run_benchmarks
            from data.tokenizer import get_tokenizer
            # every process scores a share of the documents; all get the gathered results back
            bench = run_benchmarks(raw_model, get_tokenizer(meta['tokenizer']), bench_tasks, bench_limit,
                                   data_dir=bench_data or None, autocast=ctx, progress=False,
                                   log=log0 if iter_num == 0 else None)
            record.update({f'bench_{name}': r['acc'] for name, r in bench['tasks'].items()})
            if bench['average'] is not None:
                record['bench_average'] = bench['average']
        log_record(record)
        rng = [rng_states()]  # every process's streams, in rank order, saved by rank 0
        if ddp:
            rng = [None] * ddp_world_size
            dist.all_gather_object(rng, rng_states())
        if (master_process or parallelism == 'fsdp') and (iter_num > 0 or init_from == 'resume') and not eval_only:
            improved = losses['val'] < best_val_loss
            best_val_loss = min(best_val_loss, losses['val'])
            if improved or always_save_checkpoint:
                if parallelism == 'fsdp':  # every process writes its shards
                    fsdp.save(checkpoint_dict(rng), model, optimizer, os.path.join(out_dir, fsdp.CKPT))
                else:
                    save_checkpoint(checkpoint_dict(rng), os.path.join(out_dir, 'ckpt.pt'))
                log0(f"saved checkpoint to {out_dir}/{fsdp.CKPT if parallelism == 'fsdp' else 'ckpt.pt'}")
            if improved and save_best:
                if parallelism == 'fsdp':
                    fsdp.save(checkpoint_dict(rng), model, optimizer, os.path.join(out_dir, fsdp.BEST))
                else:
                    save_checkpoint(checkpoint_dict(rng), os.path.join(out_dir, 'best.pt'))
    if eval_only or iter_num >= max_iters:
        break

    # one optimizer step over grad_accum micro-batches
    ce_sum, disp_sum = 0.0, 0.0
    for micro_step in range(grad_accum):
        if ddp and parallelism == 'ddp':  # all-reduce the gradients only after the last micro-batch
            model.require_backward_grad_sync = (micro_step == grad_accum - 1)
        elif parallelism == 'fsdp':  # reduce-scatter only after the last (costs one unsharded gradient meanwhile)
            model.set_requires_gradient_sync(micro_step == grad_accum - 1)
        loss, ce, disp = forward_loss(X, Y, train=True)
        loss = loss / grad_accum  # the accumulated gradient is the gradient of the mean loss
        # draw the next batch while the accelerator works on this one
        last = micro_step == grad_accum - 1
        X, Y = train_batch(iter_num + 1, 0) if last else train_batch(iter_num, micro_step + 1)
        scaler.scale(loss).backward()
        ce_sum += ce.detach()
        disp_sum += disp.detach() if disp is not None else 0.0
    if grad_clip != 0.0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    lossf = ce_sum.item() / grad_accum  # one host sync per step: needed to stop on a non-finite loss
    dispf = float(disp_sum) / grad_accum if dispersion else None
    if not math.isfinite(lossf) or (dispf is not None and not math.isfinite(dispf)):
        raise SystemExit(f"Non-finite loss at iter {iter_num} (ce {lossf}, dispersion {dispf}): stopping; the last "
                         f"good checkpoint in {out_dir} is kept. Lower the learning rate or use bfloat16/float32.")
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    if forget_every > 0 and (iter_num + 1) % forget_every == 0:
        disperse.forget_embeddings(raw_model, optimizer, torch.Generator().manual_seed(seed + iter_num))

    t1 = time.time()
    dt, t0 = t1 - t0, t1
    iter_num += 1
    local_iter_num += 1
    if iter_num % log_interval == 0 and master_process:
        if local_iter_num >= 5 and device_type == 'cuda':  # let the training loop settle a bit
            mfu = raw_model.estimate_mfu(batch_size * grad_accum, dt, peak_flops)
            running_mfu = mfu if running_mfu == -1.0 else 0.9 * running_mfu + 0.1 * mfu
        total = lossf + (dispersion_coeff * dispf if dispf is not None else 0.0)
        extra = f", ce {lossf:.4f}, disp {dispf:.4f}" if dispf is not None else ""
        mfu_txt = f", mfu {running_mfu * 100:.2f}%" if running_mfu >= 0 else ""
        print(f"iter {iter_num}: loss {total:.4f}{extra}, lr {lr:.2e}, {tokens_per_iter / dt:,.0f} tok/s, "
              f"{dt * 1000:.0f} ms/iter{mfu_txt}", flush=True)
        record = {'iter': iter_num, 'loss': total, 'ce': lossf, 'lr': lr, 'tokens_per_s': tokens_per_iter / dt,
                  'ms_per_iter': dt * 1000}
        if dispf is not None:
            record['disp'] = dispf
        if running_mfu >= 0:
            record['mfu'] = running_mfu
        log_record(record)

if ddp:
    dist.destroy_process_group()
