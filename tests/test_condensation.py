"""Tests of eval.py's condensation measurement (arXiv 2602.00217 section 2) against hand-computed truth.

Run: python -m pytest -q tests/test_condensation.py
"""
import json
import os
import math

import numpy as np
import pytest
import torch

import condensation as cond
import eval as ev
import text_sources


def get_tokenizer(name):
    from data.tokenizer import get_tokenizer
    return get_tokenizer(name)


# -----------------------------------------------------------------------------
# cosine matrix

def test_orthogonal_tokens_give_identity():
    h = 3.0 * torch.eye(6, 10)[None]  # 6 orthogonal token vectors of norm 3
    C = cond.cosine_matrix(h)
    assert C.dtype == torch.float32 and C.shape == (1, 6, 6)
    torch.testing.assert_close(C[0], torch.eye(6))


def test_identical_tokens_give_all_ones():
    h = torch.randn(1, 1, 16).expand(2, 7, 16)
    torch.testing.assert_close(cond.cosine_matrix(h), torch.ones(2, 7, 7))


def test_norm_floor_and_clip():
    # |z| = 1e-4 is clamped to 1e-3: cos(z, z) = 1e-8 / 1e-6 = 0.01; a zero vector has cosine 0 with everything
    z = torch.tensor([[[1e-4, 0.0], [0.0, 0.0], [2.0, 0.0]]], dtype=torch.float64)
    C = cond.cosine_matrix(z)
    expected = torch.tensor([[0.01, 0.0, 0.1], [0.0, 0.0, 0.0], [0.1, 0.0, 1.0]])
    torch.testing.assert_close(C[0], expected)
    assert C.dtype == torch.float32
    big = torch.full((1, 2, 3), 1e3) + torch.tensor([0.0, 1e-4, 0.0])  # rounding would give 1 + ulp
    assert cond.cosine_matrix(big).max() <= 1.0


def test_cosine_matrix_matches_pairwise_formula():
    h = torch.randn(2, 5, 8, dtype=torch.float64)
    C = cond.cosine_matrix(h)
    for b in range(2):
        for i in range(5):
            for j in range(5):
                zi, zj = h[b, i], h[b, j]
                c = float(zi @ zj) / (max(float(zi.norm()), 1e-3) * max(float(zj.norm()), 1e-3))
                assert abs(float(C[b, i, j]) - c) < 1e-6


def test_float32_inside_autocast():
    h = torch.randn(2, 9, 64)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        C = cond.cosine_matrix(h)
    assert C.dtype == torch.float32
    torch.testing.assert_close(C, cond.cosine_matrix(h), rtol=0, atol=1e-6)


# -----------------------------------------------------------------------------
# rank correlations (hand-computed)

def test_average_ranks_with_ties():
    np.testing.assert_array_equal(cond.average_ranks([10, 20, 20, 5, 20]), [2, 4, 4, 1, 4])


def test_spearman_kendall_monotone():
    up = [0.1, 0.2, 0.5, 0.51, 0.9]
    assert cond.spearman(up, range(5)) == pytest.approx(1.0)
    assert cond.kendall(up, range(5)) == pytest.approx(1.0)
    assert cond.spearman(up[::-1], range(5)) == pytest.approx(-1.0)
    assert cond.kendall(up[::-1], range(5)) == pytest.approx(-1.0)


def test_spearman_kendall_hand_values():
    # d = (-1, 1, -1, 1, 0): rho = 1 - 6 * 4 / (5 * 24) = 0.8; pairs (0,1), (2,3) discordant of 10: tau = 0.6
    x, y = [1, 2, 3, 4, 5], [2, 1, 4, 3, 5]
    assert cond.spearman(x, y) == pytest.approx(0.8)
    assert cond.kendall(x, y) == pytest.approx(0.6)


def test_spearman_kendall_with_ties():
    # x ranks (1, 2.5, 2.5, 4): rho = 4.5 / sqrt(4.5 * 5) = 3 / sqrt(10)
    # pairs: 5 concordant, 1 tied in x, 0 discordant: tau_b = 5 / sqrt((6 - 1) * 6)
    x, y = [1, 2, 2, 3], [1, 2, 3, 4]
    assert cond.spearman(x, y) == pytest.approx(3 / math.sqrt(10))
    assert cond.kendall(x, y) == pytest.approx(5 / math.sqrt(30))
    # ties on both sides: centred ranks x (-1, -1, 0.5, 1.5), y (-1.5, 0, 0, 1.5)
    # rho = (1.5 + 0 + 0 + 2.25) / sqrt(4.5 * 4.5) = 5 / 6; tau_b: C = 4, D = 0, ties x 1, ties y 1 -> 4 / 5
    x, y = [1, 1, 2, 3], [1, 2, 2, 3]
    assert cond.spearman(x, y) == pytest.approx(5 / 6)
    assert cond.kendall(x, y) == pytest.approx(4 / 5)


def test_constant_sequence_is_nan():
    assert math.isnan(cond.spearman([0.3, 0.3, 0.3], [0, 1, 2]))
    assert math.isnan(cond.kendall([0.3, 0.3, 0.3], [0, 1, 2]))


# -----------------------------------------------------------------------------
# the measurement on synthetic models

class ToyModel(torch.nn.Module):
    """hidden[l] = embedding pulled towards a shared direction by l / n_layer: condensation grows with depth."""

    def __init__(self, n_layer=4, vocab=50, dim=12):
        super().__init__()
        self.n_layer = n_layer
        self.emb = torch.nn.Embedding(vocab, dim)
        self.shared = torch.nn.Parameter(torch.randn(dim) * 3)

    def hidden_states(self, idx):
        x = self.emb(idx)
        return [x + (l / self.n_layer) * self.shared for l in range(self.n_layer + 1)]


def test_toy_model_condenses_with_depth():
    torch.manual_seed(0)
    model = ToyModel(n_layer=4)
    seqs = torch.randint(0, 50, (5, 9))
    out = cond.condensation(model, seqs, batch_size=2)
    assert len(out["mean_cos"]) == 5 and out["n_layers"] == 4
    assert out["spearman"] == pytest.approx(1.0) and out["kendall"] == pytest.approx(1.0)
    assert out["seq_len"] == 9 and out["num_sequences"] == 5
    assert set(out["last_n_mean"]) == {"1", "2", "3", "4"}  # 5 > n_layers, 4 // 2 = 2 already there
    assert out["last_n_mean"]["1"] == pytest.approx(out["mean_cos"][-1])
    assert out["last_n_mean"]["3"] == pytest.approx(np.mean(out["mean_cos"][-3:]))
    # each histogram is a density over [-1, 1]: sum * bin width = 1
    assert len(out["hist"]) == 5 and all(len(h) == 128 for h in out["hist"])
    for h in out["hist"]:
        assert sum(h) * (2 / 128) == pytest.approx(1.0)


def test_streaming_average_equals_dense():
    torch.manual_seed(1)
    model = ToyModel(n_layer=3)
    seqs = torch.randint(0, 50, (7, 6))
    stream = cond.condensation(model, seqs, batch_size=3)  # batches of 3, 3, 1
    batches = cond.condensation(model, iter(list(seqs.split(2))), batch_size=99)  # an iterable of batches
    # dense: every sequence's matrices at once, averaged over N, in float64 from the formula
    with torch.no_grad():
        hidden = model.hidden_states(seqs)
    for l, h in enumerate(hidden):
        h = h.double()
        n = h.norm(dim=-1, keepdim=True).clamp_min(1e-3)
        avg = ((h @ h.transpose(1, 2)) / (n * n.transpose(1, 2))).clamp(-1, 1).mean(0)
        assert stream["mean_cos"][l] == pytest.approx(float(avg.mean()), abs=1e-6)
        assert batches["mean_cos"][l] == pytest.approx(float(avg.mean()), abs=1e-6)
        dens, _ = np.histogram(avg.numpy().ravel(), bins=128, range=(-1, 1), density=True)
        # float32 vs float64 can move an entry sitting on a bin edge; allow one entry's worth of density
        assert np.abs(np.array(stream["hist"][l]) - dens).max() <= 1.01 * 64 / 36
    assert stream["num_sequences"] == batches["num_sequences"] == 7


def test_identical_tokens_histogram_in_last_bin():
    class Flat(ToyModel):
        def hidden_states(self, idx):
            h = self.shared.expand(*idx.shape, -1)
            return [h, h]
    out = cond.condensation(Flat(n_layer=1), torch.zeros(2, 4, dtype=torch.long))
    assert out["mean_cos"] == pytest.approx([1.0, 1.0])
    assert out["hist"][0][-1] == pytest.approx(64.0) and sum(out["hist"][0][:-1]) == 0  # all mass in [1-1/64, 1]
    assert math.isnan(out["spearman"])


def test_probe_measures_by_hand_and_restores_training_mode():
    class Planted(torch.nn.Module):
        """Hidden state 0: one-hot token vectors (cosine 1 between equal tokens, else 0); 1: one vector for all."""

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(4))

        def hidden_states(self, idx):
            return [torch.nn.functional.one_hot(idx, 4).float(), self.w.expand(*idx.shape, 4)]

    model = Planted().train()
    probe = cond.condensation_probe(model, torch.tensor([[0, 1], [2, 2]]))
    assert model.training
    assert set(probe) == {"mean_cos", "last_mean", "spearman"}
    # state 0: window [0, 1] has the cosine matrix [[1, 0], [0, 1]] (mean 1/2), window [2, 2] all ones (mean 1):
    # (0.5 + 1) / 2 = 0.75; state 1: every cosine 1. Rising with depth: rho = 1
    assert probe["mean_cos"] == pytest.approx([0.75, 1.0]) and probe["last_mean"] == pytest.approx(1.0)
    assert probe["spearman"] == pytest.approx(1.0)


# -----------------------------------------------------------------------------
# real models and the command line (tiny models, a few short sequences)

WORDS = ("the cat sat on a mat while seven quick foxes jumped over lazy dogs and nobody minded "
         "because rain fell softly across old stone bridges near the quiet river").split()


@pytest.fixture
def text_file(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "docs.txt"
    path.write_text(" ".join(rng.choice(WORDS, 1500)))
    return str(path)


def tiny_checkpoint(tmp_path, model_type="gpt", dataset="shakespeare"):
    """A checkpoint in train.py's format holding a tiny randomly initialised model."""
    from model import GPT, GPTConfig, Qwen3, Qwen3Config, model_args_of
    torch.manual_seed(0)
    if model_type == "gpt":
        model = GPT(GPTConfig(block_size=32, vocab_size=50304, n_layer=3, n_head=2, n_embd=16))
    else:
        model = Qwen3(Qwen3Config(block_size=32, vocab_size=50304, n_layer=2, n_head=2, n_kv_head=1, head_dim=8,
                                  n_embd=16, n_inner=32))
    ckpt = {"model": model.state_dict(), "model_args": model_args_of(model), "iter_num": 0, "best_val_loss": 9.9,
            "config": {"dataset": dataset, "tokenizer": "gpt2"}}
    path = tmp_path / f"{model_type}" / "ckpt.pt"
    path.parent.mkdir()
    torch.save(ckpt, path)
    return str(path), model


@pytest.mark.parametrize("model_type,n_layer", [("gpt", 3), ("qwen3", 2)])
def test_cli_on_checkpoint(tmp_path, text_file, model_type, n_layer, capsys):
    ckpt, model = tiny_checkpoint(tmp_path, model_type)
    ev.main(["--ckpt", ckpt, "--source", text_file, "--num_sequences", "3", "--seq_len", "64", "--device", "cpu"])
    out_dir = tmp_path / model_type / "eval"  # default: eval/ beside the checkpoint
    path = out_dir / "condensation_docs_S32_N3.json"  # source docs.txt, 64 clipped to block_size 32, N = 3
    assert ev.condensation_path(str(out_dir), text_file, 32, 3) == str(path)
    stats = json.loads(path.read_text())
    import matplotlib.image
    assert matplotlib.image.imread(str(path)[:-5] + ".png").shape[2] in (3, 4)
    for key in ("mean_cos", "spearman", "kendall", "last_n_mean", "hist", "seq_len", "num_sequences", "source",
                "model"):
        assert key in stats, key
    assert len(stats["mean_cos"]) == n_layer + 1 and len(stats["hist"]) == n_layer + 1
    assert stats["seq_len"] == 32 and stats["num_sequences"] == 3  # 64 clipped to block_size 32
    assert "block_size" in capsys.readouterr().out
    # the same numbers from the model's own hidden states on the same sequences
    tok = get_tokenizer("gpt2")
    x = text_sources.text_spans(text_sources.read_words(text_file), 3, 32, tok.encode)
    with torch.no_grad():
        _, _, hidden = model(x, return_hidden=True)
    assert len(hidden) == n_layer + 1
    expected = [float(cond.cosine_matrix(h).mean()) for h in hidden]
    assert stats["mean_cos"] == pytest.approx(expected, abs=1e-5)


def test_cli_val_windows(tmp_path, monkeypatch):
    data_dir = tmp_path / "data" / "tinyset"  # what train.py's dataset='tinyset' reads
    data_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rng.integers(0, 50257, 5000).astype(np.uint16).tofile(data_dir / "val.bin")
    (data_dir / "meta.json").write_text(json.dumps({"dtype": "uint16", "tokenizer": "gpt2", "vocab_size": 50257,
                                                    "eot_token": 50256}))
    monkeypatch.setattr(ev, "DATA_ROOT", str(tmp_path / "data"))
    ckpt, _ = tiny_checkpoint(tmp_path, "gpt", dataset="tinyset")
    ev.main(["--ckpt", ckpt, "--num_sequences", "4", "--seq_len", "16", "--out", str(tmp_path / "o")])
    stats = json.loads((tmp_path / "o" / "condensation_val_S16_N4.json").read_text())
    assert stats["num_sequences"] == 4 and stats["seq_len"] == 16 and "tinyset" in stats["source"]
    # seed i draws window i: the first 2 of 4 are the 2 of N=2, and they are the memmap's tokens
    x4, x2 = text_sources.val_windows(str(data_dir), 4, 16), text_sources.val_windows(str(data_dir), 2, 16)
    torch.testing.assert_close(x4[:2], x2)
    tokens = np.fromfile(data_dir / "val.bin", dtype=np.uint16)
    start = int(np.random.default_rng(1).integers(0, 5000 - 16))
    np.testing.assert_array_equal(x4[1].numpy(), tokens[start:start + 16])


def test_cli_hf_directory_matches_transformers(tmp_path, text_file):
    import transformers
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=16, n_positions=32, vocab_size=50257)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    hf.save_pretrained(tmp_path / "hf")
    ev.main(["--init_from", str(tmp_path / "hf"), "--source", text_file, "--num_sequences", "2", "--seq_len", "24",
             "--out", str(tmp_path / "o"), "--device", "cpu"])
    stats = json.loads((tmp_path / "o" / "condensation_docs_S24_N2.json").read_text())
    x = text_sources.text_spans(text_sources.read_words(text_file), 2, 24, get_tokenizer("gpt2").encode)
    with torch.no_grad():
        hidden = hf(x, output_hidden_states=True).hidden_states  # HF's own convention: n_layer + 1 states
    C = [cond.cosine_matrix(h).mean(0) for h in hidden]
    assert stats["mean_cos"] == pytest.approx([float(c.mean()) for c in C], abs=1e-5)
    idx = list(range(len(C)))
    assert stats["spearman"] == pytest.approx(cond.spearman([float(c.mean()) for c in C], idx), abs=1e-9)


def test_compare_plots_each_curve_with_its_source_and_length(tmp_path, capsys):
    runs = {"a": ([0.1, 0.3, 0.5], "val windows of data/x", 128), "b": ([0.5, 0.4, 0.2, 0.1], "wikitext", 512)}
    for name, (curve, source, S) in runs.items():
        (tmp_path / f"{name}.json").write_text(json.dumps({"mean_cos": curve, "spearman": None, "model": "same",
                                                           "source": source, "seq_len": S, "num_sequences": 10}))
    fig = ev.main(["--compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    ax = fig.axes[0]
    for line, (name, (curve, source, S)) in zip(ax.get_lines(), runs.items()):
        assert list(line.get_ydata()) == curve  # each curve over its layer fraction l / n
        assert list(line.get_xdata()) == pytest.approx([l / (len(curve) - 1) for l in range(len(curve))])
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [f"{tmp_path / 'a.json'} (val windows of data/x, S=128, N=10; rho n/a)",
                      f"{tmp_path / 'b.json'} (wikitext, S=512, N=10; rho n/a)"]  # one model: told apart by path
    warning = [l for l in capsys.readouterr().out.splitlines() if l.startswith("warning:")]
    assert len(warning) == 1 and "different sources or lengths" in warning[0]
    import matplotlib.image
    assert matplotlib.image.imread(str(tmp_path / "condensation_compare.png")).shape[2] in (3, 4)


def test_compare_on_a_broken_file_is_one_sentence(tmp_path):
    (tmp_path / "a.json").write_text('{"mean_cos": [0.1, 0.2], "spear')
    with pytest.raises(SystemExit, match=r"a\.json is not valid JSON"):
        ev.main(["--compare", str(tmp_path / "a.json"), str(tmp_path / "a.json")])
    (tmp_path / "b.json").write_text('{"mean_cos": [0.1, 0.2]}')
    (tmp_path / "c.json").write_text('{"tasks": {}}')
    with pytest.raises(SystemExit, match="either condensation JSON files or tasks.json"):
        ev.main(["--compare", str(tmp_path / "b.json"), str(tmp_path / "c.json")])


def test_measurements_of_other_settings_never_replace_each_other(tmp_path, text_file):
    ckpt, _ = tiny_checkpoint(tmp_path, "gpt")
    out = tmp_path / "o"
    for S, N in ((16, 3), (24, 3), (16, 2)):
        ev.main(["--ckpt", ckpt, "--source", text_file, "--num_sequences", str(N), "--seq_len", str(S),
                 "--out", str(out), "--device", "cpu"])
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(f"condensation_docs_S{S}_N{N}.{e}" for S, N in ((16, 3), (24, 3), (16, 2))
                             for e in ("json", "png", "windows.npz"))
    for S, N in ((16, 3), (24, 3), (16, 2)):
        stats = json.loads((out / f"condensation_docs_S{S}_N{N}.json").read_text())
        assert (stats["seq_len"], stats["num_sequences"]) == (S, N)
    # experiments.py's command: --num_sequences 100 --seq_len 128 on the checkpoint's val split
    assert ev.condensation_path("RUN/eval", "val", 128, 100) == os.path.join("RUN/eval", "condensation_val_S128_N100.json")
    # the same setting of another checkpoint into the same folder: refused unless --overwrite
    other, _ = tiny_checkpoint(tmp_path, "qwen3")
    args = ["--ckpt", other, "--source", text_file, "--num_sequences", "2", "--seq_len", "16", "--out", str(out)]
    with pytest.raises(SystemExit, match="holds the measurement of .*--overwrite"):
        ev.main(args)
    ev.main(args + ["--overwrite"])
    assert json.loads((out / "condensation_docs_S16_N2.json").read_text())["model"] == other


def test_sequences_shorter_than_two_tokens_are_refused(tmp_path):
    with pytest.raises(ValueError, match="at least 2 tokens"):
        cond.condensation(ToyModel(), torch.zeros(3, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="at least 2 tokens"):
        cond.condensation(ToyModel(), iter([torch.zeros(3, 1, dtype=torch.long)]))
    with pytest.raises(SystemExit, match="--seq_len >= 2"):
        ev.main(["--ckpt", "never-loaded.pt", "--seq_len", "1"])


def test_a_nan_layer_never_ranks_into_rho_and_tau(tmp_path):
    avg = torch.stack([torch.full((3, 3), v) for v in (0.1, 0.2, float("nan"), 0.4)])
    stats = cond.layer_stats(avg, bins=0)
    assert math.isnan(stats["spearman"]) and math.isnan(stats["kendall"])
    assert ev._finite(stats)["spearman"] is None and ev._finite(stats)["kendall"] is None


def test_jsonl_line_without_text_names_file_and_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a b c"}\n\n{"title": "no text"}\n')
    with pytest.raises(ValueError, match=r"d\.jsonl line 3 is not a JSON object with a \"text\" string"):
        text_sources.read_words(str(path))
    path.write_text('{"text": "a b c"}\n{"text": 5}\n')
    with pytest.raises(ValueError, match="line 2"):
        text_sources.read_words(str(path))
    path.write_text('{"text": "a b c"}\nnot json\n')
    with pytest.raises(ValueError, match="line 2"):
        text_sources.read_words(str(path))


def test_checkpoint_that_is_a_directory_is_one_sentence(tmp_path):
    (tmp_path / "ckpt.pt").mkdir()
    with pytest.raises(SystemExit) as e:
        ev.main(["--ckpt", str(tmp_path / "ckpt.pt")])
    assert "ckpt.pt" in str(e.value) and "Traceback" not in str(e.value)


def test_help_lists_every_mode_with_an_example(capsys):
    with pytest.raises(SystemExit) as e:
        ev.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for mode, example in (("condensation", "python eval.py --ckpt out/ckpt.pt"),
                          ("tasks", "python eval.py --ckpt out/ckpt.pt --tasks paper"),
                          ("compare", "python eval.py --compare "),
                          ("lm_eval", "python eval.py --lm_eval run --model disperse-gpt")):
        assert f"\n  {mode}" in text and example in text, mode
    assert "--benchmarks" in text and "--lm_eval" in text


def test_wikitext_offline_is_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="use --source val or a local"):
        text_sources.wikitext_words()


@pytest.mark.slow
def test_train_probe_then_eval_end_to_end(tmp_path):
    """train.py logs the probe at every eval; eval.py then measures the checkpoint it wrote on its val split."""
    import subprocess
    import sys
    data_dir = tmp_path / "tinyset"
    data_dir.mkdir()
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        rng.integers(0, 50257, 4000).astype(np.uint16).tofile(data_dir / f"{split}.bin")
    out = tmp_path / "out"
    args = [f"--dataset={data_dir}", f"--out_dir={out}", "--max_iters=2", "--eval_interval=1", "--eval_iters=1",
            "--batch_size=2", "--block_size=32", "--n_layer=2", "--n_head=2", "--n_embd=16",
            "--gradient_accumulation_steps=1", "--probe_windows=2", "--device=cpu", "--compile=False"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = subprocess.run([sys.executable, "train.py", *args], cwd=root, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    probes = [r for r in records if "mean_cos" in r]
    assert len(probes) == 3  # evals at iters 0, 1, 2
    assert all(len(r["mean_cos"]) == 3 and "last_mean" in r and "spearman" in r for r in probes)
    ev.main(["--ckpt", str(out / "ckpt.pt"), "--num_sequences", "5", "--seq_len", "32", "--device", "cpu"])
    stats = json.loads((out / "eval" / "condensation_val_S32_N5.json").read_text())
    assert len(stats["mean_cos"]) == 3 and str(data_dir) in stats["source"]
