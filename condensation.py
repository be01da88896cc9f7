"""
condensation.py: embedding condensation, the per-layer token cosine similarity of arXiv 2602.00217 section 2,
measured on any model that exposes hidden_states(x) (ours: model.GPT; released ones: hf_lm.py), and the
trainer's live probe of it. eval.py is its command line:

    python eval.py --ckpt out/ckpt.pt --num_sequences 100 --seq_len 512

For every hidden state l = 0..n (HF convention: 0 = embedding output, n = after the final norm) and every
sequence, the S x S cosine matrix
    C_ij = <z_i, z_j> / (max(|z_i|, 1e-3) max(|z_j|, 1e-3))       (IEEE float32 even under TF32, clipped to [-1, 1])
is summed over the N sequences and divided by N; every statistic reads this averaged matrix:
    mu_l = mean of all S*S entries (diagonal included),  hist_l = 128-bin density over [-1, 1],
    rho = Spearman(mu_0..mu_n, 0..n),  tau = Kendall tau-b(...),  last_n = mean(mu_{n-k+1..n}).
Memory holds one batch's hidden states and the [n+1, S, S] running sum, whatever N is.
"""

import math
from contextlib import closing

import numpy as np
import torch

import hardware
from disperse import gram  # the Gram matrix in IEEE float32 (TF32 off), shared with the loss

NORM_FLOOR = 1e-3  # the paper's clamp of |z| (keeps all-zero vectors at cosine 0 instead of NaN)


# Not the dispersion loss's cosine: that one divides by |z| + 1e-2 (disperse._cosines, the authors' training
# code); this is the measurement's max(|z|, 1e-3) (arXiv 2602.00217 section 2; the authors'
# key_observations/compute_embedding_cossim.py, `x / np.maximum(norm, eps)` with eps = 1e-3).
def cosine_matrix(h):
    """[..., S, C] hidden states -> [..., S, S] float32 cosine matrix (norms clamped at 1e-3, clipped to [-1, 1])."""
    # float32 even inside the trainer's autocast (which would run the matmul in bf16: ~3 significant digits), and
    # IEEE float32 where the trainer allows TF32 (disperse.gram sets the 'highest' matmul precision around it)
    with torch.autocast(device_type=h.device.type, enabled=False):
        h = h.float()
        # max(|z_i|, eps) max(|z_j|, eps) factorises, so each row is divided by its own clamped norm once
        u = h / h.norm(dim=-1, keepdim=True).clamp_min(NORM_FLOOR)
        return gram(u).clamp_(-1.0, 1.0)


def average_ranks(x):
    """Ranks 1..n of the values of x, ties sharing the mean of the ranks they span (as for Spearman)."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and x[order[j + 1]] == x[order[i]]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1  # positions i..j hold ranks i+1..j+1
        i = j + 1
    return ranks


def spearman(x, y):
    """Spearman's rho: Pearson correlation of the average ranks; NaN when either side is constant."""
    rx, ry = average_ranks(x), average_ranks(y)
    assert rx.shape == ry.shape, "spearman needs two sequences of the same length"
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt((rx @ rx) * (ry @ ry))
    return float(rx @ ry / denom) if denom > 0 else float("nan")


def kendall(x, y):
    """Kendall's tau-b: (concordant - discordant) / sqrt((n0 - ties_x)(n0 - ties_y)) over all pairs i < j."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    assert x.shape == y.shape and x.ndim == 1, "kendall needs two 1-D sequences of the same length"
    i, j = np.triu_indices(len(x), k=1)
    sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    n0 = len(i)
    denom = math.sqrt((n0 - np.sum(sx == 0)) * (n0 - np.sum(sy == 0)))
    return float(np.sum(sx * sy) / denom) if denom > 0 else float("nan")


def last_half(n_entries):
    """The authors' "last half" (their cossim_family_tables.py): n = max(1, L // 2) of the L = n_layers + 1
    entries (one more with the logits layer), i.e. max(1, (n_layers + 1) // 2); it can include layer 0."""
    return max(1, n_entries // 2)


def last_n_sizes(n_layers):
    """The paper's last-n windows: n = 1..5 (never reaching back to the embedding output) and the last half."""
    return sorted({n for n in (1, 2, 3, 4, 5) if n <= n_layers} | {last_half(n_layers + 1)})


def _batches(sequences, batch_size):
    """A LongTensor [N, S] in slices of batch_size rows, or any iterable of [B, S] batches as it is."""
    if torch.is_tensor(sequences):
        assert sequences.ndim == 2, f"sequences must be [N, S], got {tuple(sequences.shape)}"
        return list(sequences.split(batch_size))
    return sequences


def hidden_batches(model, batches, device, progress=False, desc=""):
    """Yield (x, model.hidden_states(x)) for each batch x moved to device: eval mode and no gradients while it
    runs (the model's mode restored when it ends or is closed: callers wrap it in contextlib.closing, so an error
    in their loop restores it at once), a tqdm bar over the sequences if progress."""
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=sum(len(b) for b in batches) if isinstance(batches, list) else None, unit="seq", desc=desc)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for x in batches:
                x = x.to(device)
                yield x, model.hidden_states(x)  # no LM head: the [B, S, vocab] logits would double the memory
                if bar is not None:
                    bar.update(x.shape[0])
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()


def cosine_sums(model, sequences, batch_size=8, device=None, progress=False, on_layer=None):
    """Run the model over the sequences and sum the per-layer S x S cosine matrices -> ([L+1, S, S] sum, N).
    on_layer(l, h, c), if given, sees each batch's layer-l hidden states h [B, S, C] and cosines c [B, S, S].

    Memory holds one batch's hidden states and the [L+1, S, S] running sum, whatever N is.
    """
    device = device or next(model.parameters()).device
    batches = _batches(sequences, batch_size)
    if isinstance(batches, list) and batches and batches[0].shape[1] < 2:
        raise ValueError(f"Condensation needs sequences of at least 2 tokens (the cosine matrix of one token "
                         f"is the constant 1), got {batches[0].shape[1]}; raise --seq_len.")
    sums, count = None, 0
    with closing(hidden_batches(model, batches, device, progress, "condensation")) as run:
        for x, hidden in run:
            if x.shape[1] < 2:
                raise ValueError(f"Condensation needs sequences of at least 2 tokens (the cosine matrix of "
                                 f"one token is the constant 1), got {x.shape[1]}; raise --seq_len.")
            if sums is None:
                sums = torch.zeros(len(hidden), x.shape[1], x.shape[1], dtype=torch.float32, device=device)
            assert len(hidden) == sums.shape[0] and x.shape[1] == sums.shape[1], \
                "every batch must give the same number of hidden states and sequence length"
            for l, h in enumerate(hidden):
                assert h.shape[:2] == x.shape, f"hidden[{l}] is {tuple(h.shape)}, expected [B, S, C]"
                c = cosine_matrix(h)
                sums[l] += c.sum(0).to(sums.device)  # under a device_map, layers live on several GPUs
                if on_layer is not None:
                    on_layer(l, h, c)
            count += x.shape[0]
    if count == 0:
        raise ValueError("condensation needs at least one sequence, and none were given.")
    return sums, count


def layer_stats(avg, bins=128):
    """Statistics of the averaged [L+1, S, S] cosine matrices (see the top of this section)."""
    assert avg.ndim == 3 and avg.shape[1] == avg.shape[2], f"expected [L+1, S, S], got {tuple(avg.shape)}"
    # float64 one layer at a time on the CPU: no fp64 copy of the whole [L+1, S, S] stack on the device (37 x 4096^2
    # x 8 bytes = 5 GB at the 8B recipe's shape), and none at all on MPS, which has no float64
    mean_cos = [float(a.cpu().double().mean()) for a in avg]
    n_layers = len(mean_cos) - 1
    idx = list(range(len(mean_cos)))
    finite = all(map(math.isfinite, mean_cos))  # a NaN layer would take a rank of its own: no correlation then
    stats = {
        "mean_cos": mean_cos,
        "spearman": spearman(mean_cos, idx) if finite else float("nan"),
        "kendall": kendall(mean_cos, idx) if finite else float("nan"),
        "last_n_mean": {str(n): float(np.mean(mean_cos[-n:])) for n in last_n_sizes(n_layers)},
        "last_half_n": last_half(len(mean_cos)),  # the authors' rule: max(1, (n_layers + 1) // 2)
        "n_layers": n_layers,
    }
    if bins:
        flat = avg.reshape(len(mean_cos), -1).cpu().numpy()
        stats["hist_edges"] = np.linspace(-1.0, 1.0, bins + 1).tolist()
        stats["hist"] = [np.histogram(f, bins=bins, range=(-1.0, 1.0), density=True)[0].tolist() for f in flat]
    return stats


def reference_pass(model, sequences, batch_size=8, device=None, progress=False):
    """The first pass of anisotropy.py's measures over the same sequences: -> an anisotropy.Reference."""
    from anisotropy import Reference
    device = device or next(model.parameters()).device
    batches = _batches(sequences, batch_size)
    if not isinstance(batches, list):
        raise ValueError("The standardized cosine reads the sequences twice (statistics, then cosines); give them "
                         "as a LongTensor [N, S], not a one-shot iterable.")
    ref = Reference()
    with closing(hidden_batches(model, batches, device, progress, "reference pass")) as run:
        for _, hidden in run:
            for l, h in enumerate(hidden):
                ref.add(l, h)
    return ref


def condensation(model, sequences, batch_size=8, device=None, bins=128, progress=False, geometry=False,
                 anisotropy=False):
    """Measure embedding condensation of `model` on `sequences` (LongTensor [N, S] or an iterable of batches).

    Returns a dict: mean_cos (n+1 floats), spearman, kendall, last_n_mean {str(n): float}, last_half_n,
    n_layers, hist (n+1 lists of `bins` densities over [-1, 1]), hist_edges, seq_len, num_sequences, with
    geometry=True the per-layer means of geometry.py's metrics under "geometry", and with anisotropy=True
    anisotropy.py's standardized cosine, rogue dimensions, cross-context anisotropy and intrinsic dimension
    under "anisotropy" (one more pass over the sequences first, for the statistics).
    """
    hooks = []
    geo = second = None
    if anisotropy:
        import anisotropy as an
        second = an.Second(reference_pass(model, sequences, batch_size, device, progress))
        hooks.append(second.add)
    if geometry:
        from geometry import Geometry
        geo = Geometry()
        hooks.append(geo.add)
    on_layer = (lambda l, h, c: [f(l, h, c) for f in hooks]) if hooks else None
    sums, count = cosine_sums(model, sequences, batch_size, device, progress, on_layer)
    stats = layer_stats(sums / count, bins)
    stats.update(seq_len=sums.shape[1], num_sequences=count)
    if geo:
        stats["geometry"] = geo.result(count)
    if second:
        stats["anisotropy"] = an.result(second.ref, second, count, sums.shape[1])
    return stats


PROBE_TOKENS = 4096  # tokens per forward of the trainer's probe: max(1, 4096 // T) windows at a time


def _all_reduce(t):
    """Sum a CPU tensor over the processes (in place; NCCL reduces only GPU tensors, so it travels there and back)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return t
    if torch.distributed.get_backend() == "nccl":
        gpu = t.to(f"cuda:{torch.cuda.current_device()}")
        torch.distributed.all_reduce(gpu)
        return t.copy_(gpu.cpu())
    torch.distributed.all_reduce(t)
    return t


@torch.no_grad()
def condensation_probe(model, x, bins=0):
    """The trainer's probe on fixed windows x [N, T]: the numbers condensation(model, x) gives (mean_cos,
    last_mean, spearman; with bins also the heatmap's hist and hist_edges), computed by every process of a run.

    Every process must call it: a sharded (FSDP) model's forward is a collective. Process r measures windows
    r::world, max(1, PROBE_TOKENS // T) per forward, and all run the same number of forwards (one that has run
    out of windows repeats window 0 and drops the result), so uneven shares never leave a process waiting.
    Memory on the device: one forward's hidden states (n+1 x PROBE_TOKENS x C) and one layer's cosine matrices;
    what is kept is one float per layer (the sum of its entries: mean_cos = sum / (N T^2)), and with bins the
    [n+1, T, T] sums on the CPU (4 (n+1) T^2 bytes of host memory: 2.5 GB at the 8B recipe's T = 4096), never a
    stack of [n+1, T, T] matrices on the device (fsdp.memory_gb counts this probe)."""
    assert x.ndim == 2 and x.shape[1] >= 2, f"the probe needs windows [N, T >= 2], got {tuple(x.shape)}"
    N, T = x.shape
    per = max(1, PROBE_TOKENS // T)
    mine, turns = hardware.rank_share(x, per)
    device = next(model.parameters()).device
    entry_sums, full = None, None  # [n+1] float64 on the CPU; [n+1, T, T] float32 on the CPU (bins only)
    was_training = model.training
    model.eval()
    try:
        for turn in range(turns):
            batch = mine[turn * per:(turn + 1) * per]
            real = len(batch) > 0
            hidden = model.hidden_states((batch if real else x[:1]).to(device))
            if entry_sums is None:
                entry_sums = torch.zeros(len(hidden), dtype=torch.float64)
                full = torch.zeros(len(hidden), T, T) if bins else None
            if not real:  # a padding forward: it only keeps this process in step with the others
                continue
            sums = []
            for l, h in enumerate(hidden):
                c = cosine_matrix(h)  # [B, T, T] float32
                sums.append(c.sum())
                if bins:
                    full[l] += c.sum(0).cpu()
            entry_sums += torch.stack(sums).cpu().double()  # one transfer per forward; float64 on the CPU only
    finally:
        model.train(was_training)
    n = len(entry_sums)  # every process ran at least one forward (N >= 1)
    _all_reduce(entry_sums)
    if bins:
        for l in range(n):  # one [T, T] layer at a time through the accelerator
            _all_reduce(full[l])
        stats = layer_stats(full / N, bins)
    else:
        mean_cos = (entry_sums / (N * T * T)).tolist()
        stats = {"mean_cos": mean_cos, "spearman": spearman(mean_cos, range(n)) if all(map(math.isfinite, mean_cos))
                 else float("nan")}
    return dict(stats, last_mean=stats["mean_cos"][-1])
