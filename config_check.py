"""
config_check.py: the settings train.py cannot run with, found before it builds anything (a process group, a
model, a file in out_dir), each said in one sentence.

  python train.py config/train_shakespeare.py --n_head=5    # n_embd (128) must be divisible by n_head (5).

configurator.py has already checked each value's type; these are the checks whose failure would otherwise come
late (after loading weights or starting every process, or on one process of many), silently (a learning-rate
schedule stuck at 0, another run's checkpoint replaced) or as a traceback from deep inside torch.
"""

import os
from types import SimpleNamespace

import torch

import disperse
import hardware
import lora
from checkpoint import checkpoint_path
from model import MODELS


def config_error(config, disp_kwargs, distributed, local_rank, world_size):
    """The first setting of config (train.py's keys and values) that cannot run, as one sentence, or None.
    disp_kwargs: disperse.dispersion_loss's arguments from it; the rest: torchrun's process layout."""
    c = SimpleNamespace(**config)
    for key in ('batch_size', 'gradient_accumulation_steps', 'eval_interval', 'block_size', 'eval_iters',
                'log_interval', 'n_layer', 'n_head', 'n_embd'):
        if config[key] < 1:
            return f"{key} must be at least 1, not {config[key]}."
    if c.gradient_accumulation_steps % world_size != 0:
        fit = max(1, round(c.gradient_accumulation_steps / world_size)) * world_size
        return (f"gradient_accumulation_steps ({c.gradient_accumulation_steps}) must be a multiple of the number of "
                f"processes ({world_size}): use --gradient_accumulation_steps={fit}.")
    if c.model_type not in MODELS:
        return f"model_type must be one of {sorted(MODELS)}, not '{c.model_type}'."
    if c.parallelism not in ('ddp', 'fsdp'):
        return f"parallelism must be 'ddp' or 'fsdp', not '{c.parallelism}'."
    if c.dtype not in ('auto', 'float32', 'bfloat16', 'float16'):
        return f"dtype must be 'auto', 'float32', 'bfloat16' or 'float16', not '{c.dtype}'."
    if c.device != 'auto' and hardware.device_problem(c.device):
        return hardware.device_problem(c.device)
    run_on = hardware.default_device() if c.device == 'auto' else c.device
    if distributed and run_on.startswith('cuda') and local_rank >= torch.cuda.device_count():
        return (f"torchrun started {world_size} processes but this node has {torch.cuda.device_count()} CUDA "
                f"GPU(s): use --nproc_per_node={torch.cuda.device_count()} (one process per GPU).")
    if c.parallelism == 'fsdp' and run_on.startswith('mps'):
        return "parallelism='fsdp' needs CUDA GPUs or the CPU (gloo), not mps: use parallelism='ddp' or --device=cpu."
    if c.parallelism == 'fsdp' and hardware.resolve_dtype(c.dtype, run_on) == 'float16':
        return ("parallelism='fsdp' runs in bfloat16 or float32, not float16 (its GradScaler does not shard)"
                + (": this GPU has no native bfloat16, so use --dtype=float32." if c.dtype == 'auto'
                   else ": set --dtype=bfloat16."))
    if c.parallelism == 'fsdp' and not distributed:
        return "parallelism='fsdp' runs under torchrun, even on one process: torchrun --nproc_per_node=1 train.py ..."
    if (c.model_type == 'gpt' or not c.head_dim) and c.n_embd % c.n_head != 0:
        return f"n_embd ({c.n_embd}) must be divisible by n_head ({c.n_head})."
    if c.n_kv_head and c.n_head % c.n_kv_head != 0:
        return f"n_head ({c.n_head}) must be a multiple of n_kv_head ({c.n_kv_head})."
    for key in ('max_iters', 'noise_alpha', 'forget_every', 'probe_windows', 'dropout', 'dispersion_coeff',
                'distill_coeff', 'forget_lr', 'learning_rate', 'min_lr', 'weight_decay', 'grad_clip', 'warmup_iters',
                'warmup_frac', 'lr_decay_iters', 'tasks_interval'):
        if not config[key] >= 0:
            return f"{key} must be 0 or more, not {config[key]}."
    for key in ('beta1', 'beta2'):  # AdamW's moving averages: a weight of 1 or more never forgets
        if not 0 <= config[key] < 1:
            return f"{key} must lie in [0, 1), not {config[key]}."
    if c.dispersion is not None:
        if isinstance(c.dispersion_loc, str) and c.dispersion_loc not in disperse.LOCS:
            return (f"dispersion_loc must be one of {', '.join(disperse.LOCS)} or a list of block indices, "
                    f"not '{c.dispersion_loc}'.")
        if not 0 < c.dispersion_margin <= 1:
            return f"dispersion_margin is an angular distance / pi and must lie in (0, 1], not {c.dispersion_margin}."
        try:  # the loss's own checks (variant, tau, tau_l2, eps > 0, clamp in (0, 1), max_tokens), on a tiny input
            disperse.dispersion_loss(torch.randn(1, 4, 4), **{k: v for k, v in disp_kwargs.items() if k != 'loc'})
        except ValueError as e:
            return f"dispersion settings: {e}"
    if c.lora_rank and lora.settings_error(c.lora_rank, c.lora_alpha, c.lora_targets, c.lora_dropout):
        return lora.settings_error(c.lora_rank, c.lora_alpha, c.lora_targets, c.lora_dropout)
    if c.forget_every > c.max_iters:  # the authors' schedule index (it + 1) * (T // K) % T would stay 0: lr 0
        return (f"forget_every ({c.forget_every}) must be at most max_iters ({c.max_iters}) for active forgetting's "
                f"schedule.")
    if c.distill_coeff > 0 and not c.teacher:
        return ("distill_coeff > 0 needs a teacher: --teacher=out-X/ckpt.pt (a checkpoint of ours) or a transformers "
                "directory.")
    if c.teacher and not c.distill_coeff > 0:
        return f"teacher is set ({c.teacher}) but distill_coeff is 0: set --distill_coeff (e.g. 1.0), or --teacher=''."
    if not c.distill_temperature > 0:
        return f"distill_temperature must be > 0, not {c.distill_temperature}."
    held = [p for p in (checkpoint_path(c.out_dir, 'ddp'), checkpoint_path(c.out_dir, 'fsdp')) if os.path.exists(p)]
    if c.init_from != 'resume' and not c.eval_only and not c.overwrite and held:
        return (f"{c.out_dir} already holds a checkpoint ({os.path.basename(held[0])}): continue it with --init_from=resume, or start "
                f"anew in another --out_dir (or --overwrite=True to replace it).")
    return None
