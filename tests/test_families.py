"""families.py: the authors' family table, the family and paired figures, from result files with known curves.

Run: python -m pytest -q tests/test_families.py
"""
import json

import numpy as np
import pytest

import condensation as cond
import eval as ev
import families


def result(tmp_path, model, curve, n_params, model_type=None):
    idx = list(range(len(curve)))
    stats = {"mean_cos": curve, "spearman": cond.spearman(curve, idx), "kendall": cond.kendall(curve, idx),
             "model": model, "n_params": n_params}
    if model_type:
        stats["model_type"] = model_type
    path = tmp_path / (model.replace("/", "_") + ".json")
    path.write_text(json.dumps(stats))
    return str(path)


def test_family_table_has_the_authors_rows(tmp_path, capsys):
    up = [0.1, 0.2, 0.4, 0.5, 0.7, 0.9, 0.95]  # 7 entries (6 blocks): last half = last 3
    down = [0.9, 0.5, 0.3, 0.2, 0.25]           # 5 entries: last half = last 2
    paths = [result(tmp_path, "Qwen/Qwen3-8B", down, 8e9), result(tmp_path, "Qwen/Qwen3-0.6B", up, 6e8),
             result(tmp_path, "tiny", [0.1, 0.3], 1e6, model_type="llama")]
    families.main(["family", *paths, "--out", str(tmp_path / "f")])
    md = (tmp_path / "f" / "families.md").read_text()
    assert md == capsys.readouterr().out.split("wrote")[0].rstrip("\n") + "\n"
    lines = md.splitlines()
    qwen3 = lines[lines.index("### qwen3"):]
    assert qwen3[2] == "| metric | Qwen3-0.6B | Qwen3-8B |"  # small to large
    rows = {l.split(" | ")[0][2:]: l.split(" | ")[1:] for l in qwen3[4:12]}
    assert rows["last 1 mean"] == ["0.9500", "0.2500 |"]
    assert rows["last 3 mean"] == [f"{(0.7 + 0.9 + 0.95) / 3:.4f}", f"{(0.3 + 0.2 + 0.25) / 3:.4f} |"]
    assert rows["last 5 mean"][1] == f"{np.mean(down):.4f} |"  # 5 entries: all of them
    assert rows["last half mean"] == [f"{(0.7 + 0.9 + 0.95) / 3:.4f}", f"{(0.2 + 0.25) / 2:.4f} |"]
    assert rows["spearman"][0] == "1.0000"
    # rho of down: ranks (5, 4, 3, 1, 2) against (1..5): 1 - 6 * (16 + 4 + 0 + 9 + 9) / 120 = -0.9
    assert rows["spearman"][1] == "-0.9000 |"
    assert "### llama" in md  # not in a Fig. 2 family: grouped by its model_type


def test_family_figure_one_line_per_family_against_size(tmp_path):
    paths = [result(tmp_path, "gpt2-xl", [0.5, 0.4, 0.3], 1.5e9), result(tmp_path, "gpt2", [0.1, 0.2, 0.3], 1.2e8),
             result(tmp_path, "bigscience/bloom-560m", [0.1, 0.3, 0.2], 5.6e8)]
    fig = families.plot_family(families.load(paths), str(tmp_path / "f.png"))
    rho = fig.axes[0]
    lines = {l.get_label(): l for l in rho.get_lines() if not l.get_label().startswith("_")}
    assert set(lines) == {"gpt2", "bloom"}
    assert list(lines["gpt2"].get_xdata()) == [1.2e8, 1.5e9] and list(lines["gpt2"].get_ydata()) == [1.0, -1.0]
    assert rho.get_xscale() == "log"


def test_paired_figure_and_bad_pair(tmp_path):
    a = result(tmp_path, "Qwen/Qwen2.5-Math-1.5B", [0.1, 0.2, 0.3], 1.5e9)
    b = result(tmp_path, "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", [0.3, 0.2, 0.1], 1.8e9)
    families.main(["paired", f"{a}:{b}", "--out", str(tmp_path / "p")])
    assert (tmp_path / "p" / "paired.png").exists() and "Qwen2.5-Math-1.5B" in (tmp_path / "p" / "paired.md").read_text()
    fig = families.plot_paired([tuple(families.load([a, b]))], str(tmp_path / "q.png"))
    base = [l for l in fig.axes[0].get_lines() if l.get_label() == "base"][0]
    other = [l for l in fig.axes[0].get_lines() if l.get_label() == "distilled / other"][0]
    assert list(base.get_ydata()) == [1.0] and list(other.get_ydata()) == [-1.0]
    with pytest.raises(SystemExit, match="BASE.json:OTHER.json"):
        families.main(["paired", a, "--out", str(tmp_path / "p")])


def test_plan_lists_every_model_of_both_figures(capsys):
    families.main(["plan"])
    out = capsys.readouterr().out
    for m in [m for ms in families.FIG2.values() for m in ms] + [m for p in families.FIG5 for m in p]:
        assert m in out
    line = [l for l in out.splitlines() if l.startswith("Qwen/Qwen2.5-72B ")][0].split()
    assert line[1:4] == ["72.70B", "145.4", "290.8"]  # 2 and 4 bytes per parameter


def test_run_fig5_reuses_results_already_measured(tmp_path, monkeypatch):
    import os
    for i, (a, b) in enumerate(families.FIG5):
        for m, curve in ((a, [0.1, 0.2, 0.3 + i / 10]), (b, [0.3, 0.2, 0.1])):
            d = tmp_path / os.path.basename(m)
            d.mkdir()
            (d / "condensation_wikitext103_S512_N100.json").write_text(json.dumps(
                {"mean_cos": curve, "spearman": cond.spearman(curve, [0, 1, 2]), "kendall": 0.0, "model": m,
                 "n_params": 1e9}))
    monkeypatch.setattr(ev, "main", lambda argv: pytest.fail(f"measured again: {argv}"))
    families.main(["run", "fig5", "--out", str(tmp_path)])
    md = (tmp_path / "paired.md").read_text()
    assert (tmp_path / "paired.png").exists() and "DeepSeek-R1-Distill-Qwen-32B" in md and "Qwen2.5-Math-7B" in md
