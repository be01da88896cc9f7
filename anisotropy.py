"""
anisotropy.py: condensation that rogue dimensions cannot fake. Beside the paper's raw cosine (condensation.py,
arXiv 2602.00217 section 2), per hidden state l = 0..n (eval.py --anisotropy):

  standardized cosine (Timkey & van Schijndel 2021, arXiv 2109.04404): every dimension d of z is standardized
      with its mean m_d and standard deviation s_d over a reference sample of tokens of the same layer and
      source, z'_d = (z_d - m_d) / s_d, and the condensation measure is taken on z' (same cosine, same S x S
      mean, its own Spearman rho / Kendall tau over depth). The reference sample is a FIRST PASS over the same
      N sequences (all N*S tokens; one extra forward per sequence). A dimension with s_d = 0 over the sample is
      constant there: it carries no information, so z'_d = 0 (counted in zero_variance_dims).
  rogue dimensions: E_d = mean over the reference tokens of z_d^2; share_k = sum of the k largest E_d / sum_d E_d
      (k = 1, 2, 5), and the raw cosine with those k dimensions removed (zeroed): the cosine of what is left.
  cross-context anisotropy (Ethayarajh 2019, arXiv 1909.00512): the mean cosine between tokens of DIFFERENT
      sequences, exact over all pairs, streamed from u_i = z_i / max(|z_i|, 1e-3):
          cross = (|sum_all u|^2 - sum_a |sum_{i in a} u_i|^2) / ((N S)^2 - N S^2)
      within (off-diagonal) = (sum_a |sum_{i in a} u_i|^2 - sum_i |u_i|^2) / (N S (S - 1)),
      excess = within - cross: how much more alike one sequence's tokens are than the model's tokens at large.
  intrinsic dimension: TwoNN (Facco et al. 2017) through scikit-dimension (skdim.id.TwoNN) on up to
      TWONN_POINTS tokens per layer (TWONN_PER_SEQ positions per sequence, position 0 skipped, duplicates
      dropped: TwoNN divides by the nearest-neighbour distance). Fewer than TWONN_MIN points: null, with a note.

Not in the trainer's live probe (condensation.condensation_probe): the standardized cosine needs its statistics
before its cosines, so it would double the probe's forwards, and scikit-dimension's first TwoNN compiles numba
code (about 20 s); measure a checkpoint with eval.py --anisotropy instead.

Memory is flat in N: per layer two float64 C-vectors of moments, a C-vector of unit sums, a bounded sample
for TwoNN, and scalar sums for the cosines.

    python eval.py --init_from SmolLM2-135M-Instruct.Q4_1.gguf --source data/lee_news/lee_news.jsonl --anisotropy
"""

import math

import numpy as np
import torch

from condensation import NORM_FLOOR, cosine_matrix, kendall, spearman
from disperse import gram

ROGUE_K = (1, 2, 5)
MIN_REFERENCE_TOKENS = 100  # a standard deviation from n tokens is off by about 1/sqrt(2n): 7% at n = 100
TWONN_PER_SEQ, TWONN_POINTS, TWONN_MIN = 10, 1000, 20


def _unit(h):
    """The rows of h divided by max(|z|, 1e-3) in float32, as condensation.cosine_matrix divides them."""
    h = h.float()
    return h / h.norm(dim=-1, keepdim=True).clamp_min(NORM_FLOOR)


class Reference:
    """The first pass: per layer the moments of every dimension, the unit-vector sums and the TwoNN sample.
    add(l, h): layer l's hidden states h [B, S, C] of one batch."""

    def __init__(self):
        self.layers = {}

    def add(self, l, h):
        assert h.ndim == 3, f"expected [B, S, C] hidden states, got {tuple(h.shape)}"
        B, S, C = h.shape
        r = self.layers.setdefault(l, {"n": 0, "seqs": 0, "S": S, "sum": torch.zeros(C, dtype=torch.float64),
                                       "sumsq": torch.zeros(C, dtype=torch.float64),
                                       "usum": torch.zeros(C, dtype=torch.float64), "within": 0.0, "diag": 0.0,
                                       "points": []})
        hd = h.detach().double().cpu()
        r["n"] += B * S
        r["seqs"] += B
        r["sum"] += hd.sum((0, 1))
        r["sumsq"] += (hd * hd).sum((0, 1))
        u = _unit(h.detach()).double().cpu()
        per_seq = u.sum(1)  # [B, C]
        r["usum"] += per_seq.sum(0)
        r["within"] += float((per_seq * per_seq).sum())
        r["diag"] += float((u * u).sum())
        have = sum(len(p) for p in r["points"])
        if have < TWONN_POINTS and S > 1:
            pos = np.unique(np.linspace(1, S - 1, min(TWONN_PER_SEQ, S - 1)).astype(int))
            r["points"].append(hd[:, pos].reshape(-1, C)[:TWONN_POINTS - have].float().numpy())

    def standardizer(self, l):
        """(mean [C], 1/std [C] with 0 where std = 0) of layer l, float32, and the number of zero-std dimensions."""
        r = self.layers[l]
        if r["n"] < MIN_REFERENCE_TOKENS:
            raise ValueError(f"The standardized cosine needs a reference sample of at least {MIN_REFERENCE_TOKENS} "
                             f"tokens to estimate each dimension's spread, got {r['n']}; raise --num_sequences "
                             f"or --seq_len.")
        mean = r["sum"] / r["n"]
        var = (r["sumsq"] / r["n"] - mean * mean).clamp_min(0)
        std = var.sqrt()
        # a dimension whose spread is below float32 resolution of its own mean is constant over the sample
        flat = std <= 1e-6 * mean.abs().clamp_min(1e-6)
        inv = torch.where(flat, torch.zeros_like(std), 1.0 / std.clamp_min(1e-300))
        return mean.float(), inv.float(), int(flat.sum())

    def rogue(self, l):
        """(indices of the top max(ROGUE_K) dimensions by mean squared value, {k: share of the squared norm})."""
        r = self.layers[l]
        e = r["sumsq"] / r["n"]
        order = torch.argsort(e, descending=True)
        total = float(e.sum())
        shares = {str(k): (float(e[order[:k]].sum()) / total if total > 0 else 0.0) for k in ROGUE_K}
        return order[:max(ROGUE_K)], shares

    def cross(self, l):
        """(cross-context mean cosine, within-sequence off-diagonal mean cosine) of layer l (see the docstring)."""
        r = self.layers[l]
        N, S = r["seqs"], r["S"]
        if N < 2:
            raise ValueError("Cross-context anisotropy needs at least 2 sequences (tokens of different "
                             "sequences); raise --num_sequences.")
        total = float(r["usum"] @ r["usum"])
        cross = (total - r["within"]) / ((N * S) ** 2 - N * S * S)
        within = (r["within"] - r["diag"]) / (N * S * (S - 1))
        return cross, within


def twonn(points):
    """TwoNN intrinsic dimension of the [m, C] points through scikit-dimension, or (None, a sentence)."""
    x = np.unique(np.asarray(points, dtype=np.float64), axis=0)
    if len(x) < TWONN_MIN:
        return None, f"TwoNN needs at least {TWONN_MIN} distinct points, got {len(x)}"
    import skdim
    d = float(skdim.id.TwoNN().fit(x).dimension_)
    return (d, None) if math.isfinite(d) else (None, "TwoNN gave no finite estimate (degenerate distances)")


class Second:
    """The second pass (the condensation pass itself): per layer the sums of the standardized cosine and of the
    raw cosine with the top-k rogue dimensions removed. add(l, h, c) is condensation.cosine_sums' on_layer."""

    def __init__(self, ref):
        self.ref = ref
        self.std_sum, self.without = {}, {}
        self.cache = {}

    def _layer(self, l, device):
        if l not in self.cache:
            mean, inv, flat = self.ref.standardizer(l)
            top, _ = self.ref.rogue(l)
            self.cache[l] = (mean.to(device), inv.to(device), top.to(device), flat)
        return self.cache[l]

    def add(self, l, h, c):
        mean, inv, top, _ = self._layer(l, h.device)
        with torch.autocast(device_type=h.device.type, enabled=False):
            z = (h.float() - mean) * inv
            self.std_sum[l] = self.std_sum.get(l, 0.0) + float(cosine_matrix(z).double().sum())
            # removing dimensions R from z: <z_i, z_j> - <r_i, r_j> and |z|^2 - |r|^2, from one Gram matrix
            g = gram(h.float())
            sq = torch.diagonal(g, dim1=-2, dim2=-1)
            w = self.without.setdefault(l, dict.fromkeys(map(str, ROGUE_K), 0.0))
            for k in ROGUE_K:
                r = h.float()[..., top[:k]]
                gk = g - r @ r.mT
                nk = (sq - (r * r).sum(-1)).clamp_min(0).sqrt().clamp_min(NORM_FLOOR)
                ck = (gk / (nk[..., :, None] * nk[..., None, :])).clamp_(-1.0, 1.0)
                w[str(k)] += float(ck.double().sum())


def _trend(values):
    """(Spearman rho, Kendall tau) of the values against depth 0..n; NaN when a value is not finite."""
    idx = list(range(len(values)))
    if not all(map(math.isfinite, values)):
        return float("nan"), float("nan")
    return spearman(values, idx), kendall(values, idx)


def result(ref, second, count, seq_len):
    """The JSON block of every measure, per layer 0..n."""
    layers = sorted(ref.layers)
    entries = count * seq_len * seq_len
    std_cos = [second.std_sum[l] / entries for l in layers]
    rho, tau = _trend(std_cos)
    rogue = [ref.rogue(l) for l in layers]
    cross = [ref.cross(l) for l in layers]
    ids = [twonn(np.concatenate(ref.layers[l]["points"])) for l in layers]
    notes = sorted({note for _, note in ids if note})
    return {
        "reference": "first pass over the same sequences (all their tokens)",
        "reference_tokens": ref.layers[layers[0]]["n"],
        "std_cos": std_cos, "std_spearman": rho, "std_kendall": tau,
        "zero_variance_dims": [second._layer(l, "cpu")[3] for l in layers],
        "rogue_dims": [top.tolist() for top, _ in rogue],
        "rogue_share": {str(k): [s[str(k)] for _, s in rogue] for k in ROGUE_K},
        "cos_without_top": {str(k): [second.without[l][str(k)] / entries for l in layers] for k in ROGUE_K},
        "cross_cos": [c for c, _ in cross],
        "within_offdiag_cos": [w for _, w in cross],
        "within_minus_cross": [w - c for c, w in cross],
        "twonn": [d for d, _ in ids],
        "twonn_points": [len(np.unique(np.concatenate(ref.layers[l]["points"]), axis=0)) for l in layers],
        "twonn_note": "; ".join(notes) or None,
    }
