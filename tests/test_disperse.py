"""Tests for disperse.py: every variant against hand computations (numpy loops over pairs, written from
arXiv 2602.00217 section 3, never calling disperse.py), numerics edge cases, subsampling, layer selection and the
two baselines (noisy embeddings, active forgetting).

Run: python -m pytest -q tests/test_disperse.py
"""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from disperse import (VARIANTS, add_embedding_noise, disperse, dispersion_loss, forget_embeddings,
                      select_layers, subsample_tokens)

# -----------------------------------------------------------------------------
# hand computations in float64 numpy, one sequence at a time, explicit loops over pairs


def unit(v, eps):
    return v / (np.linalg.norm(v) + eps)


def ref_angular(z, variant, tau=1.0, t=0.1, eps=1e-2, margin=0.5):
    """Value and straight-through gradient of angular_spread / orthogonalization, chain rule by hand."""
    B, L, F = z.shape
    npairs = L * (L - 1)
    total, grad = 0.0, np.zeros_like(z)
    for b in range(B):
        u = [unit(z[b, i], eps) for i in range(L)]
        dL_dD = np.zeros((L, L))
        D = np.zeros((L, L))
        for i in range(L):
            for j in range(L):
                if i != j:
                    D[i, j] = math.acos(min(max(u[i] @ u[j], -1 + t), 1 - t)) / math.pi
        pairs = [(i, j) for i in range(L) for j in range(L) if i != j]
        if variant == 'angular_spread':
            S = sum(math.exp(-D[i, j] / tau + eps) for i, j in pairs) / npairs
            total += math.log(S)
            for i, j in pairs:
                dL_dD[i, j] = -math.exp(-D[i, j] / tau + eps) / tau / (S * npairs)
        else:
            total += sum(max(0.0, margin - D[i, j]) ** 2 for i, j in pairs) / npairs
            for i, j in pairs:
                dL_dD[i, j] = -2 * max(0.0, margin - D[i, j]) / npairs
        g_u = [np.zeros(F) for _ in range(L)]
        for i, j in pairs:
            cl = math.cos(D[i, j] * math.pi)  # the clamped cosine: arccos' gradient is taken there
            dL_dc = dL_dD[i, j] * (-1 / (math.pi * math.sqrt(1 - cl * cl)))  # identity through clamp
            g_u[i] += dL_dc * u[j]
            g_u[j] += dL_dc * u[i]
        for i in range(L):
            x = z[b, i]
            r = np.linalg.norm(x)
            # d/dx of x / (|x| + eps) applied to g: g / (r + eps) - x (x . g) / (r (r + eps)^2)
            grad[b, i] = g_u[i] / (r + eps) - x * (x @ g_u[i]) / (r * (r + eps) ** 2)
    return total / B, grad / B


def ref_decorrelation(z):
    # the authors' code: (z - mean) / std, no eps
    B, L, F = z.shape
    total = 0.0
    for b in range(B):
        x = [(z[b, i] - z[b, i].mean()) / z[b, i].std(ddof=1) for i in range(L)]
        total += sum((x[i] @ x[j] / (F - 1)) ** 2 for i in range(L) for j in range(L) if i != j) / (L * (L - 1))
    return total / B


def ref_l2_repel(z, tau_l2=1.0, eps=1e-2):
    # the authors' code adds eps inside the exponent
    B, L, F = z.shape
    total = 0.0
    for b in range(B):
        s = sum(math.exp(-np.sum((z[b, i] - z[b, j]) ** 2) / tau_l2 + eps) for i in range(L) for j in range(L))
        total += math.log(s / L ** 2) + 0.1 * np.mean(z[b] ** 2)
    return total / B


def ref_perplexity_entropy(z, tau_l2=1.0, eps=1e-2):
    B, L, F = z.shape
    total = 0.0
    for b in range(B):
        H = 0.0
        for i in range(L):
            w = {j: math.exp(-np.sum((z[b, i] - z[b, j]) ** 2) / tau_l2) for j in range(L) if j != i}
            p = {j: w[j] / sum(w.values()) for j in w}
            H += -sum(p[j] * math.log2(p[j] + eps) for j in p)
        total += -H / L
    return total / B


def ref_infonce_cosine(z, tau=1.0, eps=1e-2):
    B, L, F = z.shape
    total = 0.0
    for b in range(B):
        u = [unit(z[b, i], eps) for i in range(L)]
        total += math.log(sum(math.exp(u[i] @ u[j] / tau) for i in range(L) for j in range(L)) / L ** 2)
    return total / B


def numeric_grad(f, z, h=1e-6):
    """Central differences of a float64 numpy function."""
    g = np.zeros_like(z)
    for idx in np.ndindex(z.shape):
        zp, zm = z.copy(), z.copy()
        zp[idx] += h
        zm[idx] -= h
        g[idx] = (f(zp) - f(zm)) / (2 * h)
    return g


def torch_value_grad(z, **kw):
    zt = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    loss = dispersion_loss(zt, max_tokens=0, **kw)
    loss.backward()
    return loss.item(), zt.grad.numpy()


def polar(angles_deg, radii):
    """Tokens in 2-D at known angles and norms, [1, L, 2]."""
    a = np.deg2rad(np.array(angles_deg, dtype=np.float64))
    return (np.array(radii, dtype=np.float64)[:, None] * np.stack([np.cos(a), np.sin(a)], -1))[None]


# -----------------------------------------------------------------------------
# values and gradients against the hand computations


def test_angular_spread_known_angles():
    # 3 tokens at 0, 90, 180 degrees, eps tiny: D = 1/2 (x4 pairs) and D = acos(-1+t)/pi (x2 pairs)
    t, eps = 0.1, 1e-9
    z = polar([0, 90, 180], [1.0, 2.0, 3.0])
    d_far = math.acos(-1 + t) / math.pi  # the antipodal pair is clamped to -0.9
    expected = math.log((4 * math.exp(-0.5 + eps) + 2 * math.exp(-d_far + eps)) / 6)
    value, _ = torch_value_grad(z, variant='angular_spread', clamp=t, eps=eps)
    assert value == pytest.approx(expected, abs=1e-7)


@pytest.mark.parametrize('variant', ['angular_spread', 'orthogonalization'])
@pytest.mark.parametrize('tau,t', [(1.0, 0.1), (0.3, 0.25)])
def test_angular_variants_match_hand_computation(variant, tau, t):
    # pairs with cosines inside the clamp and outside it on both sides (10 deg apart: c > 1 - t;
    # 170 deg apart: c < -1 + t), two sequences, default eps = 1e-2 so |u| < 1
    z = np.concatenate([polar([0, 10, 100, 175], [1.0, 0.5, 2.0, 3.0]),
                        polar([30, 35, 200, 270], [4.0, 1.0, 0.2, 1.5])])
    z = np.concatenate([z, 0.3 * np.ones_like(z[..., :1])], -1)  # F = 3
    value, grad = torch_value_grad(z, variant=variant, tau=tau, clamp=t)
    ref_value, ref_grad = ref_angular(z, variant, tau=tau, t=t)
    assert value == pytest.approx(ref_value, abs=1e-10)
    np.testing.assert_allclose(grad, ref_grad, atol=1e-10)


def test_angular_spread_eps_is_a_constant_shift():
    # with norms ~1e6 the eps inside |z| + eps is invisible; inside the exp it shifts the value only
    z = 1e6 * torch.randn(2, 6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    za, zb = z.clone().requires_grad_(), z.clone().requires_grad_()
    a, b = dispersion_loss(za, eps=1e-2, max_tokens=0), dispersion_loss(zb, eps=1e-3, max_tokens=0)
    a.backward()
    b.backward()
    assert (a - b).item() == pytest.approx(1e-2 - 1e-3, abs=1e-9)
    torch.testing.assert_close(za.grad, zb.grad, rtol=1e-6, atol=1e-20)


@pytest.mark.parametrize('variant,ref,kw', [
    ('decorrelation', ref_decorrelation, {}),
    ('l2_repel', ref_l2_repel, {'tau_l2': 3.0}),
    ('perplexity_entropy', ref_perplexity_entropy, {'tau_l2': 2.0}),
    ('infonce_cosine', ref_infonce_cosine, {'tau': 0.5}),
])
def test_other_variants_match_hand_computation(variant, ref, kw):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(2, 4, 3))
    value, grad = torch_value_grad(z, variant=variant, **kw)
    f = lambda x: ref(x, **kw)  # noqa: E731
    assert value == pytest.approx(f(z), abs=1e-10)
    np.testing.assert_allclose(grad, numeric_grad(f, z), atol=1e-7)


def test_known_values_small_cases():
    # l2_repel, 2 tokens at distance 1 in 2-D, tau 1: log((2 + 2 e^-1) / 4) + eps + 0.1 * mean(z^2)
    z = np.array([[[0.0, 0.0], [1.0, 0.0]]])
    assert torch_value_grad(z, variant='l2_repel')[0] == pytest.approx(
        math.log((2 + 2 * math.exp(-1)) / 4) + 1e-2 + 0.1 * 0.25, abs=1e-12)
    # decorrelation: (1, -1) and (-1, 1) are perfectly anti-correlated, K_12 = -1, K_12^2 = 1 exactly
    # (no eps beside the std, as in the authors' code); a tiny scale changes nothing
    z = np.array([[[1.0, -1.0], [-1.0, 1.0]]])
    assert torch_value_grad(z, variant='decorrelation')[0] == pytest.approx(1.0, abs=1e-12)
    assert torch_value_grad(1e-3 * z, variant='decorrelation')[0] == pytest.approx(1.0, abs=1e-9)
    # a constant token (std 0) stays the zero vector: K_12 = 0, and the gradient is finite
    value, grad = torch_value_grad(np.array([[[2.0, 2.0, 2.0], [1.0, -1.0, 0.0]]]), variant='decorrelation')
    assert value == 0.0 and np.isfinite(grad).all()
    # infonce_cosine: orthogonal unit tokens (eps tiny): log((2 e + 2) / 4), diagonal included
    z = np.array([[[1.0, 0.0], [0.0, 1.0]]])
    assert torch_value_grad(z, variant='infonce_cosine', eps=1e-12)[0] == pytest.approx(
        math.log((2 * math.e + 2) / 4), abs=1e-9)


# -----------------------------------------------------------------------------
# behaviour


def collapsed(B=2, L=16, F=8, noise=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 1, F, generator=g) + noise * torch.randn(B, L, F, generator=g)


def mean_offdiag_cosine(z):
    u = torch.nn.functional.normalize(z, dim=-1)
    c = u @ u.transpose(1, 2)
    L = z.shape[1]
    return ((c.sum((1, 2)) - c.diagonal(dim1=1, dim2=2).sum(-1)) / (L * (L - 1))).mean().item()


def test_angular_spread_higher_for_collapsed_tokens():
    spread = torch.nn.functional.normalize(torch.randn(2, 16, 8, generator=torch.Generator().manual_seed(1)), dim=-1)
    assert dispersion_loss(collapsed()) > dispersion_loss(spread) + 0.1


@pytest.mark.parametrize('variant,kw', [('angular_spread', {}), ('orthogonalization', {}),
                                        ('infonce_cosine', {}), ('decorrelation', {}),
                                        ('l2_repel', {'tau_l2': 1.0})])
def test_gradient_steps_disperse_a_collapsed_set(variant, kw):
    # perplexity_entropy is left out: its entropy is largest for equidistant tokens, collapse included
    z = collapsed().requires_grad_()
    before = mean_offdiag_cosine(z.detach())
    opt = torch.optim.Adam([z], lr=0.05)
    for _ in range(20):
        opt.zero_grad()
        dispersion_loss(z, variant=variant, **kw).backward()
        opt.step()
    assert before > 0.9
    assert mean_offdiag_cosine(z.detach()) < before - 0.05


def test_subsampling_reproducible_and_fresh():
    z = torch.arange(2 * 10 * 1.0).reshape(2, 10, 1).expand(2, 10, 3)
    a = subsample_tokens(z, 4, torch.Generator().manual_seed(0))
    b = subsample_tokens(z, 4, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == (2, 4, 3)
    assert torch.equal(a[1] - a[0], torch.full((4, 3), 10.0))  # one subset shared by the batch
    g = torch.Generator().manual_seed(0)
    draws = {tuple(subsample_tokens(z, 4, g)[0, :, 0].tolist()) for _ in range(5)}
    assert len(draws) > 1  # fresh at each call
    assert subsample_tokens(z, 0) is z and subsample_tokens(z, 10) is z


def test_loss_reproducible_from_generator():
    z = torch.randn(2, 50, 8)
    l1 = dispersion_loss(z, max_tokens=8, generator=torch.Generator().manual_seed(3))
    l2 = dispersion_loss(z, max_tokens=8, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    l3, l4 = (dispersion_loss(z, max_tokens=8, generator=g) for _ in range(2))
    assert l1 == l2 == l3 and l3 != l4
    # no-op subsampling: L <= max_tokens gives the full loss
    assert dispersion_loss(z, max_tokens=50) == dispersion_loss(z, max_tokens=0)


# -----------------------------------------------------------------------------
# numerics


def edge_cases():
    base = torch.randn(2, 6, 16, generator=torch.Generator().manual_seed(0))
    yield 'identical', base[:1, :1].expand(2, 6, 16).clone()
    yield 'zeros', torch.zeros(2, 6, 16)
    yield 'some_zero', torch.cat([torch.zeros(2, 2, 16), base[:, 2:]], 1)
    yield 'norm_1e4', 1e4 * base
    yield 'norm_1e6', 1e6 * base
    yield 'identical_1e6', 1e6 * base[:1, :1].expand(2, 6, 16).clone()
    yield 'L2', base[:, :2]
    yield 'antipodal', torch.cat([base[:, :1], -base[:, :1]], 1)
    yield 'bf16', base.bfloat16()


@pytest.mark.parametrize('variant', VARIANTS)
def test_finite_value_and_grad(variant):
    for name, z in edge_cases():
        z = z.requires_grad_()
        loss = dispersion_loss(z, variant=variant)
        loss.backward()
        assert torch.isfinite(loss), (variant, name)
        assert torch.isfinite(z.grad).all(), (variant, name)
        assert loss.dtype == torch.float32


@pytest.mark.parametrize('variant', VARIANTS)
def test_bf16_autocast_computes_in_float32(variant):
    z = torch.randn(2, 8, 16)
    zb = z.bfloat16().requires_grad_()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        loss = dispersion_loss(zb, variant=variant)
    loss.backward()
    assert loss.dtype == torch.float32 and zb.grad.dtype == torch.bfloat16
    assert loss.item() == pytest.approx(dispersion_loss(zb.float(), variant=variant).item(), abs=1e-6)


def test_bad_arguments():
    z = torch.randn(2, 4, 3)
    for kw in [{'variant': 'nope'}, {'clamp': 0.0}, {'max_tokens': 1}, {'tau': 0.0}]:
        with pytest.raises(ValueError):
            dispersion_loss(z, **kw)
    for bad in [torch.randn(4, 3), torch.randn(2, 1, 3)]:
        with pytest.raises(ValueError):
            dispersion_loss(bad)


@pytest.mark.slow
def test_torch_compile_matches_eager():
    z = torch.randn(2, 40, 8)
    za, zb = z.clone().requires_grad_(), z.clone().requires_grad_()
    la = torch.compile(dispersion_loss)(za, max_tokens=16, generator=torch.Generator().manual_seed(0))
    lb = dispersion_loss(zb, max_tokens=16, generator=torch.Generator().manual_seed(0))
    la.backward()
    lb.backward()
    assert la.item() == pytest.approx(lb.item(), abs=1e-6)
    torch.testing.assert_close(za.grad, zb.grad, atol=1e-6, rtol=1e-5)


# -----------------------------------------------------------------------------
# layer selection


def test_select_layers():
    assert select_layers(6, 'all') == [1, 2, 3, 4, 5, 6]
    assert select_layers(6, 'last') == [6]
    assert select_layers(6, 'early_half') == [1, 2, 3]
    assert select_layers(7, 'early_half') == [1, 2, 3]
    assert select_layers(7, 'late_half') == [4, 5, 6, 7]
    assert select_layers(6, [2, 5]) == [2, 5]
    for bad in ['first', [0, 1], [7], [1.0], [], [True]]:
        with pytest.raises(ValueError):
            select_layers(6, bad)
    with pytest.raises(ValueError):
        select_layers(1, 'early_half')  # selects no block


def test_disperse_averages_selected_layers():
    # layer i holds i equal tokens plus orthogonal ones: distinct l2_repel values per layer
    n = 4
    hidden = [torch.eye(6)[None] * (i + 1) for i in range(n + 1)]
    per_layer = [dispersion_loss(h, variant='l2_repel', max_tokens=0).item() for h in hidden]
    assert len(set(per_layer)) == n + 1
    for loc, idx in [('all', [1, 2, 3, 4]), ('last', [4]), ('early_half', [1, 2]), ('late_half', [3, 4]),
                     ([1, 3], [1, 3])]:
        got = disperse(hidden, loc=loc, variant='l2_repel', max_tokens=0).item()
        assert got == pytest.approx(np.mean([per_layer[i] for i in idx]), rel=1e-6), loc
    with pytest.raises(ValueError):
        disperse(hidden[:1])


# -----------------------------------------------------------------------------
# baselines


def test_baselines_need_a_token_embedding():
    with pytest.raises(ValueError):
        add_embedding_noise(nn.Linear(2, 2), 1.0)


# -----------------------------------------------------------------------------
# with the real models (model.py)


def tiny_gpt():
    from model import GPT, GPTConfig
    torch.manual_seed(0)
    return GPT(GPTConfig(block_size=16, vocab_size=64, n_layer=3, n_head=2, n_embd=16))


def test_disperse_on_gpt_hidden_states():
    model = tiny_gpt()
    idx = torch.randint(0, 64, (2, 16))
    _, _, hidden = model(idx, idx, return_hidden=True)
    assert len(hidden) == 4
    disperse(hidden, loc='early_half').backward()  # block 1 only
    assert model.transformer.h[0].mlp.c_fc.weight.grad.abs().sum() > 0
    assert model.transformer.h[1].mlp.c_fc.weight.grad is None  # blocks after the selected ones: no grad
    assert model.transformer.wte.weight.grad.abs().sum() > 0


def test_embedding_noise_on_gpt():
    """NEFTune's U(-m, m), m = alpha / sqrt(L d), on the embedding output hidden[0] = wte + wpe, training only."""
    model = tiny_gpt()
    idx = torch.randint(0, 64, (2, 16))
    clean = model(idx, return_hidden=True)[2][0].detach()
    alpha = 5.0
    handle = add_embedding_noise(model, alpha)
    m = alpha / math.sqrt(16 * 16)
    noise = model(idx, return_hidden=True)[2][0].detach() - clean  # dropout 0: all of the change is noise
    assert noise.abs().max() <= m + 1e-6
    assert noise.abs().max() > 0.9 * m  # uniform on (-m, m): 512 draws reach near the bound
    assert abs(noise.mean()) < 0.15 * m  # the mean of 512 draws has std m / sqrt(3 * 512) = 0.026 m
    assert not torch.equal(noise, model(idx, return_hidden=True)[2][0].detach() - clean)  # fresh each call
    model.eval()
    torch.testing.assert_close(model(idx, return_hidden=True)[2][0], clean, rtol=0, atol=0)
    model.train()
    handle.remove()
    torch.testing.assert_close(model(idx, return_hidden=True)[2][0], clean, rtol=0, atol=0)
    with pytest.raises(ValueError):
        add_embedding_noise(model, 0.0)


def test_forget_embeddings_on_gpt_and_untied_qwen3():
    from model import Qwen3, Qwen3Config

    def trained(model, steps=2):
        opt = model.configure_optimizers(0.1, 1e-2, (0.9, 0.95), 'cpu')
        for _ in range(steps):
            opt.zero_grad()
            model(idx, idx)[1].backward()
            opt.step()
        return opt

    idx = torch.randint(0, 64, (2, 16))
    for make in [tiny_gpt, lambda: Qwen3(Qwen3Config(vocab_size=64, n_layer=2, n_head=4, n_kv_head=2, head_dim=8,
                                                     n_embd=32, n_inner=48, tie_embeddings=False, block_size=16))]:
        torch.manual_seed(0)
        model = make()
        opt = trained(model)
        w = model.transformer.wte.weight
        before, head_before = w.detach().clone(), model.lm_head.weight.detach().clone()
        other = model.transformer.h[0].mlp.c_fc.weight
        other_state = {k: v.clone() for k, v in opt.state[other].items()}
        forget_embeddings(model, opt, generator=torch.Generator().manual_seed(1))
        assert not torch.allclose(w, before)
        assert abs(w.mean().item()) < 0.01 and w.std().item() == pytest.approx(0.02, rel=0.15)  # 64 x d draws
        assert (opt.state[w]['exp_avg'] == 0).all() and (opt.state[w]['exp_avg_sq'] == 0).all()
        assert int(opt.state[w]['step']) == 0
        for k, v in opt.state[other].items():  # other parameters untouched
            assert torch.equal(v, other_state[k])
        # the LM head changes only when it is the same tensor as the token embedding
        assert torch.equal(model.lm_head.weight, head_before) != model.tied
        # the same seed gives the same weights (DDP ranks agree), and training continues finitely
        torch.manual_seed(0)
        twin = make()
        forget_embeddings(twin, trained(twin), generator=torch.Generator().manual_seed(1))
        assert torch.equal(twin.transformer.wte.weight, w)
        opt.zero_grad()
        model(idx, idx)[1].backward()
        opt.step()
        assert torch.isfinite(w).all() and int(opt.state[w]['step']) == 1


# -----------------------------------------------------------------------------
# precision (float32 matmuls in IEEE float32 whatever the trainer allows) and host syncs

def _precision():
    """The float32 matmul precision in force on the CPU and CUDA backends ('ieee' = full float32), readable
    whichever API set it."""
    return torch.backends.mkldnn.matmul.fp32_precision, torch.backends.cuda.matmul.fp32_precision


class _Recorder(torch.utils._python_dispatch.TorchDispatchMode):
    """Records, for every aten op run inside: (op name, the float32 matmul precision at that moment, args)."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append((func.__name__, _precision(), args, kwargs or {}))
        return func(*args, **(kwargs or {}))


MATMULS = ('bmm', 'mm', 'matmul', 'baddbmm', 'addmm')


def _allow_low_precision(api):
    """What a trainer may set: TF32 on CUDA and bf16 passes on the CPU (AVX512-BF16 / AMX) for float32 matmuls,
    through the legacy API ('medium') or the per-backend one. Returns the function that undoes it."""
    if api == 'legacy':
        old = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision('medium')
        return lambda: torch.set_float32_matmul_precision(old)
    backends = (torch.backends.mkldnn.matmul, torch.backends.cuda.matmul)
    saved = [b.fp32_precision for b in backends]
    backends[0].fp32_precision, backends[1].fp32_precision = 'bf16', 'tf32'
    return lambda: [setattr(b, 'fp32_precision', p) for b, p in zip(backends, saved)]


@pytest.mark.parametrize("api", ['legacy', 'per-backend'])
@pytest.mark.parametrize("variant", ['angular_spread', 'decorrelation', 'l2_repel'])
def test_cosine_matmuls_run_in_full_fp32_even_where_the_trainer_allows_tf32(variant, api):
    """train.py allows TF32 on CUDA; this CPU (AVX512-BF16) can run float32 matmuls through bf16 when allowed.
    The loss's Gram matmuls, forward and backward, and eval.py's cosine matrix must run in IEEE float32 anyway,
    and give the numbers of such a run; the caller's setting must come back."""
    from condensation import cosine_matrix
    z = torch.randn(3, 40, 64, generator=torch.Generator().manual_seed(0))
    want = dispersion_loss(z, variant, tau_l2=128.0)
    want_cos = cosine_matrix(z)
    undo = _allow_low_precision(api)
    try:
        allowed = _precision()
        zg = z.clone().requires_grad_()
        with _Recorder() as rec:
            loss = dispersion_loss(zg, variant, tau_l2=128.0)
            loss.backward()
            cos = cosine_matrix(z)
        assert _precision() == allowed
    finally:
        undo()
    mm = [p for name, p, _, _ in rec.ops if name.split('.')[0] in MATMULS]
    assert len(mm) >= 3 and set(mm) == {('ieee', 'ieee')}, mm  # forward, backward and eval's matmuls
    assert torch.equal(loss.detach(), want) and torch.equal(cos, want_cos)
    assert torch.get_float32_matmul_precision() == 'highest'  # the test left the process as it found it


def test_gram_gradient():
    from disperse import gram
    u = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(gram, (u,))


def test_disperse_draws_each_layers_subset_as_one_call_per_layer_would():
    """disperse() draws every layer's subset up front: the same positions as randperm(L)[:k] drawn layer after
    layer from the generator (a hand reproduction), so the numbers are those of a loop of dispersion_loss calls."""
    hidden = [torch.randn(2, 30, 8, generator=torch.Generator().manual_seed(i)) for i in range(5)]
    got = disperse(hidden, loc='all', max_tokens=7, generator=torch.Generator().manual_seed(11))
    g = torch.Generator().manual_seed(11)
    subsets = [torch.randperm(30, generator=g)[:7] for _ in range(4)]
    want = torch.stack([dispersion_loss(hidden[i][:, s], max_tokens=0) for i, s in zip(range(1, 5), subsets)]).mean()
    assert torch.equal(got, want)
    g = torch.Generator().manual_seed(11)  # and what four dispersion_loss calls with one generator give
    assert torch.equal(got, torch.stack([dispersion_loss(hidden[i], max_tokens=7, generator=g)
                                         for i in range(1, 5)]).mean())


def test_no_host_round_trip_per_layer(monkeypatch):
    """Hidden states on another device than the generator (here 'meta' standing in for CUDA): the subsets of all
    layers reach that device in one copy per step, not one per layer, and nothing reads a tensor on the host.
    (autocast knows no 'meta' device; the loss only switches it off, so a no-op context stands in.)"""
    import contextlib
    monkeypatch.setattr(torch, 'autocast', lambda **kw: contextlib.nullcontext())
    hidden = [torch.randn(2, 300, 16, device='meta') for _ in range(7)]
    with _Recorder() as rec:
        disperse(hidden, loc='all', max_tokens=256, generator=torch.Generator().manual_seed(0))
    def devices(args, kw):
        return {a.device.type for a in args if torch.is_tensor(a)} | {str(kw.get('device', ''))[:4]}
    crossings = [(name, args) for name, _, args, kw in rec.ops
                 if name.split('.')[0] in ('_to_copy', 'copy_', '_copy_from') and devices(args, kw) >= {'cpu', 'meta'}]
    reads = [name for name, _, _, _ in rec.ops if name.split('.')[0] in ('_local_scalar_dense', 'item', 'equal')]
    assert len(crossings) == 1 and not reads, (crossings, reads)


def test_bf16_hidden_states_are_measured_in_float32():
    """FSDP's bf16 parameters give bf16 hidden states: the loss and eval.py's cosines cast them to float32 first,
    so they equal the float32 computation on the same (bf16-rounded) values."""
    from condensation import cosine_matrix
    z = torch.randn(2, 24, 32, generator=torch.Generator().manual_seed(0)).bfloat16()
    assert torch.equal(dispersion_loss(z), dispersion_loss(z.float()))
    cos = cosine_matrix(z)
    assert cos.dtype == torch.float32 and torch.equal(cos, cosine_matrix(z.float()))
