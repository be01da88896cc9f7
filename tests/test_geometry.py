"""geometry.py's per-layer metrics against hand computations on small matrices whose answer is known.

Run: python -m pytest -q tests/test_geometry.py
"""
import math

import numpy as np
import pytest
import torch

import condensation as cond
import geometry as geo


def test_spectrum_of_a_diagonal_matrix():
    # X = diag(4, 3) in a 2 x 3 matrix: sigma = (4, 3); p = (4/7, 3/7)
    x = torch.tensor([[4.0, 0, 0], [0, 3.0, 0]])
    m = geo.spectrum_metrics(x)
    h = -(4 / 7) * math.log2(4 / 7) - (3 / 7) * math.log2(3 / 7)
    assert m["matrix_rank"] == 2
    assert m["mev"] == pytest.approx(16 / 25)
    assert m["sv_entropy"] == pytest.approx(h)
    assert m["effective_rank"] == pytest.approx(2 ** h)


def test_spectrum_of_identical_rows_and_of_an_orthonormal_set():
    x = torch.tensor([1.0, -2.0, 2.0]).expand(5, 3)  # rank one: one direction carries everything
    m = geo.spectrum_metrics(x)
    assert (m["matrix_rank"], m["mev"], m["effective_rank"]) == (1, pytest.approx(1.0), pytest.approx(1.0))
    assert m["sv_entropy"] == pytest.approx(0.0, abs=1e-6)
    q, _ = torch.linalg.qr(torch.randn(6, 4, dtype=torch.float64))  # 6 x 4, orthonormal columns
    m = geo.spectrum_metrics(q.T)  # 4 orthonormal rows: sigma all 1
    assert m["matrix_rank"] == 4 and m["mev"] == pytest.approx(0.25)
    assert m["sv_entropy"] == pytest.approx(2.0) and m["effective_rank"] == pytest.approx(4.0)
    # the rank tolerance is torch.linalg.matrix_rank's on float32: a 1e-9 direction does not count
    x = torch.tensor([[1.0, 0.0], [0.0, 1e-9]])
    assert geo.spectrum_metrics(x)["matrix_rank"] == 1 == int(torch.linalg.matrix_rank(x.float()))


def test_von_neumann_entropy_hand_values():
    assert geo.von_neumann_entropy(torch.eye(8)) == pytest.approx(3.0)  # 8 equal eigenvalues: log2 8
    assert geo.von_neumann_entropy(torch.ones(5, 5)) == pytest.approx(0.0, abs=1e-9)  # eigenvalues (5, 0, ..)
    # [[1, c], [c, 1]]: eigenvalues 1 +- c -> q = (1 +- c) / 2
    c = 0.6
    q = np.array([0.8, 0.2])
    assert geo.von_neumann_entropy(torch.tensor([[1, c], [c, 1]])) == pytest.approx(float(-(q * np.log2(q)).sum()))
    # a negative eigenvalue (not a true cosine matrix) is clipped at 0: [[1, 2], [2, 1]] -> (3, -1) -> (1, 0)
    assert geo.von_neumann_entropy(torch.tensor([[1.0, 2.0], [2.0, 1.0]])) == pytest.approx(0.0, abs=1e-9)


def test_diffusion_spectral_entropy_hand_values():
    # identical rows: G = const, K = J / n -> eigenvalues (1, 0, ..): entropy 0 (up to the added eps)
    assert geo.diffusion_spectral_entropy(torch.ones(6, 3)) == pytest.approx(0.0, abs=1e-12)
    # n orthonormal rows (scaled: normalisation removes the scale): |u_i - u_j|^2 = 2, G = c (a I + b J) with
    # a = 1 - e^-1, b = e^-1; K = G / row sum -> eigenvalues 1 and a / (1 + (n - 1) b) (n - 1 times)
    n = 4
    a, b = 1 - math.exp(-1), math.exp(-1)
    lam = np.array([1.0] + [a / (1 + (n - 1) * b)] * (n - 1))
    q = lam / lam.sum()
    expected = float(-(q * np.log2(q)).sum())
    x = 3.0 * torch.eye(n, 7)
    assert geo.diffusion_spectral_entropy(x) == pytest.approx(expected, rel=1e-9)
    # unequal degrees: u1 = u2 = e1, u3 = e2. P = D^-1 G is row-stochastic (eigenvalue 1), rows 1 and 2 of G are
    # equal (eigenvalue 0), so the third is trace(P) - 1 = 2 / (2 + b) + 1 / (1 + 2 b) - 1
    lam = np.array([1.0, 2 / (2 + b) + 1 / (1 + 2 * b) - 1, 0.0])
    q = lam / lam.sum() + np.finfo(float).eps
    x = torch.tensor([[1.0, 0.0], [5.0, 0.0], [0.0, 2.0]])
    assert geo.diffusion_spectral_entropy(x) == pytest.approx(float(-(q * np.log2(q)).sum()), rel=1e-9)


def test_layerwise_means_through_the_measurement():
    class Two(torch.nn.Module):  # layer 0: orthogonal tokens; layer 1: every token the same vector
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def hidden_states(self, idx):
            B, S = idx.shape
            eye = 2.0 * torch.eye(S, 8).expand(B, S, 8)
            return [eye, torch.ones(B, S, 8)]

    stats = cond.condensation(Two(), torch.zeros(3, 4, dtype=torch.long), batch_size=2, bins=0, geometry=True)
    g = stats["geometry"]
    assert set(g) == set(geo.METRICS) and all(len(v) == 2 for v in g.values())
    assert g["matrix_rank"] == [4, 1] and g["effective_rank"] == pytest.approx([4, 1])
    assert g["vne"] == pytest.approx([2.0, 0.0], abs=1e-9) and g["mev"] == pytest.approx([0.25, 1.0])
    assert g["sv_entropy"] == pytest.approx([2.0, 0.0], abs=1e-6)
