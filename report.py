"""
report.py: the CPU-scale runs of experiments.py as tables and figures: results.md and its PNGs from the run folders.

  python experiments.py report --out assets   # assets/results.md and the figures (report() here does the work)
  python experiments.py rerun ce_s1           # run_figures / committed_row / comparison: one run against its row

Every run folder with a condensation measurement (one of experiments.py's runs, or any other folder named
SETTING_sSEED) is grouped by (experiment, setting). A table cell is the mean over seeds ± the sample standard deviation
(ddof 1; 0 for one seed), and "vs CE" is 100 * (x / x_CE - 1) against main's CE-only setting. Profiles of models
of different depths are compared on the layer-fraction axis l/n: profile_distance(p, t) is the mean over p's hidden
states l = 0..n of |p_l - t(l/n)|, t linearly interpolated between its own fractions 0, 1/m, .., 1.

The per-run table at the end of results.md is the record of every run: its figures and the code version that trained
it (the commit experiments.py wrote into RUN/code.txt); under each table's title, the version of its rows, or each
version with its runs when they are not one. `report --keep assets/results.md` takes the rows of that
table for the runs that have no folder here, so that tables stay whole when only some runs were retrained (a kept row
has no logs: its training curves, step time, distillation term and probe at step 0 show as —, and the figures over
training leave its setting out).
"""

import json
import os
import re

import numpy as np

from experiments import (EXPERIMENTS, LOSS_DATA, TEACHERS, all_runs, command_line, condensation_json,
                         generalization_json, read_code)
from runlog import read_log


REFERENCE = ('main', 'ce')  # the research shape with CE only: the "vs CE" columns
LARGEST = ('size', 'size12x384')  # the largest model: the recovery section's target profile
SIZES = (('size', 'size4x128'), ('main', 'ce'), ('size', 'size8x256'), ('size', 'size12x384'))
SIZE_SHAPES = {'ce': (6, 192)}  # main's CE run is the 6 x 192 size; the others are named LxD
PER_LAYER = 'per-layer mean cos (l = 0..n)'  # the per-run table's last column


def load_run(folder, condensation):
    """What the report needs of one finished run (its condensation measurement at `condensation`; the loss on the
    second corpus when measured, else None)."""
    records = read_log(os.path.join(folder, 'log.jsonl'))  # a resumed run's superseded records dropped
    with open(condensation) as f:
        cond = json.load(f)
    gen = generalization_json(folder)
    gen_loss = json.load(open(gen))['loss'] if os.path.exists(gen) else None
    ms = sorted(r['ms_per_iter'] for r in records if 'ms_per_iter' in r)
    evals = [r for r in records if 'val_loss' in r]
    steps = [r for r in records if 'loss' in r]
    mean_cos = cond['mean_cos']  # hidden states 0 (embedding output) .. n (after the final norm)
    return {'name': os.path.basename(os.path.normpath(folder)), 'code': read_code(folder),
            'val_loss': evals[-1]['val_loss'],
            'gen_loss': gen_loss, 'iters': [r['iter'] for r in evals],
            'val_curve': [r['val_loss'] for r in evals], 'probe': [r['mean_cos'] for r in evals],
            'mean_cos': mean_cos, 'blocks_cos': sum(mean_cos[1:]) / (len(mean_cos) - 1),
            'inner_cos': sum(mean_cos[1:-1]) / (len(mean_cos) - 2),  # block outputs without the final norm's
            'spearman': cond['spearman'], 'kendall': cond['kendall'], 'ms_per_iter': ms[len(ms) // 2],
            'distill': next((r['distill'] for r in reversed(steps) if 'distill' in r), None),  # the last logged
            'lr_embedding': {r['iter']: r['lr_embedding'] for r in steps if 'lr_embedding' in r},
            'anisotropy': cond.get('anisotropy')}  # eval.py --anisotropy's block, when measured with it


def mean_std(values):
    """(mean, sample std over seeds; None for one seed, which has no spread); None values (not measured) are
    left out."""
    v = np.array([x for x in values if x is not None], dtype=float)
    if len(v) == 0:
        return float('nan'), float('nan')
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else None


def fmt(ms, digits=3):
    m, s = ms
    if m != m:  # NaN: nothing measured
        return '—'
    return f'{m:.{digits}f}' if s is None else f'{m:.{digits}f} ± {s:.{digits}f}'  # one seed: the seeds column says so


def rel(x, ref):
    return f'{100 * (x / ref - 1):+.1f}%' if ref and ref == ref and x == x else ''  # x != x: NaN, not measured


def profile_distance(profile, target):
    """Mean absolute difference of two per-layer profiles (hidden states 0..n and 0..m) on the layer-fraction
    axis l/n: the target, linearly interpolated, read at the profile's own fractions 0, 1/n, .., 1."""
    x = np.linspace(0, 1, len(profile))
    return float(np.mean(np.abs(np.asarray(profile) - np.interp(x, np.linspace(0, 1, len(target)), target))))


def run_figures(run):
    """One run's figures, as the per-run table shows them and `rerun` compares them: name -> number or None."""
    figures = {'val loss': run['val_loss'], f'{LOSS_DATA} loss': run['gen_loss'], 'Spearman rho': run['spearman'],
               'Kendall tau': run['kendall'], 'blocks mean cos': run['blocks_cos']}
    figures.update({f'l={l}': v for l, v in enumerate(run['mean_cos'])})
    return figures


def per_run_rows(results_md):
    """The per-run table of a results.md that report() wrote: [{column: cell}] (tables written before the code
    column have none: their rows read as code '—')."""
    if not os.path.exists(results_md):
        raise SystemExit(f"No {results_md} to read runs from: write it with `python experiments.py report --out "
                         f"{os.path.dirname(results_md) or '.'}`.")
    lines = open(results_md).read().splitlines()
    start = next((i for i, l in enumerate(lines) if l.startswith('| run | experiment |')), None)
    if start is None:
        raise SystemExit(f"{results_md} has no per-run table (| run | experiment | ...).")
    cols = [c.strip() for c in lines[start].strip('|').split('|')]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith('|'):
            break
        rows.append(dict(zip(cols, (c.strip() for c in line.strip('|').split('|')))))
    return rows


def row_figures(cells):
    """One per-run row's cells -> {figure: number or None}, as run_figures names them."""
    number = lambda c: None if c == '—' else float(c)  # noqa: E731
    figures = {k: number(cells[k]) for k in ('val loss', f'{LOSS_DATA} loss', 'Spearman rho', 'Kendall tau',
                                              'blocks mean cos')}
    figures.update({f'l={l}': float(v) for l, v in enumerate(cells[PER_LAYER].split())})
    return figures


def kept_run(cells):
    """A run of a per-run row, in load_run's form; what only the run folder holds (logs, probe) is None."""
    f = row_figures(cells)
    mean_cos = [float(v) for v in cells[PER_LAYER].split()]
    code = cells.get('code', '—')  # a row written before the code column has none
    return {'name': cells['run'], 'code': None if code == '—' else code, 'val_loss': f['val loss'],
            'gen_loss': f[f'{LOSS_DATA} loss'], 'iters': None, 'val_curve': None, 'probe': None, 'mean_cos': mean_cos,
            'blocks_cos': f['blocks mean cos'], 'inner_cos': sum(mean_cos[1:-1]) / (len(mean_cos) - 2),  # (4 digits)
            'spearman': f['Spearman rho'], 'kendall': f['Kendall tau'], 'ms_per_iter': None, 'distill': None,
            'lr_embedding': {}, 'anisotropy': None}


def collect(runs_dir, keep=None):
    """({(experiment, setting): [run]}, {(experiment, setting): [train.py command]}) of the finished runs, and of
    the runs in keep's per-run table (a results.md) that have no finished folder here."""
    groups, commands = {}, {}
    known = {os.path.normpath(r[3]): r for r in all_runs(runs_dir)}
    for name in sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []:
        folder = os.path.normpath(os.path.join(runs_dir, name))
        cond = condensation_json(folder)
        if not os.path.exists(cond):
            continue
        # a folder of this file's recipes, or any other run folder named SETTING_sSEED (or just SETTING)
        experiment, setting, _, _, args = known.get(folder, ('other', re.sub(r'_s\d+$', '', name), 0, folder, None))
        groups.setdefault((experiment, setting), []).append(load_run(folder, cond))
        if args:
            commands.setdefault((experiment, setting), []).append(command_line(args))
    here = {r['name'] for runs in groups.values() for r in runs}
    for cells in per_run_rows(keep) if keep else []:
        if cells['run'] not in here:
            setting = re.sub(r'_s\d+$', '', cells['run'])
            groups.setdefault((cells['experiment'], setting), []).append(kept_run(cells))
    order = list(EXPERIMENTS) + ['other']  # experiments in their order, then settings and seeds by name
    groups = {k: sorted(v, key=lambda r: r['name']) for k, v in
              sorted(groups.items(), key=lambda kv: (order.index(kv[0][0]) if kv[0][0] in order else len(order), kv[0][1]))}
    return groups, commands


def code_line(runs):
    """Which code version trained a table's runs (RUN/code.txt): one line, naming each version's runs when the table
    mixes versions."""
    by = {}
    for r in {r['name']: r for r in runs}.values():  # a run in two rows of one table (a teacher) counts once
        by.setdefault(r['code'] or 'not recorded', []).append(r['name'])
    if len(by) == 1:
        return [f'Code version: {next(iter(by))}.', '']
    return ['Code versions (not one): ' + '; '.join(f'{v}: {", ".join(sorted(names))}' for v, names in by.items())
            + '.', '']


def save_figure(fig, out, name):
    fig.tight_layout()
    fig.savefig(os.path.join(out, name))
    import matplotlib.pyplot as plt
    plt.close(fig)
    return [f'![]({name})', '']


def profile_figure(out, name, title, rows, fraction=False):
    """Per-layer mean cosine of each (label, runs), the mean over seeds with a min..max band; against the hidden
    state index, or (fraction) the layer fraction l/n, which puts models of different depths on one axis."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=110)
    for label, runs in rows:
        m = np.array([r['mean_cos'] for r in runs])
        x = np.linspace(0, 1, m.shape[1]) if fraction else np.arange(m.shape[1])
        line, = ax.plot(x, m.mean(0), marker='o', ms=3, label=f'{label} ({len(runs)})')
        if len(runs) > 1:
            ax.fill_between(x, m.min(0), m.max(0), color=line.get_color(), alpha=0.2)
    ax.set(xlabel='layer fraction l/n (0 = embeddings, 1 = after final norm)' if fraction else
           'hidden state (0 = embeddings, n = after final norm)', ylabel='mean cosine similarity',
           title=f'{title}: per-layer mean cosine (band: seed min..max)')
    ax.title.set_fontsize(8)
    ax.legend(fontsize=7, loc='upper left')
    return save_figure(fig, out, name)


def setting_table(groups, out, experiment, title):
    """The table of one experiment's settings (mean ± std over seeds, relative to main's CE) and its figure."""
    rows = [(s, runs) for (e, s), runs in groups.items() if e == experiment or (experiment == 'variants' and
                                                                              (e, s) in (REFERENCE, ('main', 'disp0.1')))]
    if not rows:
        return []
    ce = groups.get(REFERENCE)
    ref = {k: mean_std(r[k] for r in ce)[0] if ce else None
           for k in ('val_loss', 'gen_loss', 'blocks_cos', 'inner_cos', 'ms_per_iter')}
    n = len(rows[0][1][0]['mean_cos']) - 1
    lines = [f'## {title}', '', *code_line([r for _, runs in rows for r in runs]),
             f'| setting | seeds | val loss | vs CE | {LOSS_DATA} loss | vs CE | blocks mean cos | vs CE | 1..n-1 | vs CE | '
             'Spearman rho | Kendall tau | ms/step | vs CE | ' + ' | '.join(f'l={l}' for l in range(n + 1)) + ' |',
             '|---' * (14 + n + 1) + '|']
    for setting, runs in rows:
        m = {k: mean_std(r[k] for r in runs) for k in ref}
        per_layer = np.mean([r['mean_cos'] for r in runs], axis=0) if len({len(r['mean_cos']) for r in runs}) == 1 \
            else []
        lines.append(f'| {setting} | {len(runs)} | ' + ' | '.join(
            f'{fmt(m[k])} | {rel(m[k][0], ref[k])}' for k in ('val_loss', 'gen_loss', 'blocks_cos', 'inner_cos')) +
            f' | {fmt(mean_std(r["spearman"] for r in runs), 2)} | {fmt(mean_std(r["kendall"] for r in runs), 2)} | '
            f'{fmt((m["ms_per_iter"][0], None), 0)} | {rel(m["ms_per_iter"][0], ref["ms_per_iter"])} | '
            + ' | '.join(f'{v:.3f}' for v in per_layer) + ' |')
    return lines + [''] + profile_figure(out, f'{experiment}_mean_cos.png', title, rows)


def per_run_table(groups):
    """Every finished run's own figures (no means), so that a rerun is compared run by run (`rerun`)."""
    lines = ['## Per run', '', 'Every run\'s own figures; `python experiments.py rerun NAME` retrains one run into a '
             'temporary folder and compares it with its row here.', '',
             f'| run | experiment | code | val loss | {LOSS_DATA} loss | Spearman rho | Kendall tau | blocks mean cos | '
             f'{PER_LAYER} |', '|---' * 9 + '|']
    for (experiment, _), runs in groups.items():  # in collect's order: experiments, settings, seeds
        for r in runs:
            gen = '—' if r['gen_loss'] is None else f'{r["gen_loss"]:.4f}'
            lines.append(f'| {r["name"]} | {experiment} | {r["code"] or "—"} | {r["val_loss"]:.4f} | {gen} | '
                         f'{r["spearman"]:+.3f} | {r["kendall"]:+.3f} | {r["blocks_cos"]:.4f} | '
                         + ' '.join(f'{v:.4f}' for v in r['mean_cos']) + ' |')
    return lines + ['']


def committed_row(results_md, name):
    """The figures of run `name` in the per-run table of a results.md that report() wrote: name -> number."""
    cells = next((c for c in per_run_rows(results_md) if c['run'] == name), None)
    if cells is None:
        raise SystemExit(f"{results_md} has no per-run row for {name}: it was not among the reported runs.")
    return row_figures(cells)


def comparison(name, committed, rerun):
    """Two columns, the committed figures and the rerun's, with their difference."""
    lines = [f'{name}: {"figure":<16} {"committed":>10} {"rerun":>10} {"difference":>11}']
    for k in dict.fromkeys(list(committed) + list(rerun)):
        a, b = committed.get(k), rerun.get(k)
        cell = lambda v: f'{v:>10.4f}' if v is not None else f'{"—":>10}'  # noqa: E731
        diff = f'{b - a:>+11.4f}' if a is not None and b is not None else f'{"—":>11}'
        lines.append(f'{" " * len(name)}  {k:<16} {cell(a)} {cell(b)} {diff}')
    return '\n'.join(lines)


def mlp_section(groups, out):
    """MLP width against condensation at initialisation and after training (seed 1), with a two-panel figure."""
    import matplotlib.pyplot as plt
    from condensation import kendall, spearman
    mlp = sorted(((int(s[3:]), runs[0]) for (e, s), runs in groups.items() if e == 'mlp'), key=lambda t: t[0])
    ce = groups.get(REFERENCE)
    if not (mlp and ce):
        return []
    widths = sorted(mlp + [(768, ce[0])])  # main's CE seed-1 run is width 4 x 192 = 768
    lines = ['## MLP width and condensation (seed 1)', '', *code_line([r for _, r in widths]),
             'Init: the probe at step 0 (16 val windows); trained: the probe at the last step (same '
             'windows) and eval.py (100 windows).', '',
             '| MLP width | width / d | rho init | tau init | rho trained (probe) | tau trained (probe) | '
             'rho trained (eval) | tau trained (eval) | val loss | per-layer mean cos, trained (eval) |',
             '|---|---|---|---|---|---|---|---|---|---|']
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4), dpi=110, sharey=True)
    for k, (w, r) in enumerate(widths):
        layers = list(range(len(r['mean_cos'])))
        probe = ['—'] * 4  # a kept row (report --keep) has no probe
        if r['probe']:
            init, last = r['probe'][0], r['probe'][-1]
            probe = [f'{spearman(layers, init):+.2f}', f'{kendall(layers, init):+.2f}', f'{spearman(layers, last):+.2f}',
                     f'{kendall(layers, last):+.2f}']
            axes[0].plot(layers, init, marker='o', ms=3, color=f'C{k}', label=f'{w}')  # a width's color in both
        lines.append(f'| {w} | {w / 192:.2f} | ' + ' | '.join(probe) + f' | {r["spearman"]:+.2f} | '
                     f'{r["kendall"]:+.2f} | {r["val_loss"]:.3f} | ' + ' '.join(f'{v:.2f}' for v in r['mean_cos']) + ' |')
        axes[1].plot(layers, r['mean_cos'], marker='o', ms=3, color=f'C{k}', label=f'{w}')
    axes[0].set(title='at initialisation', xlabel='hidden state', ylabel='mean cosine')
    axes[1].set(title='after 300 steps', xlabel='hidden state')
    axes[1].legend(title='MLP width', fontsize=7, loc='upper left')
    return lines + [''] + save_figure(fig, out, 'mlp_width.png')


def over_training_section(groups, out):
    """The probe's per-layer mean cosine against the step (one panel per main setting) and the val-loss curves."""
    import matplotlib.pyplot as plt
    shown = [s for s in ('ce', 'disp0.1', 'disp1.0', 'noise', 'forget')  # the settings whose every run has its log
             if ('main', s) in groups and all(r['probe'] for r in groups[('main', s)])]
    if not shown:
        return []
    fig, axes = plt.subplots(1, len(shown), figsize=(2.6 * len(shown), 3.0), dpi=110, sharey=True, squeeze=False)
    for ax, s in zip(axes[0], shown):
        runs = groups[('main', s)]
        probe = np.mean([r['probe'] for r in runs], axis=0)  # [evals, layers]
        colors = plt.cm.viridis(np.linspace(0, 1, probe.shape[1]))
        for l in range(probe.shape[1]):
            ax.plot(runs[0]['iters'], probe[:, l], color=colors[l], label=f'l={l}')
        ax.set(title=s, xlabel='step')
    axes[0][0].set_ylabel('mean cosine (probe)')
    axes[0][-1].legend(fontsize=6, loc='upper right')
    lines = ['## Condensation over training', ''] + save_figure(fig, out, 'over_training.png')
    fig, ax = plt.subplots(figsize=(5.5, 3.4), dpi=110)
    for s in shown:
        curves = np.array([r['val_curve'] for r in groups[('main', s)]])
        ax.plot(groups[('main', s)][0]['iters'][1:], curves.mean(0)[1:], marker='o', ms=3, label=s)
    ax.set(xlabel='step', ylabel='val loss', title='val loss (mean over seeds)')
    ax.legend(fontsize=7, loc='upper left')
    return lines + save_figure(fig, out, 'val_loss.png')


def summary_row(label, runs, extra=()):
    """| label... | seeds | val loss | LOSS_DATA loss | rho | tau | blocks mean cos | extra... |: means ± std over
    seeds. label: one cell or a list of cells."""
    cells = [label] if isinstance(label, str) else list(label)
    cells += [str(len(runs)), fmt(mean_std(r['val_loss'] for r in runs)), fmt(mean_std(r['gen_loss'] for r in runs)),
              fmt(mean_std((r['spearman'] for r in runs)), 2), fmt(mean_std((r['kendall'] for r in runs)), 2),
              fmt(mean_std(r['blocks_cos'] for r in runs)), *extra]
    return '| ' + ' | '.join(cells) + ' |'


SUMMARY = f'seeds | val loss | {LOSS_DATA} loss | Spearman rho | Kendall tau | blocks mean cos |'


def size_section(groups, out):
    """CE-only models of four sizes: rho, tau, losses and the profile on the layer-fraction axis, and its figure."""
    rows = [(key, groups[key]) for key in SIZES if key in groups]
    if not rows:
        return []
    lines = ['## Model size (CE only)', '', *code_line([r for _, runs in rows for r in runs]),
             'Depth and width grow together (32-wide heads); block parameters '
             '12 L d^2. The profile: per-layer mean cosine at l/n = 0, 0.25, 0.5, 0.75, 1 (interpolated).', '',
             f'| size | block params | {SUMMARY} l/n=0 | 0.25 | 0.5 | 0.75 | 1 |', '|---' * 13 + '|']
    labels = []
    for (_, setting), runs in rows:
        L, d = SIZE_SHAPES.get(setting) or map(int, re.match(r'size(\d+)x(\d+)', setting).groups())
        profile = np.mean([np.interp([0, .25, .5, .75, 1], np.linspace(0, 1, len(r['mean_cos'])), r['mean_cos'])
                           for r in runs], axis=0)
        lines.append(summary_row([f'{L} x {d}', f'{12 * L * d * d / 1e6:.2f}M'], runs, [f'{v:.3f}' for v in profile]))
        labels.append((f'{L} x {d}', runs))
    return lines + [''] + profile_figure(out, 'size_mean_cos.png', 'Model size, CE only', labels, fraction=True)


def distill_section(groups):
    """Students with CE only, dispersion, distillation from each teacher, distillation + dispersion, and the
    teachers: losses, geometry and the distance of each profile to each teacher's."""
    teachers = {}
    for name, folder in TEACHERS.items():
        run = next((r for runs in groups.values() for r in runs if r['name'] == folder), None)
        if run is not None:
            teachers[name] = run
    rows = [(label, groups[key]) for label, key in (
        ('student, CE only', REFERENCE), ('student, dispersion 1.0', ('main', 'disp1.0')),
        *((f'student, distilled from {t}', ('distill', f'distill_{t}')) for t in TEACHERS),
        ('student, distilled from ce12x384 + dispersion 1.0', ('distill', 'distill_ce12x384_disp1.0')))
        if key in groups]
    if not any(label.startswith('student, distilled') for label, _ in rows):
        return []
    lines = ['## Distillation', '', *code_line([r for _, runs in rows for r in runs] + list(teachers.values())),
             'The research-shape student (6 x 192), T = 1, coefficient 1 (experiments.py). '
             'Profile distance: mean |difference| of the per-layer mean cosine on the layer-fraction axis '
             '(profile_distance), to each teacher\'s; distill: the T^2 KL term at the last logged step.', '',
             f'| model | {SUMMARY} ' + ' | '.join(f'distance to {t}' for t in teachers) + ' | distill |',
             '|---' * (8 + len(teachers)) + '|']
    for label, runs in rows + [(f'teacher {t} ({run["name"]})', [run]) for t, run in teachers.items()]:
        dist = [fmt(mean_std(profile_distance(r['mean_cos'], t['mean_cos']) for r in runs)) for t in teachers.values()]
        lines.append(summary_row(label, runs, dist + [fmt(mean_std(r['distill'] for r in runs))]))
    return lines + ['']


def recovery_section(groups):
    """Every small-model setting's distance to the largest model's profile (layer-fraction axis) and rho."""
    if LARGEST not in groups:
        return []
    large = groups[LARGEST]
    target = np.mean([r['mean_cos'] for r in large], axis=0)
    rho = mean_std(r['spearman'] for r in large)[0]
    lines = ['## Recovery: distance to the largest model\'s profile', '',
             *code_line([r for runs in groups.values() for r in runs]),
             f'The target: {LARGEST[1]}\'s mean per-layer profile over {len(large)} seed(s), rho {rho:+.2f}. Profile '
             'distance: mean |difference| on the layer-fraction axis (the target interpolated at each run\'s l/n), '
             'per run, then mean ± std over seeds.', '',
             '| experiment | setting | seeds | profile distance | Spearman rho | rho - target rho |', '|---' * 6 + '|']
    for (experiment, setting), runs in groups.items():
        if (experiment, setting) == LARGEST:
            continue
        r_rho = mean_std(r['spearman'] for r in runs)
        lines.append(f'| {experiment} | {setting} | {len(runs)} | '
                     f'{fmt(mean_std(profile_distance(r["mean_cos"], target) for r in runs))} | {fmt(r_rho, 2)} | '
                     f'{r_rho[0] - rho:+.2f} |')
    return lines + ['']


def longer_section(groups):
    """300 against 900 steps, CE and lambda 1.0: does the val-loss gain survive?"""
    pairs = [(f'{s}, {steps} steps', key) for s, steps, key in (
        ('CE', 300, REFERENCE), ('lambda 1.0', 300, ('main', 'disp1.0')),
        ('CE', 900, ('longer', 'ce_900')), ('lambda 1.0', 900, ('longer', 'disp1.0_900')))]
    rows = [(label, groups[key]) for label, key in pairs if key in groups]
    if not any(key[0] == 'longer' for _, key in pairs if key in groups):
        return []
    ce = {steps: groups.get(key) for steps, key in ((300, REFERENCE), (900, ('longer', 'ce_900')))}
    lines = ['## Longer training (900 steps)', '', *code_line([r for _, runs in rows for r in runs]),
             f'| run | {SUMMARY} val loss vs CE at the same length |',
             '|---' * 8 + '|']
    for label, runs in rows:
        ref = ce[300 if '300' in label else 900]
        loss = mean_std(r['val_loss'] for r in runs)[0]
        lines.append(summary_row(label, runs, [rel(loss, mean_std(r['val_loss'] for r in ref)[0] if ref else None)]))
    return lines + ['']


def forget_section(groups):
    """Active forgetting against CE, with the embedding learning rate the run logged around its reset."""
    if ('main', 'forget') not in groups:
        return []
    rows = [(label, groups[key]) for label, key in (('CE', REFERENCE), ('active forgetting', ('main', 'forget')))
            if key in groups]
    lines = ['## Active forgetting', '', *code_line([r for _, runs in rows for r in runs]),
             'Re-drawn once after step 200 of 300, the authors\' schedule for the '
             'embedding (disperse.forget_lr); embedding lr: the learning rate the run logged for it at step 200 and at '
             'the first logged step after the reset (— : a run from before that schedule).', '',
             f'| setting | {SUMMARY} embedding lr at 200 / after the reset |', '|---' * 8 + '|']
    for label, runs in rows:
        lrs = runs[0]['lr_embedding']
        after = min((i for i in lrs if i > 200), default=None)
        at = (f'{lrs[200]:.2e} / {lrs[after]:.2e} (step {after})' if 200 in lrs and after else '—'
              ) if label != 'CE' else ''
        lines.append(summary_row(label, runs, [at]))
    return lines + ['']


def anisotropy_summary(mean_cos, a):
    """One measurement's anisotropy.py figures averaged over the blocks (hidden states 1..n): raw and standardized
    mean cosine with their rho, cross-context cosine, within minus cross, top-2 share, TwoNN -> table cells."""
    blocks = lambda v: float(np.mean([x for x in v[1:] if x is not None])) if any(x is not None for x in v[1:]) else None
    twonn = blocks(a['twonn'])
    return [f'{blocks(mean_cos):.3f}', f'{blocks(a["std_cos"]):.3f}', f'{blocks(a["cross_cos"]):.3f}',
            f'{blocks(a["within_minus_cross"]):+.3f}', f'{blocks(a["rogue_share"]["2"]):.2f}',
            '—' if twonn is None else f'{twonn:.1f}']


ANISOTROPY_HEAD = ('| run | raw cos | std cos | raw rho | std rho | cross | within - cross | top-2 share | TwoNN |\n'
                   + '|---' * 9 + '|')


def anisotropy_section(groups):
    """Whether the raw cosine survives standardization (eval.py --anisotropy), for the runs measured with it."""
    runs = [r for rs in groups.values() for r in rs if r.get('anisotropy')]
    if not runs:
        return []
    lines = ['## Rogue dimensions and anisotropy', '', *code_line(runs),
             'Means over the blocks (hidden states 1..n) of eval.py '
             '--anisotropy: raw and standardized (every dimension z-scored over the same tokens) mean cosine, the '
             'mean cosine between tokens of different sequences, within-sequence minus it, the share of the squared '
             'norm in the 2 largest dimensions, the TwoNN intrinsic dimension.', '', ANISOTROPY_HEAD]
    for r in runs:
        a = r['anisotropy']
        cells = anisotropy_summary(r['mean_cos'], a)
        lines.append(f'| {r["name"]} | {cells[0]} | {cells[1]} | {r["spearman"]:+.2f} | {a["std_spearman"]:+.2f} | '
                     + ' | '.join(cells[2:]) + ' |')
    return lines + ['']


def report(runs_dir, out, keep=None):
    """Group the finished runs (and keep's per-run rows of runs with no folder here) by setting, average over seeds,
    write out/results.md and the PNG figures."""
    import matplotlib
    matplotlib.use('Agg')
    groups, commands = collect(runs_dir, keep)
    if not groups:
        raise SystemExit(f"No finished runs in {runs_dir}: run `python experiments.py run` first.")
    os.makedirs(out, exist_ok=True)
    lines = [f'# Results of `python experiments.py report --runs {runs_dir}' + (f' --keep {keep}' if keep else '') + '`', '',
             'Val loss: the last eval (80 fixed windows of 128 tokens of the val split); '
             f'{LOSS_DATA} loss: the same rule on the second held-out corpus (data/{LOSS_DATA}, modern English news). '
             'Mean cosine: eval.py on 100 val windows of 128 tokens; "blocks" is the mean over hidden states 1..n '
             '(every block output, the last after the final norm), the ones the dispersion loss acts on; "1..n-1" '
             'leaves out the last, the final norm\'s output. mean ± std over seeds; — : not measured.', '']
    lines += setting_table(groups, out, 'main', 'Dispersion against the baselines')
    lines += setting_table(groups, out, 'variants', 'The loss variants (lambda 0.1)')
    lines += setting_table(groups, out, 'other', 'Other runs')
    lines += mlp_section(groups, out)
    lines += over_training_section(groups, out)
    lines += size_section(groups, out)
    lines += distill_section(groups)
    lines += recovery_section(groups)
    lines += longer_section(groups)
    lines += forget_section(groups)
    lines += anisotropy_section(groups)
    lines += per_run_table(groups)
    lines += ['## Commands', ''] + [f'    {c}' for cs in commands.values() for c in cs] + ['']
    with open(os.path.join(out, 'results.md'), 'w') as f:
        f.write('\n'.join(lines))
    print('\n'.join(lines))
    print(f'wrote {out}/results.md and its figures')
