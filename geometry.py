"""
geometry.py: more per-layer geometry of the hidden states, beside the mean cosine (eval.py --geometry), as in
the authors' analysis code (arXiv 2602.00217; their key_observations/utils/embedding_layer_metrics.py and
archived/prelim: motivation/evaluate_transformer_metrics.py, dse/dse.py).

For one sequence and one layer, X = the [S, C] hidden states (rows = tokens), sigma_1 >= sigma_2 >= .. its
singular values (float64), p_i = sigma_i / sum_j sigma_j over the positive ones:
    matrix_rank     #{sigma_i > sigma_1 * max(S, C) * eps_float32}  (torch.linalg.matrix_rank of float32 X)
    effective_rank  exp(-sum p_i ln p_i)                            (Roy & Vetterli 2007)
    sv_entropy      -sum p_i log2 p_i                               (bits; = log2 effective_rank)
    mev             sigma_1^2 / ||X||_F^2                           (top direction's share of the energy)
    vne             von Neumann entropy of the cosine matrix C (condensation.cosine_matrix): eigenvalues clipped at 0,
                    q = lambda / sum lambda, -sum (q + eps) log2 (q + eps) over q > 0   (eps = float64 eps)
    dse             diffusion spectral entropy (arXiv 2312.04823) of the L2-normalised rows u_i = x_i / (|x_i| +
                    1e-12): G_ij = exp(-|u_i - u_j|^2 / (2 sigma^2)) / (sigma sqrt(2 pi)), sigma = 1;
                    K = D^-1/2 G D^-1/2 (D = diag of row sums; K has the eigenvalues of the diffusion matrix
                    D^-1 G); lambda = |eig K|^t, t = 1; q = lambda / sum lambda + eps; -sum q log2 q
    hfc_lfc         ||X - (1/S) 1 1^T X||_2 / ||(1/S) 1 1^T X||_2   (spectral norms: the high-frequency part, X
                    minus its token mean, against the low-frequency part, the mean broadcast to every row;
                    ||1 m^T||_2 = sqrt(S) |m|; inf when the token mean is exactly 0)
    log_hfc         ln(||HFC(X_l)||_F / ||HFC(X_0)||_F)              (against the embedding output of the same
                    sequence; -inf for a layer whose tokens are all equal, NaN when layer 0's are)
Each is averaged over the N sequences, per layer. Their VNE normalised with eps 1e-12 and no clip; ours reads
the condensation's own cosine matrix (norms floored at 1e-3, clipped to [-1, 1]): the same unless a token's
hidden state has norm below 1e-3.

    python eval.py --init_from gpt2 --source wikitext103 --geometry
"""

import math

import torch

METRICS = ("matrix_rank", "effective_rank", "sv_entropy", "mev", "vne", "dse", "hfc_lfc", "log_hfc")
EPS = torch.finfo(torch.float64).eps  # numpy's np.finfo(float).eps, as their entropies add it
DSE_SIGMA, DSE_T = 1.0, 1


def _entropy_bits(q):
    q = q + EPS
    return float(-(q * torch.log2(q)).sum())


def spectrum_metrics(x):
    """matrix_rank, effective_rank, sv_entropy and mev of one [S, C] matrix (one SVD)."""
    assert x.ndim == 2, f"expected one sequence's [S, C] hidden states, got {tuple(x.shape)}"
    s = torch.linalg.svdvals(x.double())
    total_sq = float((s * s).sum())
    if total_sq < 1e-12:  # an all-zero layer: no direction at all
        return {"matrix_rank": 0.0, "effective_rank": float("nan"), "sv_entropy": 0.0, "mev": float("nan")}
    tol = float(s[0]) * max(x.shape) * torch.finfo(torch.float32).eps
    p = s[s > 0] / s[s > 0].sum()
    h_nats = float(-(p * torch.log(p)).sum())
    return {"matrix_rank": float((s > tol).sum()), "effective_rank": math.exp(h_nats),
            "sv_entropy": h_nats / math.log(2), "mev": float(s[0] ** 2) / total_sq}


def von_neumann_entropy(c):
    """Entropy (bits) of the eigenvalues of a symmetric [S, S] cosine matrix, clipped at 0 and summing to 1."""
    assert c.ndim == 2 and c.shape[0] == c.shape[1], f"expected an [S, S] matrix, got {tuple(c.shape)}"
    lam = torch.linalg.eigvalsh(c.double()).clamp_min(0)
    q = lam / lam.sum()
    return _entropy_bits(q[q > 0])


def diffusion_spectral_entropy(x, sigma=DSE_SIGMA, t=DSE_T):
    """DSE (bits) of the rows of one [S, C] matrix, L2-normalised first (see the docstring)."""
    u = x.double()
    u = u / (u.norm(dim=1, keepdim=True) + 1e-12)
    d2 = torch.cdist(u, u).pow(2)
    g = torch.exp(-d2 / (2 * sigma ** 2)) / (sigma * math.sqrt(2 * math.pi))
    r = g.sum(1).rsqrt()
    k = r[:, None] * g * r[None, :]
    lam = torch.linalg.eigvalsh(k).abs() ** t
    return _entropy_bits(lam / lam.sum())


def hfc_lfc(x):
    """(||HFC(X)||_2 / ||LFC(X)||_2, ||HFC(X)||_F) of one [S, C] matrix, float64 (see the docstring)."""
    assert x.ndim == 2, f"expected one sequence's [S, C] hidden states, got {tuple(x.shape)}"
    x = x.double()
    m = x.mean(0, keepdim=True)
    hfc = x - m
    lfc = math.sqrt(x.shape[0]) * float(m.norm())  # the spectral norm of the rank-1 matrix 1 m^T
    top = float(torch.linalg.matrix_norm(hfc, ord=2))
    return (top / lfc if lfc > 0 else math.inf), float(hfc.norm())


def sequence_geometry(x, c):
    """Every metric of one sequence at one layer: x [S, C] hidden states, c [S, S] their cosine matrix."""
    out = spectrum_metrics(x)
    out["vne"] = von_neumann_entropy(c)
    out["dse"] = diffusion_spectral_entropy(x)
    out["hfc_lfc"], out["hfc_fro"] = hfc_lfc(x)
    return out


class Geometry:
    """Sums of each metric per layer over the sequences seen (streaming: memory flat in N).
    add(l, h, c): layer l's batch, h [B, S, C] hidden states and c [B, S, S] cosine matrices."""

    def __init__(self):
        self.sums = {}
        self.hfc0 = None  # this batch's ||HFC(X_0)||_F per sequence (layer 0 comes first in every batch)

    def add(self, l, h, c):
        assert h.ndim == 3 and c.shape == (h.shape[0], h.shape[1], h.shape[1]), "h [B, S, C] and c [B, S, S]"
        layer = self.sums.setdefault(l, dict.fromkeys(METRICS, 0.0))
        if l == 0:
            self.hfc0 = []
        for b in range(h.shape[0]):
            g = sequence_geometry(h[b], c[b])
            fro = g.pop("hfc_fro")
            if l == 0:
                self.hfc0.append(fro)
            ratio = fro / self.hfc0[b] if self.hfc0[b] > 0 else math.nan
            g["log_hfc"] = math.log(ratio) if ratio > 0 else (-math.inf if ratio == 0 else math.nan)
            for k, v in g.items():
                layer[k] += v

    def result(self, count):
        """{metric: [mean over the sequences at layer 0, 1, ..]}."""
        return {k: [self.sums[l][k] / count for l in sorted(self.sums)] for k in METRICS}
