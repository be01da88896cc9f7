"""
The dispersion-loss family of arXiv 2602.00217 (section 3) and the paper's two baselines
(section 4: noisy embeddings, active forgetting).

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

Numerics: the pairwise part runs in float32 (float64 stays float64) with autocast off. The
straight-through clamp evaluates arccos and its gradient at the clamped value, never at +-1, so the
diagonal (c_ii ~ 1) and collapsed tokens give finite gradients. Squared distances come from a
per-sequence centred Gram matrix (translation invariance; avoids cancellation for large norms), log-means
use logsumexp, so nothing takes log(0) or sqrt(0). Cost: O(B k^2 F) per layer, no Python loops over
the batch or pairs, no global state (DDP-safe; with generator=None subsampling draws from torch's global
RNG, which each rank seeds itself). Timing, angular_spread forward+backward, B=8, L=256, F=768, float32
on a 2-core CPU: ~30-40 ms per layer (forward alone ~8 ms); every variant is within that range.

Usage (train.py):
    logits, ce, hidden = model(x, y, return_hidden=True)
    loss = ce + dispersion_coeff * disperse(hidden, loc='all', variant='angular_spread', tau=1.0,
                                            clamp=0.1, max_tokens=256)
Tests: python -m pytest -q tests/test_disperse.py
"""
import math

import torch

LOCS = ('all', 'last', 'early_half', 'late_half')
L2_NORM_PENALTY = 0.1  # weight of mean(z^2) in l2_repel (section 3)
FORGET_STD = 0.02      # active forgetting re-draws the token embedding from N(0, 0.02^2)
CONSTANT_STD = 1e-8    # decorrelation: a token whose features have a smaller std is constant


# -----------------------------------------------------------------------------
# pairwise building blocks, z [B, k, F] in float32 or float64

def subsample_tokens(z, max_tokens=256, generator=None):
    """z [B, L, F] -> z[:, S] for one random set S of max_tokens positions shared by the batch."""
    L = z.shape[1]
    if max_tokens == 0 or L <= max_tokens:
        return z
    device = generator.device if generator is not None else z.device
    idx = torch.randperm(L, generator=generator, device=device)[:max_tokens]
    return z[:, idx.to(z.device)]


def _offdiag(k, device):
    """[k, k] bool, True off the diagonal (the ordered pairs i != j)."""
    return ~torch.eye(k, dtype=torch.bool, device=device)


def _cosines(z, eps):
    """c_ij = <u_i, u_j> with u = z / (|z| + eps); |z| = 0 gives u = 0 (vector_norm's grad at 0 is 0)."""
    u = z / (torch.linalg.vector_norm(z, dim=-1, keepdim=True) + eps)
    return u @ u.transpose(1, 2)


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
    d = (sq[:, :, None] + sq[:, None, :] - 2 * (x @ x.transpose(1, 2))).clamp_min(0)
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
    return _mean_pairs((x @ x.transpose(1, 2) / (F - 1)).square())


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
    token subset."""
    if len(hidden) < 2:
        raise ValueError(f"disperse needs the n+1 hidden states of an n-block model, got {len(hidden)}.")
    losses = [dispersion_loss(hidden[i], **loss_kwargs) for i in select_layers(len(hidden) - 1, loc)]
    return torch.stack(losses).mean()


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
    from torch.distributed.tensor import DTensor, distribute_tensor
    assert full.shape == w.shape, f"copy_full_: {tuple(full.shape)} into {tuple(w.shape)}"
    if isinstance(w, DTensor):
        mine = distribute_tensor(full.to(w.device, w.dtype), w.device_mesh, w.placements, src_data_rank=None)
        w.to_local().copy_(mine.to_local())
    else:
        w.copy_(full)


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
