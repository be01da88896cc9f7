"""
The dispersion-loss family of arXiv 2602.00217 (section 3), the paper's two baselines
(section 4: noisy embeddings, active forgetting) and the knowledge-distillation term (distill_loss).

Embedding condensation: the hidden states of one sequence crowd into a narrow cone as depth grows.
The dispersion loss pushes the tokens of each sequence apart; training minimises
    loss = CE + lambda * disperse(hidden)            (lambda = 0.1 recommended, training only)

Notation, for one layer's hidden states z [B, L, F] (one sequence = one row b):
    k positions are used: a random subset of max_tokens positions shared by the batch, fresh at each
    call (0 = all L). u_i = z_i / (|z_i| + eps) are the "normalised" vectors (eps = 1e-2, so |u_i| < 1),
    c_ij = <u_i, u_j>. Means "over i != j" run over the k(k-1) ordered pairs; every variant is computed
    per sequence and then averaged over the batch.

    angular_spread (the paper's dispersion loss):
        c~_ij = clamp(c_ij, -1+t, 1-t) in value, identity in gradient (straight-through, t = clamp)
        D_ij  = arccos(c~_ij) / pi  in [0, 1]
        L_b   = log mean_{i!=j} exp(-D_ij / tau + eps)    (= log mean exp(-D/tau) + eps: the authors'
                constant shift, which moves the value by eps and leaves the gradient unchanged)
    orthogonalization:   L_b = mean_{i!=j} max(0, margin - D_ij)^2         (same D; margin = 0.5)
    decorrelation:       x_i = (z_i - mean_F z_i) / std_F z_i,  std with F-1, as the authors' code (a
                         constant token, std < 1e-8, is divided by 1: it stays the zero vector);
                         K = x x^T / (F-1);  L_b = mean_{i!=j} K_ij^2
    l2_repel:            D_ij = |z_i - z_j|^2 on the raw z (diagonal kept);
                         L_b = log mean_{i,j} exp(-D_ij / tau_l2 + eps) + 0.1 * mean(z_b^2)
                         (the authors' eps inside the exponent: a constant eps in the value)
    perplexity_entropy:  p_j|i = softmax_{j!=i}(-|z_i - z_j|^2 / tau_l2);
                         L_b = -mean_i H_i,  H_i = -sum_{j!=i} p_j|i log2(p_j|i + eps)
    infonce_cosine:      the original "Diffuse and Disperse" form, D_ij = -c_ij, no diagonal masking:
                         L_b = log mean_{i,j} exp(c_ij / tau)
    tau_l2 defaults to 1, exact to the paper; |z_i - z_j|^2 grows like F * Var(z), so with raw hidden
    states exp(-D / 1) underflows and the l2 variants only see their norm penalty / uniform softmax:
    a user wants tau_l2 ~ F * Var(z) (e.g. 2F for unit-variance features).

Where (disperse): hidden is the model's list of n+1 hidden states (Hugging Face convention: hidden[0] =
embedding output, never used; hidden[i] = output of block i, the last after the final norm). loc 'all'
= mean over 1..n; 'last' = n; 'early_half' = 1..n//2; 'late_half' = n//2+1..n; or a list of indices.

Numerics: the pairwise part runs in float32 (float64 stays float64) with autocast off, and its Gram matrix
u u^T (forward and backward) runs in IEEE float32 even where the trainer allows TF32 or bf16 for float32
matmuls (train.py sets allow_tf32 on CUDA: a 10-bit mantissa, cosines off by ~1e-3, which arccos near 1 and
exp(-D / tau) would amplify): gram() runs its matmuls at torch's 'highest' float32 precision (full_fp32_matmuls,
through whichever of torch's two precision APIs the caller used) and restores the caller's setting. The
straight-through clamp evaluates arccos and its gradient at the clamped value, never at +-1, so the
diagonal (c_ii ~ 1) and collapsed tokens give finite gradients. Squared distances come from a
per-sequence centred Gram matrix (translation invariance; avoids cancellation for large norms), log-means
use logsumexp, so nothing takes log(0) or sqrt(0). Cost: O(B k^2 F) per layer, no Python loops over
the batch or pairs, no global state (DDP-safe; with generator=None subsampling draws from torch's global
RNG, which each rank seeds itself). No host sync per layer: disperse() draws every layer's token subset before the
first layer's loss (the same draws, in the same order, as one call per layer) and moves them to the device in one
copy (non-blocking from pinned memory on CUDA), so a step's losses queue on the accelerator without waiting.
Timing, angular_spread forward+backward, B=8, L=256, F=768, float32
on a 2-core CPU: ~30-40 ms per layer (forward alone ~8 ms); every variant is within that range.

Usage (train.py):
    logits, ce, hidden = model(x, y, return_hidden=True)
    loss = ce + dispersion_coeff * disperse(hidden, loc='all', variant='angular_spread', tau=1.0,
                                            clamp=0.1, max_tokens=256)
Tests: python -m pytest -q tests/test_disperse.py
"""
import math
from contextlib import contextmanager

import torch

LOCS = ('all', 'last', 'early_half', 'late_half')
L2_NORM_PENALTY = 0.1  # weight of mean(z^2) in l2_repel (section 3)
FORGET_STD = 0.02      # active forgetting re-draws the token embedding from N(0, 0.02^2)
CONSTANT_STD = 1e-8    # decorrelation: a token whose features have a smaller std is constant


# -----------------------------------------------------------------------------
# pairwise building blocks, z [B, k, F] in float32 or float64

def draw_subsets(L, max_tokens, n, device, generator=None):
    """n random sets of max_tokens positions out of L -> LongTensor [n, max_tokens] on `device`, or None when
    nothing is dropped (max_tokens 0 or >= L). Set j is randperm(L)[:max_tokens], the j-th draw from `generator`
    (on its own device; None = torch's global RNG on `device`). One copy to `device` for all n: from pinned memory
    and non-blocking on CUDA, so no host sync (a plain CPU -> CUDA copy of pageable memory waits for the GPU)."""
    if max_tokens == 0 or L <= max_tokens:
        return None
    where = generator.device if generator is not None else torch.device(device)
    idx = torch.stack([torch.randperm(L, generator=generator, device=where)[:max_tokens] for _ in range(n)])
    if idx.device.type == 'cpu' and torch.device(device).type == 'cuda':
        idx = idx.pin_memory()
    return idx.to(device, non_blocking=True)


def subsample_tokens(z, max_tokens=256, generator=None):
    """z [B, L, F] -> z[:, S] for one random set S of max_tokens positions shared by the batch."""
    idx = draw_subsets(z.shape[1], max_tokens, 1, z.device, generator)
    return z if idx is None else z[:, idx[0]]


@contextmanager
def full_fp32_matmuls():
    """float32 matmuls in IEEE float32 inside (no TF32 on CUDA, no bf16 passes on CPUs with AMX/AVX512-BF16),
    whatever precision the caller allowed; the caller's setting comes back after. torch has two APIs for it and
    refuses to read a mix of them, so this uses the caller's: the legacy torch.set_float32_matmul_precision
    (train.py's allow_tf32 = True is legacy too) or, once the caller has set the per-backend fp32_precision
    (torch.backends.cuda.matmul / mkldnn.matmul), that one."""
    try:
        old = torch.get_float32_matmul_precision()  # RuntimeError after a per-backend setting
    except RuntimeError:
        old = None
    if old is not None:
        torch.set_float32_matmul_precision('highest')
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(old)
        return
    backends = (torch.backends.cuda.matmul, torch.backends.mkldnn.matmul)
    saved = [b.fp32_precision for b in backends]
    for b in backends:
        b.fp32_precision = 'ieee'
    try:
        yield
    finally:
        for b, p in zip(backends, saved):
            b.fp32_precision = p


class _Gram(torch.autograd.Function):
    """G = u u^T [..., k, k] for u [..., k, F]; the backward dL/du = (dG + dG^T) u. Both under full_fp32_matmuls:
    autograd would run the backward's matmuls later, outside any context the forward entered."""

    @staticmethod
    def forward(ctx, u):
        ctx.save_for_backward(u)
        with full_fp32_matmuls():
            return u @ u.transpose(-1, -2)

    @staticmethod
    def backward(ctx, g):
        u, = ctx.saved_tensors
        with full_fp32_matmuls():
            return (g + g.transpose(-1, -2)) @ u


def gram(u):
    """u u^T over the last two dimensions, in IEEE float32 (or float64) forward and backward (full_fp32_matmuls)."""
    return _Gram.apply(u)


def _offdiag(k, device):
    """[k, k] bool, True off the diagonal (the ordered pairs i != j)."""
    return ~torch.eye(k, dtype=torch.bool, device=device)


# Two cosines, on purpose: this loss's u = z / (|z| + eps), eps = 1e-2 (arXiv 2602.00217 section 3; the authors'
# lm_dispersion/dispersion.py, `z / (torch.linalg.norm(z, dim=2, keepdim=True) + self.epsilon)`), so |u| < 1 and
# small vectors get small cosines; the condensation measurement (condensation.cosine_matrix) divides by max(|z|, 1e-3)
# instead (section 2; the authors' key_observations/compute_embedding_cossim.py, `x / np.maximum(norm, eps)`).
def _cosines(z, eps):
    """c_ij = <u_i, u_j> with u = z / (|z| + eps); |z| = 0 gives u = 0 (vector_norm's grad at 0 is 0)."""
    u = z / (torch.linalg.vector_norm(z, dim=-1, keepdim=True) + eps)
    return gram(u)


def _angular_distances(z, clamp, eps):
    """D_ij = arccos(c~_ij) / pi with the straight-through clamp c~ = clamp(c) + (c - sg(c)).
    The value is exactly the clamped cosine, so arccos' gradient -1/sqrt(1 - c~^2) is finite."""
    c = _cosines(z, eps)
    c = c.clamp(-1 + clamp, 1 - clamp).detach() + (c - c.detach())
    return torch.arccos(c) / math.pi


def _sq_distances(z):
    """D_ij = |z_i - z_j|^2 = |x_i|^2 + |x_j|^2 - 2 <x_i, x_j> with x = z - mean_i z (same D, smaller
    numbers: large shared offsets cancel before the subtraction). Exact zeros on the diagonal."""
    x = z - z.mean(dim=1, keepdim=True)
    sq = (x * x).sum(-1)
    d = (sq[:, :, None] + sq[:, None, :] - 2 * gram(x)).clamp_min(0)
    return d.masked_fill(~_offdiag(z.shape[1], z.device), 0.0)


def _log_mean_exp(a, pairs_only):
    """log mean exp(a_ij) per sequence, over i != j (pairs_only) or over all k^2 entries; a [B, k, k]."""
    k = a.shape[1]
    if pairs_only:
        a = a.masked_fill(~_offdiag(k, a.device), float('-inf'))
    return torch.logsumexp(a.flatten(1), dim=1) - math.log(k * (k - 1) if pairs_only else k * k)


def _mean_pairs(a):
    """mean over i != j per sequence; a [B, k, k] -> [B]."""
    k = a.shape[1]
    return a.masked_fill(~_offdiag(k, a.device), 0.0).sum((1, 2)) / (k * (k - 1))


# -----------------------------------------------------------------------------
# the variants: z [B, k, F] -> per-sequence loss [B]

def _angular_spread(z, tau, clamp, eps, **_):
    return _log_mean_exp(-_angular_distances(z, clamp, eps) / tau + eps, pairs_only=True)


def _orthogonalization(z, clamp, eps, margin, **_):
    return _mean_pairs((margin - _angular_distances(z, clamp, eps)).relu().square())


def _decorrelation(z, **_):
    F = z.shape[-1]
    x = z - z.mean(dim=-1, keepdim=True)
    std = torch.linalg.vector_norm(x, dim=-1, keepdim=True) / math.sqrt(F - 1)  # no sqrt(0) gradient
    x = x / torch.where(std < CONSTANT_STD, torch.ones_like(std), std)  # only a constant token is guarded
    return _mean_pairs((gram(x) / (F - 1)).square())


def _l2_repel(z, tau_l2, eps, **_):
    lme = _log_mean_exp(-_sq_distances(z) / tau_l2 + eps, pairs_only=False)
    return lme + L2_NORM_PENALTY * z.square().mean((1, 2))


def _perplexity_entropy(z, tau_l2, eps, **_):
    k = z.shape[1]
    logits = (-_sq_distances(z) / tau_l2).masked_fill(~_offdiag(k, z.device), float('-inf'))
    p = logits.softmax(dim=-1)  # p_ii = 0 exactly
    entropy = -(p * torch.log2(p + eps)).sum(-1)  # [B, k]
    return -entropy.mean(-1)


def _infonce_cosine(z, tau, eps, **_):
    return _log_mean_exp(_cosines(z, eps) / tau, pairs_only=False)


_LOSSES = {'angular_spread': _angular_spread, 'orthogonalization': _orthogonalization,
           'decorrelation': _decorrelation, 'l2_repel': _l2_repel,
           'perplexity_entropy': _perplexity_entropy, 'infonce_cosine': _infonce_cosine}
VARIANTS = tuple(_LOSSES)  # the names train.py's `dispersion` key accepts


def dispersion_loss(z, variant='angular_spread', tau=1.0, clamp=0.1, eps=1e-2, margin=0.5,
                    max_tokens=256, generator=None, tau_l2=1.0):
    """One layer's hidden states z [B, L, F] -> scalar dispersion loss (formulas: module docstring).
    tau: temperature of angular_spread / infonce_cosine; tau_l2: of l2_repel / perplexity_entropy;
    clamp: t of the straight-through clamp; margin: of orthogonalization; max_tokens: positions kept
    per call (0 = all); generator: a torch.Generator making the subset reproducible."""
    if variant not in _LOSSES:
        raise ValueError(f"Unknown dispersion variant {variant!r}; choose one of {', '.join(VARIANTS)}.")
    if z.dim() != 3 or z.shape[1] < 2 or z.shape[2] < 2:
        raise ValueError(f"dispersion_loss needs hidden states [B, L, F] with L >= 2 and F >= 2, "
                         f"got shape {tuple(z.shape)}.")
    if max_tokens != 0 and max_tokens < 2:
        raise ValueError(f"max_tokens must be 0 (no subsampling) or at least 2, got {max_tokens}.")
    if not 0 < clamp < 1:
        raise ValueError(f"clamp must lie in (0, 1) to keep arccos' gradient finite, got {clamp}.")
    if tau <= 0 or tau_l2 <= 0 or eps <= 0:
        raise ValueError(f"tau, tau_l2 and eps must be positive, got {tau}, {tau_l2}, {eps}.")
    z = subsample_tokens(z, max_tokens, generator)
    # the pairwise part in float32 (float64 kept): bf16 arccos/exp near 1 are far too coarse
    with torch.autocast(device_type=z.device.type, enabled=False):
        z = z.to(torch.promote_types(z.dtype, torch.float32))
        per_seq = _LOSSES[variant](z, tau=tau, clamp=clamp, eps=eps, margin=margin, tau_l2=tau_l2)
        return per_seq.mean()


def select_layers(n_layer, loc='all'):
    """Block indices (1..n_layer) of the hidden-state list that `loc` selects; 0 (embeddings) never."""
    if isinstance(loc, str):
        half = n_layer // 2
        ranges = {'all': (1, n_layer), 'last': (n_layer, n_layer), 'early_half': (1, half),
                  'late_half': (half + 1, n_layer)}
        if loc not in ranges:
            raise ValueError(f"Unknown dispersion location {loc!r}; use one of {', '.join(LOCS)} "
                             f"or a list of block indices 1..{n_layer}.")
        first, last = ranges[loc]
        idx = list(range(first, last + 1))
    else:
        idx = list(loc)
        if not all(isinstance(i, int) and not isinstance(i, bool) and 1 <= i <= n_layer for i in idx):
            raise ValueError(f"Dispersion layer indices must be integers 1..{n_layer} (0 is the "
                             f"embedding output, never used), got {loc!r}.")
    if not idx:
        raise ValueError(f"Dispersion location {loc!r} selects no block of a {n_layer}-block model.")
    return idx


def disperse(hidden, loc='all', **loss_kwargs):
    """Mean of dispersion_loss(hidden[i], **loss_kwargs) over the blocks i that `loc` selects.
    hidden: list of n+1 tensors [B, L, F] (hidden[0] = embedding output). Each layer draws its own
    token subset: all drawn first, in layer order, and copied to the device at once (draw_subsets), so the
    layers' losses do not wait for the host one by one."""
    if len(hidden) < 2:
        raise ValueError(f"disperse needs the n+1 hidden states of an n-block model, got {len(hidden)}.")
    layers = select_layers(len(hidden) - 1, loc)
    max_tokens = loss_kwargs.pop('max_tokens', 256)
    generator = loss_kwargs.pop('generator', None)
    z = hidden[layers[0]]
    if max_tokens != 0 and max_tokens < 2:  # the loss's own check, before any draw
        raise ValueError(f"max_tokens must be 0 (no subsampling) or at least 2, got {max_tokens}.")
    idx = draw_subsets(z.shape[1], max_tokens, len(layers), z.device, generator) if z.dim() == 3 else None
    losses = [dispersion_loss(hidden[i] if idx is None else hidden[i][:, idx[j]], max_tokens=0, **loss_kwargs)
              for j, i in enumerate(layers)]
    return torch.stack(losses).mean()


# -----------------------------------------------------------------------------
# knowledge distillation (Hinton et al. 2015, arXiv 1503.02531): the experiment "does a student take a
# larger teacher's geometry, or only its predictions?" (the paper's abstract: condensation "is not reliably
# mitigated by knowledge distillation")

def distill_loss(student_logits, teacher_logits, temperature, vocab_size, targets=None):
    """T^2 * KL(p_T || q_T), averaged over token positions as the cross-entropy is:
        p_T = softmax(teacher_logits[..., :V] / T),  q_T = softmax(student_logits[..., :V] / T)
        KL(p_T || q_T) = sum_v p_T(v) (log p_T(v) - log q_T(v))       (per position, over the V real tokens)
    Forward KL, teacher first, as Hinton et al.: it is the cross-entropy of the student against the teacher's
    soft targets minus the teacher's (constant) entropy, so its gradient is the soft-target one,
    d/ds_v = T (q_T(v) - p_T(v)), and it is 0 with a zero gradient when the student equals the teacher. That
    gradient shrinks as 1/T, hence the T^2 factor: the term's gradient stays on the scale of the CE's for any T.
    V = vocab_size, the data tokenizer's real vocabulary: padded rows (50257 -> 50304) are sliced off both
    sides, so neither model's unused logits enter the softmax. Positions whose target is -1 (the CE's
    ignore_index) are left out of the mean; targets=None keeps every position. Computed in float32 (float64
    stays float64) whatever the autocast dtype. student_logits, teacher_logits: [..., >= V]; targets: [...]."""
    assert student_logits.shape[:-1] == teacher_logits.shape[:-1], (student_logits.shape, teacher_logits.shape)
    if not temperature > 0:
        raise ValueError(f"The distillation temperature must be > 0, got {temperature}.")
    if min(student_logits.shape[-1], teacher_logits.shape[-1]) < vocab_size:
        raise ValueError(f"Distillation over {vocab_size} tokens needs logits at least that wide, got "
                         f"{student_logits.shape[-1]} (student) and {teacher_logits.shape[-1]} (teacher).")
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    with torch.autocast(student_logits.device.type, enabled=False):
        log_q = torch.log_softmax(student_logits[..., :vocab_size].to(dtype) / temperature, dim=-1)
        log_p = torch.log_softmax(teacher_logits[..., :vocab_size].to(dtype) / temperature, dim=-1)
        kl = (log_p.exp() * (log_p - log_q)).sum(-1)  # [...], one KL per position
        if targets is not None:
            assert targets.shape == kl.shape, (targets.shape, kl.shape)
            keep = targets != -1
            kl = (kl * keep).sum() / keep.sum().clamp(min=1)
        else:
            kl = kl.mean()
    return temperature ** 2 * kl


# -----------------------------------------------------------------------------
# baselines (the paper, section 4)

def token_embedding(model):
    """The token embedding module (model.transformer.wte), through DDP (.module) and compile (._orig_mod)."""
    for attr in ('module', '_orig_mod'):
        model = getattr(model, attr, model)
    wte = getattr(getattr(model, 'transformer', None), 'wte', None)
    if not isinstance(wte, torch.nn.Embedding):
        raise ValueError(f"{type(model).__name__} has no token embedding model.transformer.wte "
                         f"(an nn.Embedding) for the embedding baselines to act on.")
    return wte


def add_embedding_noise(model, alpha):
    """NEFTune-style noisy embeddings: in training mode only, the token-embedding output e [B, L, d] becomes
    e + U(-m, m) noise, m = alpha / sqrt(L * d). A forward hook, so no model code changes; a tied LM head
    (which reads the weight, not this module's output) is untouched. Register before torch.compile.
    Returns the hook handle (handle.remove() turns it off)."""
    if not alpha > 0:
        raise ValueError(f"Embedding noise needs alpha > 0 (leave the hook off for alpha = 0), got {alpha}.")

    def hook(module, inputs, out):
        if not module.training:
            return out
        m = alpha / math.sqrt(out.shape[-2] * out.shape[-1])
        return out + torch.empty_like(out).uniform_(-m, m)

    return token_embedding(model).register_forward_hook(hook)


@torch.no_grad()
def copy_full_(w, full):
    """w <- full, where full is the whole tensor, the same on every process (drawn from one seed). A parameter
    sharded by FSDP (a DTensor, w.shape the full shape) keeps its own rows only: the slice FSDP gives this
    process, cut locally (src_data_rank=None: no communication)."""
    from torch.distributed.tensor import DTensor
    assert full.shape == w.shape, f"copy_full_: {tuple(full.shape)} into {tuple(w.shape)}"
    if isinstance(w, DTensor):
        w.to_local().copy_(_my_shard(full, w))
    else:
        w.copy_(full)


def _my_shard(full, w):
    """This process's part of `full` (a whole tensor, the same on every process, of w's shape or broadcastable
    to it along dim 1) laid out as the FSDP-sharded DTensor w: cut locally (src_data_rank=None: no communication)."""
    from torch.distributed.tensor import distribute_tensor
    local = w.to_local()
    return distribute_tensor(full.to(local.device, w.dtype), w.device_mesh, w.placements, src_data_rank=None).to_local()


@torch.no_grad()
def forget_embeddings(model, optimizer, generator=None):
    """Active forgetting: re-draw the token embedding weight from N(0, 0.02^2) in place and reset its
    AdamW state to a fresh one (exp_avg = exp_avg_sq = 0 and step = 0, so the bias correction restarts as
    for a new parameter; keeping step would make the first updates up to (1-b1)/sqrt(1-b2) times larger).
    Under DDP every rank must draw the same weight (under FSDP the same full table, of which each keeps its
    shard: copy_full_): pass a generator seeded identically on all ranks,
    e.g. torch.Generator().manual_seed(seed + iter_num); the draw happens on the generator's device, so
    a CPU generator gives the same weight on any device. With tied embeddings (GPT-2:
    lm_head.weight is wte.weight) the LM head is the same tensor and is reset with it."""
    if hasattr(model, 'reshard'):  # FSDP: after a no-grad forward the root may still hold a gathered copy
        model.reshard()
    w = token_embedding(model).weight
    if generator is None:
        w.normal_(0.0, FORGET_STD)
    else:
        copy_full_(w, torch.randn(w.shape, generator=generator, device=generator.device) * FORGET_STD)
    state = optimizer.state.get(w, {})
    for key in ('exp_avg', 'exp_avg_sq', 'max_exp_avg_sq'):
        if key in state:
            state[key].zero_()
    if 'step' in state:
        if torch.is_tensor(state['step']):
            state['step'].zero_()
        else:
            state['step'] = 0


# active forgetting as the authors run it (their GPT-2 baseline, after Chen et al. 2023, arXiv 2307.01163, and the
# language-model-plasticity code it follows): the token embedding in optimizer groups of its own, with its own
# learning-rate schedule (forget_lr); its re-draw is forget_embeddings, its pad row (forget_pad_row) zero_row_
FORGET_WARMUP = 0.08  # the embedding schedule's linear warmup, a fraction of the run


def forget_lr(it, max_iters, every, peak, warmup=FORGET_WARMUP):
    """The token embedding's learning rate at (0-based) step `it` of a run of T = max_iters steps that re-draws
    the embedding every K = `every` steps, exactly as the authors' code computes it:
        e = ((it + 1) * (T // K)) % T,  then  e = min(e, T - 1)           (the embedding's schedule index)
        W = int(T * warmup)                                                (warmup steps; warmup = 0.08)
        lr = peak * e / max(1, W)                       if e < W
             peak * max(0, (T - e) / max(1, T - W))     otherwise          (linear warmup, linear decay to 0)
    it + 1 because their scheduler indexes the completed optimizer steps (Hugging Face's LambdaLR). The curve over
    T is replayed T // K times per run, fast-forwarded T // K times; it restarts at the resets only when K divides
    T. With T // K == 1 (their 1526 steps with K = 1000; our 300 with K = 200) the index is it + 1: one curve over
    the whole run, NOT restarted at the reset (the re-drawn embedding continues on the decaying part, here at
    (300 - 201) / 276 = 0.36 of the peak), and the last step's index T % T = 0 gives lr 0. That is the authors'
    formula, kept as is; K > T (T // K == 0) would hold the embedding at lr 0 all run: train.py refuses it."""
    T = max_iters
    if not 0 < every <= T:
        raise ValueError(f"forget_lr needs 0 < every <= max_iters, got every={every}, max_iters={T}.")
    e = min(((it + 1) * (T // every)) % T, T - 1)
    W = int(T * warmup)
    return peak * (e / max(1, W) if e < W else max(0.0, (T - e) / max(1, T - W)))


def embedding_group(optimizer, model, name='embedding'):
    """Move the token embedding weight (a tied LM head is the same tensor) out of its optimizer group into a group
    of its own, named `name`, with its old group's other settings (weight decay: the authors keep it on the
    embedding), so that train.py can give it forget_lr. Call before loading a checkpoint's optimizer state. An
    untied LM head stays with the body, as in the authors' code (they re-draw the input embedding only)."""
    w = token_embedding(model).weight
    home = [g for g in optimizer.param_groups if any(p is w for p in g['params'])]
    assert len(home) == 1, "the token embedding must be in exactly one optimizer group"
    home[0]['params'] = [p for p in home[0]['params'] if p is not w]
    optimizer.add_param_group({**{k: v for k, v in home[0].items() if k != 'params'}, 'params': [w], 'name': name})
    optimizer.param_groups[:] = [g for g in optimizer.param_groups if g['params']]


@torch.no_grad()
def zero_row_(w, row):
    """w[row] = 0 in place, for a plain tensor or an FSDP-sharded one (a DTensor: each process zeroes the row only
    if it holds it, through a mask sharded as w)."""
    from torch.distributed.tensor import DTensor
    assert 0 <= row < w.shape[0], f"row {row} is outside a table of {w.shape[0]} rows"
    if isinstance(w, DTensor):
        keep = torch.ones(w.shape[0], 1)
        keep[row] = 0
        w.to_local().mul_(_my_shard(keep, w))
    else:
        w[row].zero_()


def forget_pad_row(meta, vocab_size):
    """The token row that active forgetting zeroes after each re-draw (zero_row_), as the authors' code: the pad
    id of the data's tokenizer (meta: its meta.json), or (their script sets pad = eos when there is none, as for
    GPT-2) its end-of-text id: <|endoftext|> = 50256 for GPT-2, meta.json's eot_token. None when that row is
    outside the model's table of vocab_size rows."""
    pad = None
    if meta['tokenizer'] != 'gpt2':
        try:
            from transformers import AutoTokenizer
            pad = AutoTokenizer.from_pretrained(meta['tokenizer']).pad_token_id
        except Exception as e:
            raise SystemExit(f"Active forgetting zeroes the pad row of {meta['tokenizer']}'s tokenizer, which could "
                             f"not be loaded offline ({type(e).__name__}): save it with save_pretrained and "
                             f"prepare the data with that directory.")
    pad = meta.get('eot_token') if pad is None else pad
    return pad if pad is not None and 0 <= pad < vocab_size else None
