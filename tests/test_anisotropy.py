"""anisotropy.py and geometry.hfc_lfc against hand computation and brute force on planted hidden states.

    python -m pytest -q tests/test_anisotropy.py
"""
import math

import numpy as np
import pytest
import torch

import anisotropy as an
import condensation as cond
import geometry


def measure(model, x, **kw):
    return cond.condensation(model, x, batch_size=5, device="cpu", bins=0, anisotropy=True, **kw)


def test_rogue_dimensions_fake_condensation_that_standardizing_removes(planted):
    s = measure(*planted("rogue"))
    a = s["anisotropy"]
    assert s["mean_cos"][1] > 0.9 and a["std_cos"][1] < 0.1  # raw high, standardized low
    assert a["rogue_share"]["2"][1] > 0.9 and sorted(a["rogue_dims"][1][:2]) == [0, 1]
    assert a["cos_without_top"]["2"][1] < 0.1  # what is left is isotropic noise
    assert a["cross_cos"][1] > 0.9 and abs(a["within_minus_cross"][1]) < 0.02  # all of it is global anisotropy


def test_a_true_cone_stays_condensed_when_standardized(planted):
    s = measure(*planted("cone"))
    a = s["anisotropy"]
    assert s["mean_cos"][1] > 0.8 and a["std_cos"][1] > 0.7  # both high
    assert a["within_minus_cross"][1] > 0.7  # one sequence's tokens are alike; different sequences' are not
    assert a["rogue_share"]["1"][1] < 0.3


def test_standardized_and_cross_match_brute_force(planted):
    model, x = planted("rogue", N=10, S=12, C=8)
    a = measure(model, x)["anisotropy"]
    z = model.layers[1].double().numpy()  # [N, S, C]
    flat = z.reshape(-1, 8)
    zs = (z - flat.mean(0)) / flat.std(0)
    u = zs / np.linalg.norm(zs, axis=-1, keepdims=True)
    assert a["std_cos"][1] == pytest.approx(np.mean([ui @ ui.T for ui in u]), abs=1e-5)
    v = (z / np.linalg.norm(z, axis=-1, keepdims=True)).reshape(-1, 8)
    seq = np.repeat(np.arange(10), 12)
    cos = v @ v.T
    assert a["cross_cos"][1] == pytest.approx(cos[seq[:, None] != seq[None, :]].mean(), abs=1e-6)
    within = (seq[:, None] == seq[None, :]) & ~np.eye(120, dtype=bool)
    assert a["within_offdiag_cos"][1] == pytest.approx(cos[within].mean(), abs=1e-6)
    e = (flat ** 2).mean(0)
    assert a["rogue_share"]["1"][1] == pytest.approx(np.sort(e)[-1] / e.sum(), rel=1e-6)
    rest = z.copy()
    rest[..., np.argsort(e)[-2:]] = 0
    r = rest / np.linalg.norm(rest, axis=-1, keepdims=True)
    assert a["cos_without_top"]["2"][1] == pytest.approx(np.mean([ri @ ri.T for ri in r]), abs=1e-4)


def test_zero_variance_dimension_is_standardized_to_zero_and_counted(planted):
    model, x = planted("cone", N=10, S=12, C=8)
    model.layers[1][..., 3] = 2.5  # constant over every token
    a = measure(model, x)["anisotropy"]
    assert a["zero_variance_dims"] == [0, 1] and all(map(math.isfinite, a["std_cos"]))


def test_too_small_a_reference_sample_is_one_sentence(planted):
    model, x = planted("cone", N=3, S=4)
    with pytest.raises(ValueError, match="reference sample of at least 100 tokens"):
        measure(model, x)


def test_twonn_finds_the_dimension_of_a_plane_in_a_bigger_space():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(40, 4)))[0]  # 4 orthonormal directions in R^40
    d, note = an.twonn(rng.uniform(-1, 1, size=(1000, 4)) @ basis.T + 3.0)
    assert note is None and d == pytest.approx(4, abs=0.5)


def test_twonn_on_too_few_points_is_none_with_a_reason():
    d, note = an.twonn(np.ones((50, 3)))  # 50 copies of one point: 1 distinct
    assert d is None and "at least 20 distinct points, got 1" in note


def test_hfc_lfc_by_hand():
    # X = [[1, 0], [3, 0]]: token mean m = (2, 0); LFC = [[2, 0], [2, 0]], spectral norm sqrt(2) * 2;
    # HFC = [[-1, 0], [1, 0]], spectral norm sqrt(2), Frobenius sqrt(2): ratio 1/2
    ratio, fro = geometry.hfc_lfc(torch.tensor([[1.0, 0.0], [3.0, 0.0]]))
    assert ratio == pytest.approx(0.5) and fro == pytest.approx(math.sqrt(2))
    # X = [[1, 1], [1, -1], [1, 0]]: m = (1, 0), ||LFC||_2 = sqrt(3); HFC = [[0, 1], [0, -1], [0, 0]]: sqrt(2)
    ratio, _ = geometry.hfc_lfc(torch.tensor([[1.0, 1.0], [1.0, -1.0], [1.0, 0.0]]))
    assert ratio == pytest.approx(math.sqrt(2) / math.sqrt(3))


def test_log_hfc_is_against_the_embedding_layer():
    x0 = torch.tensor([[[1.0, 0.0], [3.0, 0.0]]])
    geo = geometry.Geometry()
    for l, h in enumerate((x0, 3 * x0)):  # layer 1 = 3 x layer 0: its HFC norm is 3 times, log 3
        geo.add(l, h, cond.cosine_matrix(h))
    r = geo.result(1)
    assert r["log_hfc"] == pytest.approx([0.0, math.log(3)]) and r["hfc_lfc"] == pytest.approx([0.5, 0.5])


def test_cli_writes_every_measure_and_refuses_a_tiny_reference(tmp_path, capsys):
    import json
    import transformers
    import eval as ev
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_head=2, n_embd=16, n_positions=32,
                                                              vocab_size=50257)).eval()
    hf.save_pretrained(tmp_path / "hf")
    text = tmp_path / "docs.txt"
    text.write_text(" ".join(np.random.default_rng(0).choice("the cat sat on a mat near old stone walls".split(), 3000)))
    base = ["--init_from", str(tmp_path / "hf"), "--source", str(text), "--seq_len", "24", "--out",
            str(tmp_path / "o"), "--device", "cpu", "--anisotropy"]
    with pytest.raises(SystemExit, match="at least 100 tokens"):  # 2 x 24 = 48 reference tokens
        ev.main(base + ["--num_sequences", "2"])
    ev.main(base + ["--num_sequences", "6"])
    stats = json.loads((tmp_path / "o" / "condensation_docs_S24_N6.json").read_text())
    a = stats["anisotropy"]
    assert len(a["std_cos"]) == len(stats["mean_cos"]) == 3 and a["reference_tokens"] == 144
    assert all(math.isfinite(v) for v in a["std_cos"] + a["cross_cos"] + [a["std_spearman"]])
    assert (tmp_path / "o" / "condensation_docs_S24_N6_anisotropy.png").exists()
    assert "standardized: Spearman rho" in capsys.readouterr().out


def test_report_section_averages_over_the_blocks():
    import report
    a = {"std_cos": [0.9, 0.1, 0.3], "cross_cos": [0.5, 0.2, 0.4], "within_minus_cross": [0, 0.1, -0.1],
         "rogue_share": {"2": [0.1, 0.5, 0.7]}, "twonn": [3.0, None, 8.0]}
    # blocks = hidden states 1..2: raw (0.8 + 0.6) / 2, std (0.1 + 0.3) / 2, ..., TwoNN over the finite one
    assert report.anisotropy_summary([0.0, 0.8, 0.6], a) == ["0.700", "0.200", "0.300", "+0.000", "0.60", "8.0"]
