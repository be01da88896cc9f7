"""
lora.py: low-rank adapters (Hu et al. 2021, arXiv 2106.09685) on chosen linear layers of the blocks; the base frozen.

A target Linear y = x W^T + b becomes

    y = x W^T + b + (alpha / r) * dropout(x) A^T B^T        A: [r, in] (Kaiming-uniform), B: [out, r] (zeros)

so at initialisation B = 0 and the model equals the base exactly; only A and B train (2 r (in + out) numbers per
layer instead of in x out). merge() folds the adapters in, W' = W + (alpha / r) B A, for export.

Targets name the blocks' Linear layers by the end of their name, as peft's target_modules: 'c_attn' (q/k/v, fused
here), 'c_proj' (the attention output and the MLP output both), 'c_fc' (the MLP input; Llama / Qwen's gate and up,
fused), or 'attn.c_proj' / 'mlp.c_proj' for one of the two. The authors' mid-training option (--lora in their
GPT-2 and Qwen3 scripts): r = 16, alpha = 32, dropout 0.05 on c_attn, c_proj, c_fc. On GPT-2 that is exactly
peft's adapter set; on Llama / Qwen the fused q/k/v (and gate/up) share one A of rank r where peft would give
each projection its own.

The settings travel in the checkpoint's model_args ('lora'), so load_checkpoint, resume and FSDP rebuild the
same adapters; parameter names stay the base's plus '.lora_A' / '.lora_B', so DDP, FSDP (per-parameter sharding)
and activation checkpointing see ordinary parameters, of which the frozen ones get no gradient.

    OMP_NUM_THREADS=1 python train.py config/midtrain_smollm2_lora.py
"""

import math

import torch
import torch.nn as nn
from torch.nn import functional as F

AUTHORS_TARGETS = 'c_attn,c_proj,c_fc'


class LoRALinear(nn.Linear):
    """An nn.Linear with the same weight and bias Parameters as `base` plus the adapters lora_A, lora_B."""

    def __init__(self, base, rank, alpha, dropout=0.0):
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias  # the same Parameters: names and sharing unchanged
        kw = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, **kw))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, **kw))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # nn.Linear's (and peft's) init of A
        self.scale = alpha / rank
        self.lora_dropout = nn.Dropout(dropout)

    def forward(self, x):
        low = F.linear(F.linear(self.lora_dropout(x), self.lora_A.to(x.dtype)), self.lora_B.to(x.dtype))
        return F.linear(x, self.weight, self.bias) + self.scale * low

    def merged_weight(self):
        return self.weight + self.scale * (self.lora_B @ self.lora_A)


def parse_targets(targets):
    """'c_attn,c_proj' or a list -> a tuple of names."""
    names = targets.split(',') if isinstance(targets, str) else list(targets)
    return tuple(n.strip() for n in names if n.strip())


BLOCK_LINEARS = ('attn.c_attn', 'attn.c_proj', 'mlp.c_fc', 'mlp.c_proj')  # every block's, GPT and Qwen3 alike


def settings_error(rank, alpha, targets, dropout=0.0, linears=BLOCK_LINEARS):
    """The first LoRA setting that cannot be applied, as one sentence, or None (train.py checks before loading)."""
    if isinstance(rank, bool) or int(rank) != rank or rank < 1:
        return f"lora_rank must be a positive integer, not {rank}."
    if not alpha > 0:
        return f"lora_alpha must be positive, not {alpha}."
    if not 0 <= dropout < 1:
        return f"lora_dropout must lie in [0, 1), not {dropout}."
    if not parse_targets(targets):
        return "lora_targets names no layer; the authors' choice is 'c_attn,c_proj,c_fc'."
    for t in parse_targets(targets):
        if not any(n == t or n.endswith('.' + t) for n in linears):
            return (f"lora_targets names '{t}', which is no linear layer of the blocks; they are "
                    f"{', '.join(sorted(linears))}.")
    return None


def block_linears(model):
    """{name relative to its block ('attn.c_attn', ...): [(parent module, attribute, Linear)] over all blocks}."""
    found = {}
    for block in model.transformer.h:
        for name, m in block.named_modules():
            if isinstance(m, nn.Linear):
                parent_name, _, attr = name.rpartition('.')
                found.setdefault(name, []).append((block.get_submodule(parent_name) if parent_name else block, attr, m))
    return found


def apply_lora(model, rank, alpha, targets=AUTHORS_TARGETS, dropout=0.0):
    """Put adapters on the blocks' Linear layers whose name ends with a target; freeze everything else. Records
    the settings in model.lora (model_args_of stores them). ValueError in one sentence for a bad setting or a
    target that names no linear layer of the blocks."""
    targets = parse_targets(targets)
    if getattr(model, 'lora', None):
        raise ValueError("The model already has LoRA adapters.")
    linears = block_linears(model)
    error = settings_error(rank, alpha, targets, dropout, linears)
    if error:
        raise ValueError(error)
    chosen = {n for t in targets for n in linears if n == t or n.endswith('.' + t)}
    model.requires_grad_(False)
    for name in sorted(chosen):
        for parent, attr, m in linears[name]:
            setattr(parent, attr, LoRALinear(m, int(rank), float(alpha), float(dropout)))
    model.lora = dict(rank=int(rank), alpha=float(alpha), targets=','.join(targets), dropout=float(dropout))
    return model


def merge(model):
    """Fold every adapter into its weight (W + alpha / r * B A) in place: plain Linear layers again, model.lora
    None. The function is unchanged (merged logits equal unmerged ones)."""
    for block in model.transformer.h:
        for name, m in list(block.named_modules()):
            if isinstance(m, LoRALinear):
                parent_name, _, attr = name.rpartition('.')
                plain = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None,
                                  device=m.weight.device, dtype=m.weight.dtype)
                with torch.no_grad():
                    plain.weight.copy_(m.merged_weight())
                    if m.bias is not None:
                        plain.bias.copy_(m.bias)
                setattr(block.get_submodule(parent_name) if parent_name else block, attr, plain)
    model.lora = None
    return model


def trainable_params(model):
    """(trainable, total) parameter counts (tied weights once)."""
    params = {id(p): p for p in model.parameters()}.values()
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
