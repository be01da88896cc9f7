"""
train.py: train a GPT-2 or Qwen3-style model, from scratch or from released weights, on one process or many.

  python train.py config/train_shakespeare.py                                    # laptop CPU, minutes
  python train.py config/train_shakespeare.py config/dispersion.py --max_iters=100   # files compose, in order
  torchrun --standalone --nproc_per_node=2 train.py config/train_shakespeare.py --gradient_accumulation_steps=2
  torchrun --standalone --nproc_per_node=8 train.py config/gpt2_dispersion.py  # one node, 8 GPUs
  python train.py --help                                                         # every key, default, comment

Config: the module-level assignments below are the defaults (GPT-2 124M on OpenWebText); config files (Python,
run as code) and --key=value arguments (literals, never executed) override them (configurator.py). The whole
config goes into every checkpoint and into each start record of out_dir/log.jsonl (runlog.py). Every setting is
checked before anything is built, one sentence per mistake (config_check.py).

One optimizer step ("iter") sees batch_size * block_size * gradient_accumulation_steps tokens, where
gradient_accumulation_steps is the global number of micro-batches: each of the world_size processes runs
gradient_accumulation_steps / world_size of them, and DDP averages the gradients across processes on the
last micro-step only. The loss is
  loss = CE + dispersion_coeff * L_disp(hidden states)          (L_disp only when dispersion is set)
             + distill_coeff * T^2 * KL(teacher_T || student_T)    (only with a teacher: disperse.distill_loss)
each micro-batch's loss divided by the number of micro-batches so the accumulated gradient is the mean's; the
logged loss is that mean over all processes.

Checkpoints (out_dir/ckpt.pt, the latest; best.pt, the lowest val loss) hold the model, the optimizer, the
config and every process's RNG state, so that --init_from=resume continues exactly where the run stopped; they
are written atomically after an eval (checkpoint.py: what they hold, the save policy). One trainer at a time
holds out_dir, and a new run never replaces another run's checkpoint unless overwrite=True.
"""

import math
import os
import sys
import time
from dataclasses import fields

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import disperse
import fsdp
import hardware
import lora
from checkpoint import (checkpoints_note, gather_rng_states, load_resume, load_teacher, lock_out_dir, restore_state,
                        save_checkpoints)
from config_check import config_error
from configurator import configure, doc_section, key_types, print_help
from data.tokens import fixed_starts, get_batch, load_meta, load_split, tokens_match, window_loss
from hf_convert import from_pretrained
from model import MODELS, build_model, model_args_of
from runlog import append_record, wandb_scalars

# -----------------------------------------------------------------------------
# default config values: GPT-2 124M on OpenWebText, 8 GPUs (see config/train_gpt2.py for the arithmetic)
# I/O
out_dir = 'out'
eval_interval = 2000
log_interval = 1
eval_iters = 200  # val loss over eval_iters * batch_size fixed windows
eval_only = False  # evaluate once, print the losses and exit; nothing in out_dir is written (its log, checkpoints)
always_save_checkpoint = True  # save ckpt.pt at every eval, not only when val loss improves
save_best = True  # also keep best.pt, the checkpoint with the lowest val loss
init_from = 'scratch'  # 'scratch', 'resume' (out_dir/ckpt.pt), 'gpt2'.., 'Qwen/Qwen3-0.6B'.., a local HF dir or a .gguf file
overwrite = False  # let init_from scratch / released weights replace the checkpoints already in out_dir
# wandb logging
wandb_log = False  # log to Weights & Biases (pip install wandb; WANDB_MODE=offline works without network)
wandb_project = 'disperse-gpt'
wandb_run_name = 'gpt2'
# data
dataset = 'openwebtext'  # data/<dataset>/{train,val}.bin
gradient_accumulation_steps = 5 * 8  # global micro-batches per step (divided among the processes)
batch_size = 12  # micro-batch size per process
block_size = 1024
# model
model_type = 'gpt'  # a key of model.MODELS: 'gpt' (GPT-2) or 'qwen3'
n_layer = 12
n_head = 12
n_embd = 768
n_inner = 0  # MLP width; 0 = 4 * n_embd for GPT, 3 * n_embd for Qwen3
dropout = 0.0  # 0 for pre-training, try 0.1+ for fine-tuning
bias = False  # GPT only: biases in Linears and LayerNorms (GPTConfig's True is released GPT-2's layout)
n_kv_head = 0  # Qwen3 only: K/V heads (0 = n_head)
head_dim = 0  # Qwen3 only: 0 = n_embd // n_head
rope_theta = 1e6  # Qwen3 only
norm_eps = 1e-6  # Qwen3 only
tie_embeddings = True  # Qwen3 only (GPT is always tied)
qk_norm = True  # Qwen3 only: QK-norm (Llama and Qwen2 weights set these switches from their own config)
qkv_bias = False  # Qwen3 only: biases on q/k/v
o_bias = False  # Qwen3 only: a bias on the attention output projection
rope_type = 'default'  # Qwen3 only: 'default', 'linear' or 'llama3' RoPE scaling
rope_factor = 1.0  # Qwen3 only: the scaling factor of 'linear' / 'llama3'
rope_low_freq_factor = 1.0  # Qwen3 only: 'llama3' band edge
rope_high_freq_factor = 4.0  # Qwen3 only: 'llama3' band edge
rope_original_context = 8192  # Qwen3 only: 'llama3' pretraining context
hf_type = 'qwen3'  # Qwen3 only: the transformers architecture export writes ('qwen3', 'qwen2', 'llama')
# LoRA (lora.py): low-rank adapters on the blocks' linear layers, everything else frozen; 0 = full fine-tuning.
# The authors' mid-training option: rank 16, alpha 32, dropout 0.05 on c_attn, c_proj, c_fc
lora_rank = 0
lora_alpha = 32.0  # the adapters' output is scaled by lora_alpha / lora_rank
lora_targets = 'c_attn,c_proj,c_fc'  # the blocks' Linear layers by the end of their name (peft's target_modules)
lora_dropout = 0.0  # dropout on the adapters' input
# dispersion loss (disperse.py), added to the cross-entropy in training only
dispersion: str | None = None  # None, or one of disperse.VARIANTS: 'angular_spread' (the paper's), 'orthogonalization', ...
dispersion_coeff = 0.1  # lambda: loss = CE + lambda * L_disp
dispersion_loc: str | list = 'all'  # 'all', 'last', 'early_half', 'late_half', or a list of block indices
dispersion_tau = 1.0  # temperature of angular_spread / infonce_cosine
dispersion_clamp = 0.1  # t of the straight-through clamp of cosines to [-1+t, 1-t]
dispersion_eps = 1e-2  # in z / (|z| + eps) and the authors' constant shifts
dispersion_margin = 0.5  # orthogonalization pushes pairs closer than this angular distance
dispersion_tau_l2 = 1.0  # temperature of l2_repel / perplexity_entropy (1 underflows on raw states: use ~F)
dispersion_max_tokens = 256  # token positions sampled per sequence and layer; 0 = all
# the paper's baselines
noise_alpha = 0.0  # noisy embeddings: U(-m, m), m = alpha / sqrt(L * d) added to token embeddings; 0 = off
forget_every = 0  # active forgetting: re-initialise the token embedding every this many steps; 0 = off
forget_lr = 0.0  # active forgetting: the embedding's own peak lr (disperse.forget_lr's schedule); 0 = learning_rate
# knowledge distillation (disperse.distill_loss): loss += distill_coeff * T^2 * KL(teacher_T || student_T), training only
teacher = ''  # a frozen teacher: a checkpoint of ours (path to its ckpt.pt) or a transformers directory / name
distill_coeff = 0.0  # 0 = off
distill_temperature = 2.0  # T of the teacher's and the student's softmax
# condensation probe at every eval (eval.py's measurement on a few fixed val windows)
probe_windows = 8  # 0 = off
# task accuracy during training (tasks/, lm-eval-style scoring), as the paper did during mid-training
tasks_interval = 0  # every this many iters (a multiple of eval_interval); 0 = off
tasks = 'paper'  # 'paper', 'all' or a comma list such as 'arc_easy,piqa'
tasks_limit = 100  # first N documents per task (and per MMLU subject)
tasks_fewshot = ''  # shots, as eval.py --fewshot: '' = the paper's per task, '5' = all, 'mmlu=5,arc_easy=1'
tasks_data = ''  # offline task data (python -m tasks.download --out DIR); '' = the Hugging Face hub
perplexity_data = ''  # at each tasks_interval also lm-eval's rolling word perplexity of this .jsonl / text file
perplexity_limit = 50  # its first N documents (tasks/rolling.py; e.g. data/lee_news/lee_news.jsonl)
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
dtype = 'auto'  # 'auto': bfloat16 on GPUs with native bf16 (Ampere+), float16 + GradScaler on older ones; float32 on CPU/MPS
compile: bool | None = None  # None = on for CUDA, off elsewhere (a cold compile costs 30-55 s per process on a small CPU)
backend = 'auto'  # DDP backend: nccl on CUDA, gloo on CPU
parallelism = 'ddp'  # 'ddp' (a whole copy per process) or 'fsdp' (sharded: fsdp.py; needs torchrun)
activation_checkpointing = False  # recompute each block in the backward: less memory, ~1/3 more compute
peak_flops = 0.0  # for MFU; 0 = hardware.peak_flops of the GPU's name and dtype (none shown for an unknown GPU)
seed = 1337
# -----------------------------------------------------------------------------
if {'-h', '--help'} & set(sys.argv[1:]):
    try:
        print_help(__file__, "usage: python train.py [config/FILE.py ...] [--key=value ...]\n" + doc_section(__doc__, "  python", "\n\n"))
        sys.stdout.flush()
    except BrokenPipeError:  # python train.py --help | head: the reader had enough, which is no error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
    sys.exit()
config_keys = [k for k, v in globals().items()
               if not k.startswith('_') and isinstance(v, (int, float, bool, str, type(None), list, tuple))]
globals().update(configure({k: globals()[k] for k in config_keys}, sys.argv[1:], key_types(__annotations__)))
config = {k: globals()[k] for k in config_keys}

# process group setup: torchrun sets RANK, LOCAL_RANK and WORLD_SIZE (read here, before any process group exists,
# so that a config that cannot run stops every process at once and rank 0 alone says why). distributed, rank and
# world_size mean the same under DDP and FSDP (parallelism says which of the two shares the model).
distributed = hardware.torchrun_env() is not None
rank, local_rank, world_size = hardware.torchrun_env() or (0, 0, 1)
master_process = rank == 0


def log0(*args):
    if master_process:
        print(*args, flush=True)


disp_kwargs = dict(loc=dispersion_loc, variant=dispersion, tau=dispersion_tau, clamp=dispersion_clamp,
                   eps=dispersion_eps, margin=dispersion_margin, tau_l2=dispersion_tau_l2,
                   max_tokens=dispersion_max_tokens)  # every parameter of disperse.dispersion_loss
problem = config_error(config, disp_kwargs, distributed, local_rank, world_size)  # before anything is built
if problem:
    raise SystemExit(problem if master_process else 1)  # rank 0 says it once; the others exit quietly

lock = lock_out_dir(out_dir) if master_process and not eval_only else None  # held until the process ends

# run_device, run_dtype, run_compile: what the config's device, dtype and compile ('auto', None) resolve to here
run_device = hardware.resolve_device(device, local_rank if distributed else None)  # cuda:N also becomes the current GPU
hardware.init_distributed(run_device, backend)
grad_accum = gradient_accumulation_steps // world_size  # micro-batches per process per step
tokens_per_iter = gradient_accumulation_steps * batch_size * block_size
log0(f"tokens per iteration: {tokens_per_iter:,} ({gradient_accumulation_steps} micro-batches x {batch_size} x {block_size})")

device_type = 'cuda' if run_device.startswith('cuda') else run_device.split(':')[0]
run_dtype = hardware.resolve_dtype(dtype, run_device)  # auto: bf16 on GPUs with it natively, else float16 + GradScaler
run_compile = device_type == 'cuda' if compile is None else compile  # None: on for CUDA
if device_type == 'cuda':
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
ctx = hardware.autocast(run_dtype, run_device)
if device_type == 'cpu':
    hardware.keep_freed_memory()  # the same large blocks every step: reuse their pages (hardware.py, bench_released.py)

# Dropout masks: every process seeds its own torch stream (saved in checkpoints). Training data and the
# dispersion loss's token subsets are drawn per global micro-batch from (seed, iter, micro-batch index): the same
# windows whatever the number of processes, different on every process, and a resumed run redraws them.
torch.manual_seed(seed + rank)


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

# model: from scratch (the config's shape), from this out_dir's checkpoint, or from released weights
iter_num, checkpoint = 0, None
# what out_dir's checkpoints hold: the lowest val loss so far and its iteration (best.pt), the iteration ckpt.pt
# holds (None: nothing saved by this run); the loop holds it, save_checkpoints returns the next one
kept = {'best_val_loss': 1e9, 'best_iter': None, 'saved_iter': None}
init_origin = init_from  # 'scratch' or the released weights the run started from
args = {f.name: config[f.name] for f in fields(MODELS[model_type][0]) if f.name in config}  # this config's model keys
if init_from == 'scratch':
    padded = math.ceil(meta['vocab_size'] / 64) * 64  # pad for fast matmuls: 50257 -> 50304
    with fsdp.build_device(parallelism, rank, init_from):  # FSDP: rank 0 only; the others on 'meta'
        model = build_model(dict(args, model_type=model_type, vocab_size=padded, block_size=block_size,
                                 tokenizer=meta['tokenizer']))
    log0(f"initialising a new {model_type} model from scratch (vocab {padded})")
elif init_from == 'resume':  # under FSDP the weights come from the shards (restore_state, below)
    model, checkpoint, ckpt_path = load_resume(out_dir, parallelism, rank, dropout,
                                               dict(args, model_type=model_type, block_size=block_size))
    init_origin = checkpoint.get('init_origin', 'scratch')
    if not tokens_match(model.config.tokenizer, meta):
        raise SystemExit(f"The checkpoint in {out_dir} was trained on tokens of '{model.config.tokenizer}' but "
                         f"data/{dataset} is tokenised with '{meta['tokenizer']}': resume on the data it was trained on.")
    iter_num = checkpoint['iter_num']
    kept = {'best_val_loss': checkpoint['best_val_loss'], 'best_iter': checkpoint.get('best_iter'),
            'saved_iter': iter_num}
    log0(f"resuming from {ckpt_path} at iter {iter_num}")
else:
    log0(f"initialising from released weights: {init_from}")
    model = (fsdp.from_pretrained(init_from, dropout, rank) if parallelism == 'fsdp'
             else from_pretrained(init_from, dropout=dropout))
    if not tokens_match(model.config.tokenizer, meta):
        raise SystemExit(f"{init_from} uses the tokenizer '{model.config.tokenizer}' but data/{dataset} was tokenised "
                         f"with '{meta['tokenizer']}': prepare the data with --tokenizer {model.config.tokenizer}.")
    if block_size < model.config.block_size:
        model.crop_block_size(block_size)
# from here on the architecture is model.model_type, and the config records it (checkpoints, log.jsonl): released
# weights, and runs resumed from them, bring their own, whatever the config's model_type (which builds from scratch)
config['model_type'] = model.model_type
if block_size > model.config.block_size:
    raise SystemExit(f"block_size {block_size} is larger than the model's context {model.config.block_size}.")
lora_wanted = dict(rank=lora_rank, alpha=float(lora_alpha), targets=','.join(lora.parse_targets(lora_targets)),
                   dropout=float(lora_dropout)) if lora_rank else None
if init_from == 'resume':  # the checkpoint rebuilt its adapters (model_args['lora']): they must be the config's
    if (getattr(model, 'lora', None) or None) != lora_wanted:
        raise SystemExit(f"The checkpoint in {out_dir} has LoRA {getattr(model, 'lora', None)} but the config asks "
                         f"for {lora_wanted}; resume with the config it was trained with.")
elif lora_wanted:
    try:
        lora.apply_lora(model, **lora_wanted)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    n_trainable, n_all = lora.trainable_params(model)
    log0(f"LoRA rank {lora_rank}, alpha {lora_alpha} on {lora_wanted['targets']}: {n_trainable:,} trainable of "
         f"{n_all:,} parameters, the rest frozen")
vocab_size = model.config.vocab_size
if meta['vocab_size'] > vocab_size:
    raise SystemExit(f"{os.path.join(data_dir, 'meta.json')} declares {meta['vocab_size']} token ids, more than the "
                     f"model's vocabulary of {vocab_size}: prepare the data with the model's tokenizer.")
if dispersion is not None:
    try:
        disperse.select_layers(model.config.n_layer, dispersion_loc)
    except ValueError as e:
        raise SystemExit(str(e))

teacher_model = load_teacher(teacher, meta, dataset, block_size, run_device) if distill_coeff > 0 else None  # frozen
# the training loss's terms and their coefficients: loss = sum of coefficient * term (forward_loss computes the
# terms under these names; accumulation, the non-finite stop, the step line and log.jsonl iterate over this dict)
loss_coeffs = {'ce': 1.0, **({'disp': dispersion_coeff} if dispersion else {}),
               **({'distill': distill_coeff} if teacher_model is not None else {})}
if teacher_model is not None:
    log0(f"distilling from {teacher} ({sum(p.numel() for p in teacher_model.parameters()):,} parameters, frozen) "
         f"at T = {distill_temperature}, coefficient {distill_coeff}, over the data's {meta['vocab_size']} tokens")
model_args = model_args_of(model)
n_total, n_embedding = model.num_params(non_embedding=False), model.embedding_params()  # tied: once
log0(f"parameters: {n_total:,} total = {n_embedding:,} in the embedding tables (token"
     f"{', position' if 'wpe' in model.transformer else ''}{'' if model.tied else ', untied LM head'}) + "
     f"{n_total - n_embedding:,} in the blocks and final norm")
if parallelism == 'fsdp':  # shard every block, then the root; weights from rank 0 (or, on resume, the shards)
    model = fsdp.shard(model, run_device, run_dtype, activation_checkpointing, run_compile,
                       from_rank0=init_from != 'resume')
else:
    model.to(run_device)
model.train()

# the paper's baselines hook into the model from outside, without changing its code
if noise_alpha > 0:
    disperse.add_embedding_noise(model, noise_alpha)

scaler = torch.amp.GradScaler(device_type, enabled=(run_dtype == 'float16'))
optimizer = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type)
forget_pad = None  # active forgetting: the token row zeroed at each re-draw (disperse.forget_pad_row), None = none
if forget_every > 0:  # the token embedding in a group of its own, with its own schedule (disperse.forget_lr)
    disperse.embedding_group(optimizer, model)
    forget_pad = disperse.forget_pad_row(meta, vocab_size)
if checkpoint is not None:  # the optimizer (under FSDP also the weights) and the RNG streams
    restore_state(checkpoint, ckpt_path, model, optimizer, parallelism, rank, world_size, device_type == 'cuda', log0)
checkpoint = None  # free memory

raw_model = model
if activation_checkpointing and parallelism == 'ddp':
    fsdp.wrap_blocks(model, activation_checkpointing=True, compile=False)
if run_compile and parallelism == 'ddp':  # FSDP compiles per block (fsdp.shard)
    log0("compiling the model... (takes a minute)")
    model = torch.compile(model)
if distributed and parallelism == 'ddp':
    model = DDP(model, device_ids=[local_rank] if device_type == 'cuda' else None)


def micro_batch_seed(it, micro_step):
    """The np.random.SeedSequence of this process's micro-batch micro_step of step `it`: it draws the batch's
    windows (train_batch) and the dispersion loss's token subsets (disp_seed)."""
    return np.random.SeedSequence([seed, it, rank * grad_accum + micro_step])


def disp_seed(it, micro_step):
    return int(micro_batch_seed(it, micro_step).generate_state(1, np.uint64)[0] >> 1)  # fits torch's int64 seed


def train_batch(it, micro_step):
    """The training windows (x, y) of micro-batch micro_step of step `it`."""
    try:
        return get_batch(data_dir, 'train', batch_size, block_size, np.random.default_rng(micro_batch_seed(it, micro_step)),
                         run_device, vocab_size=vocab_size)
    except ValueError as e:
        raise SystemExit(str(e))


def forward_loss(X, Y, train, disp_seed=None):
    """{name: term} for one micro-batch: 'ce', and in training the auxiliary terms of loss_coeffs. The dispersion's
    token subsets are drawn with disp_seed; hidden states are returned only when it is on (the forward computes them
    anyway). The distillation term compares the student's logits with the frozen teacher's on the same windows,
    over the data's real vocabulary (disperse.distill_loss). A new auxiliary loss: one more term here, under a
    name with its coefficient in loss_coeffs."""
    with ctx:
        if train and 'disp' in loss_coeffs:
            logits, ce, hidden = model(X, Y, return_hidden=True)
        else:
            logits, ce = model(X, Y)
        terms = {'ce': ce}
        if train and 'disp' in loss_coeffs:
            terms['disp'] = disperse.disperse(hidden, generator=torch.Generator().manual_seed(disp_seed), **disp_kwargs)
        if train and 'distill' in loss_coeffs:
            with torch.no_grad():
                teacher_logits, _ = teacher_model(X)
            terms['distill'] = disperse.distill_loss(logits, teacher_logits, distill_temperature, meta['vocab_size'], Y)
        return terms


def total_loss(terms):
    """sum of coefficient * term over loss_coeffs (tensors or floats), 'ce' first as is."""
    total = terms['ce']
    for name in list(loss_coeffs)[1:]:
        total = total + loss_coeffs[name] * terms[name]
    return total


def estimate_loss():
    """Mean loss over the fixed windows of each split (data.tokens.window_loss: shared out among the processes and
    summed back, the same number for any world size)."""
    out = {}
    model.eval()
    for split, starts in (('train', train_starts), ('val', val_starts)):
        try:
            out[split] = window_loss(lambda x, y: forward_loss(x, y, train=False)['ce'], data_dir, split, starts,
                                     batch_size, block_size, run_device, vocab_size)
        except ValueError as e:
            raise SystemExit(str(e))
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


def log_record(record):
    """One JSON line in out_dir/log.jsonl (runlog.py), and the same to wandb: lists become one curve per layer.
    eval_only writes nothing there: its start record at the checkpoint's iteration would read as a resume and
    hide every later record of the run it evaluates (runlog.read_log)."""
    if not master_process:
        return
    if not eval_only:
        append_record(os.path.join(out_dir, 'log.jsonl'), record)
    if wandb_log:
        wandb.log(wandb_scalars(record), step=record['iter'])


if wandb_log and master_process:  # before the first record
    import wandb
    wandb.init(project=wandb_project, name=wandb_run_name, config=config)
if master_process:
    if not eval_only:
        os.makedirs(out_dir, exist_ok=True)
    log_record({'iter': iter_num, 'event': 'start', 'config': config, 'model_args': model_args,
                'world_size': world_size, 'device': run_device, 'dtype': run_dtype, 'compile': run_compile})

# the MFU's denominator: the config's, else the table's (None for a GPU the table does not know: no MFU then)
mfu_peak = peak_flops or (hardware.peak_flops(torch.cuda.get_device_name(), run_dtype) if device_type == 'cuda'
                          else None)

# one iteration's steps, in the order the loop runs them


def set_lr(it):
    """-> (lr, emb_lr), set on the optimizer's groups: get_lr's schedule, and under active forgetting the
    embedding's own (the authors', disperse.forget_lr); the body keeps get_lr's."""
    lr = get_lr(it) if decay_lr else learning_rate
    emb_lr = disperse.forget_lr(it, max_iters, forget_every, forget_lr or learning_rate) if forget_every else lr
    for group in optimizer.param_groups:
        group['lr'] = emb_lr if group.get('name') == 'embedding' else lr
    return lr, emb_lr


_perplexity_texts = []  # perplexity_data's documents, read at the first tasks eval (iter 0, before any step)


def rolling_perplexity_record():
    """{word_perplexity_<file>, bits_per_byte_<file>}: lm-eval's rolling perplexity of perplexity_data's first
    perplexity_limit documents (tasks/rolling.py), every process scoring a share of them."""
    from tasks.rolling import read_texts, rolling_perplexity
    from data.tokenizer import get_tokenizer
    if not _perplexity_texts:
        try:
            _perplexity_texts.extend(read_texts(perplexity_data, perplexity_limit))
        except ValueError as e:
            raise SystemExit(f"perplexity_data: {e}")
    r = rolling_perplexity(raw_model, get_tokenizer(meta['tokenizer']), _perplexity_texts, autocast=ctx)
    name = os.path.splitext(os.path.basename(perplexity_data))[0]
    return {f'word_perplexity_{name}': r['word_perplexity'], f'bits_per_byte_{name}': r['bits_per_byte']}


def evaluate_and_log(it, lr, kept):
    """The eval losses (estimate_loss), the condensation probe (probe_windows), the task scores (tasks_interval):
    one record in log.jsonl and wandb (with the probe's heatmap) -> the record. A non-finite eval loss stops."""
    losses = estimate_loss()
    log0(f"step {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
    if not all(map(math.isfinite, losses.values())):
        raise SystemExit(f"Non-finite eval loss at iter {it} ({losses}): stopping; {checkpoints_note(config, kept)}. "
                         f"Lower the learning rate or use bfloat16/float32.")
    record = {'iter': it, 'train_loss': losses['train'], 'val_loss': losses['val'], 'lr': lr}
    if probe_windows > 0:  # every process: the windows are shared out (and the forward is a collective under FSDP)
        from condensation import condensation_probe
        spread = val_starts[np.linspace(0, len(val_starts) - 1, min(probe_windows, len(val_starts))).astype(int)]
        probe_x, _ = get_batch(data_dir, 'val', 0, block_size, device=run_device, starts=spread)
        with ctx:  # with wandb also the histograms of the paper's heatmap, from the same forwards
            probe = condensation_probe(raw_model, probe_x, bins=64 if wandb_log else 0)
        record.update({k: probe[k] for k in ('mean_cos', 'last_mean', 'spearman')})
    if tasks_interval > 0 and it % tasks_interval == 0:
        from tasks.engine import run_benchmarks
        from data.tokenizer import get_tokenizer
        # every process scores a share of the documents; all get the gathered results back
        scored = run_benchmarks(raw_model, get_tokenizer(meta['tokenizer']), tasks, tasks_limit,
                                fewshot=tasks_fewshot or None, data_dir=tasks_data or None, autocast=ctx, progress=False,
                                log=log0 if it == 0 else None) if tasks else {'tasks': {}, 'average': None}
        record.update({f'acc_{name}': r['acc'] for name, r in scored['tasks'].items()})
        if scored['average'] is not None:
            record['acc_average'] = scored['average']
        if perplexity_data:
            record.update(rolling_perplexity_record())
    log_record(record)
    if wandb_log and master_process and probe_windows > 0 and not eval_only:  # the paper's heatmap, as an image
        from eval import plot_condensation
        plot_condensation(probe, os.path.join(out_dir, 'probe.png'), label=f"iter {it}")
        wandb.log({'condensation': wandb.Image(os.path.join(out_dir, 'probe.png'))}, step=it)
    return record


def accumulate_gradients(it, X, Y):
    """Forward and backward over this process's grad_accum micro-batches, the gradients synchronised after the
    last only -> (the sums of loss_coeffs' terms over them, in its order; the next step's first batch)."""
    sums = torch.zeros(len(loss_coeffs), device=run_device)  # each term summed over this process's micro-batches
    for micro_step in range(grad_accum):
        if distributed and parallelism == 'ddp':  # all-reduce the gradients only after the last micro-batch
            model.require_backward_grad_sync = (micro_step == grad_accum - 1)
        elif parallelism == 'fsdp':  # reduce-scatter only after the last (costs one unsharded gradient meanwhile)
            model.set_requires_gradient_sync(micro_step == grad_accum - 1)
        terms = forward_loss(X, Y, train=True, disp_seed=disp_seed(it, micro_step))
        loss = total_loss(terms) / grad_accum  # the accumulated gradient is the gradient of the mean loss
        # draw the next batch while the accelerator works on this one
        last = micro_step == grad_accum - 1
        X, Y = train_batch(it + 1, 0) if last else train_batch(it, micro_step + 1)
        scaler.scale(loss).backward()
        sums += torch.stack([terms[name].detach().float() for name in loss_coeffs])
    return sums, X, Y


def clip_and_step(it, sums, kept):
    """Clip the gradient, take the optimizer step -> {name: mean of the term over every process's micro-batches}.
    A non-finite loss stops before the step, on every process."""
    if grad_clip != 0.0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if distributed:  # the logged loss is the mean over every process's micro-batches (and all stop together on a NaN)
        dist.all_reduce(sums)
    means = dict(zip(loss_coeffs, (sums / gradient_accumulation_steps).tolist()))  # one host sync per step
    if not all(map(math.isfinite, means.values())):
        raise SystemExit(f"Non-finite loss at iter {it} ({', '.join(f'{k} {v}' for k, v in means.items())}): "
                         f"stopping; {checkpoints_note(config, kept)}. Lower the learning rate or use bfloat16/float32.")
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return means


def forget(it):
    """Active forgetting after step it + 1 (every forget_every steps): re-draw the token embedding, zero its AdamW
    state (and the forget_pad row)."""
    disperse.forget_embeddings(raw_model, optimizer, torch.Generator().manual_seed(seed + it))
    if forget_pad is not None:
        disperse.zero_row_(disperse.token_embedding(raw_model).weight, forget_pad)
    log0(f"active forgetting: re-drew the token embedding after step {it + 1}"
         f"{f' (row {forget_pad} zero)' if forget_pad is not None else ''} and zeroed its AdamW state")


def log_step(it, dt, terms, lr, emb_lr, running_mfu, local_iter_num):
    """Rank 0: the step's line on stdout and its record -> (the record, the running MFU); local_iter_num: steps
    taken by this process (the MFU skips the first 5, compilation and warm-up)."""
    if local_iter_num >= 5 and device_type == 'cuda' and mfu_peak:  # MFU where the peak is known
        mfu = raw_model.estimate_mfu(batch_size * grad_accum, dt, mfu_peak)
        running_mfu = mfu if running_mfu == -1.0 else 0.9 * running_mfu + 0.1 * mfu
    total = total_loss(terms)
    extra = "".join(f", {k} {v:.4f}" for k, v in terms.items()) if len(terms) > 1 else ""
    extra += f", embedding lr {emb_lr:.2e}" if forget_every > 0 else ""
    mfu_txt = f", mfu {running_mfu * 100:.2f}%" if running_mfu >= 0 else ""
    print(f"iter {it}: loss {total:.4f}{extra}, lr {lr:.2e}, {tokens_per_iter / dt:,.0f} tok/s, "
          f"{dt * 1000:.0f} ms/iter{mfu_txt}", flush=True)
    record = {'iter': it, 'loss': total, **terms, 'lr': lr, 'tokens_per_s': tokens_per_iter / dt,
              'ms_per_iter': dt * 1000}
    if forget_every > 0:
        record['lr_embedding'] = emb_lr
    if running_mfu >= 0:
        record['mfu'] = running_mfu
    log_record(record)
    return record, running_mfu


# training loop
X, Y = train_batch(iter_num, 0)  # the first batch
t0 = time.time()
local_iter_num = 0
running_mfu = -1.0
while True:
    lr, emb_lr = set_lr(iter_num)
    if iter_num % eval_interval == 0 or iter_num == max_iters or eval_only:  # max_iters: the last state is saved
        record = evaluate_and_log(iter_num, lr, kept)
        rng = gather_rng_states(device_type == 'cuda')  # a collective: every process, whether it writes or not
        kept = save_checkpoints(config, iter_num, record['val_loss'], kept, raw_model, optimizer, model_args, rng,
                                init_origin, master_process, log0)
    if eval_only or iter_num >= max_iters:
        break

    # one optimizer step over grad_accum micro-batches
    sums, X, Y = accumulate_gradients(iter_num, X, Y)
    terms = clip_and_step(iter_num, sums, kept)
    if forget_every > 0 and (iter_num + 1) % forget_every == 0:
        forget(iter_num)

    t1 = time.time()
    dt, t0 = t1 - t0, t1
    iter_num += 1
    local_iter_num += 1
    if iter_num % log_interval == 0 and master_process:
        record, running_mfu = log_step(iter_num, dt, terms, lr, emb_lr, running_mfu, local_iter_num)

if wandb_log and master_process:  # the run's config and final numbers in the run summary
    wandb.run.summary.update({'config': config, 'final_iter': iter_num, 'best_val_loss': kept['best_val_loss'],
                              'best_iter': kept['best_iter'],
                              **{f'final_{k}': v for k, v in record.items() if k != 'iter' and not isinstance(v, list)}})
    wandb.finish()
if distributed:
    dist.destroy_process_group()
