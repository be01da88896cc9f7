"""
experiments.py: the CPU-scale reproduction of the paper's findings (arXiv 2602.00217), as runs anyone can redo.

  python experiments.py list                  # every run's train.py command line, and whether it is done
  python experiments.py run --jobs 2          # train what has no result yet (two at a time, one thread each),
                                              # resume what was interrupted, measure condensation at the end
  python experiments.py run --only main       # one experiment (main, variants, mlp, size, longer, distill),
                                              # setting (ce, distill_ce12x384) or run (ce_s1)
  python experiments.py report                # tables (results.md) and figures (PNG) from the run folders
  python experiments.py rerun ce_s1           # retrain one run into a temporary folder, measure it, and print its
                                              # figures beside its row of assets/results.md

Every run is `python train.py config/research.py [config/dispersion.py] --key=value ... --seed=S --out_dir=...`
(the research shape: 6 layers x 192 on Shakespeare, 300 steps of 8 x 128 tokens), followed by
`python eval.py --ckpt RUN/ckpt.pt --num_sequences 100 --seq_len 128 --out RUN/eval` (per-layer mean cosine on
100 val windows) and `python eval.py --ckpt RUN/ckpt.pt --loss_data lee_news --out RUN/eval` (the loss on a second
held-out corpus, modern English news: data/lee_news). A run is done when both RUN/eval/condensation_val_S128_N100.json
and RUN/eval/loss_lee_news.json exist; a finished run that lacks one is measured, not retrained; a run with a
checkpoint short of max_iters continues with --init_from=resume, so a later invocation finishes what an earlier
one could not.

The experiments (RESULTS.md):
  main      CE only; CE + angular_spread at lambda 0.1 and 1.0; noisy embeddings (alpha 1); active forgetting
            (once, after step 200 of 300: the paper's 1000 of 1526 steps is 2/3 of training; the authors' embedding
            schedule, disperse.forget_lr). Seeds 1, 2, 3.
  variants  orthogonalization, decorrelation, l2_repel at lambda 0.1 (angular_spread at 0.1 is in main). Seed 1.
  mlp       CE only with MLP width 16 / 64 / 256 / 1024 (the paper's Fig. 3 widths 64..4096 over d = 768, here
            over d = 192; 768 = 4 x 192 is main's CE run). Seed 1.
  size      CE only at 12 x 384, 4 x 128, 8 x 256 (6 x 192 is main's CE run). Seeds 1, 2, 3.
  longer    CE and lambda 1.0 for 900 steps (3x). Seeds 1, 2.
  distill   the research shape distilled (T = 1, coefficient 1) from size12x384_s1 and from disp1.0_s1, seeds 1-3;
            from size12x384_s1 with dispersion at lambda 1.0, seed 1. A run starts once its teacher has finished.
"""

import argparse
import functools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from runlog import read_log

ROOT = os.path.dirname(os.path.abspath(__file__))
SHAPE = ['config/research.py']
DISPERSION = ['config/dispersion.py']
SEEDS = (1, 2, 3)
SEQ_LEN = 128  # the research shape's context
NUM_SEQUENCES = 100  # val windows per condensation measurement, as the paper's 100 sequences
# l2_repel on raw hidden states: exp(-|z_i - z_j|^2 / tau) underflows at tau = 1 (disperse.py); tau = F = 192
# keeps the distances on the order of one
L2_TAU = 192.0
# the second held-out corpus, of another domain: modern English news (data/lee_news/prepare.py, from gensim's Lee
# corpus), every run's loss on it by train.py's val-loss rule (eval.py --loss_data)
LOSS_DATA = 'lee_news'
DATASET = 'shakespeare'  # config/research.py's dataset

# Distillation: T = 1 and coefficient 1. With the T^2 factor the soft term's gradient is on the CE's scale, so
# coefficient 1 weighs the soft and the hard targets equally, and the CE term is the baselines' unchanged. Hinton
# et al. (2015) raise T to expose a confident teacher's ranking of the non-argmax tokens; ours are far from
# confident: measured on ce_s1 at step 250 (16 val windows), the soft targets have entropy 5.86 nats at T = 1 and
# 10.05 at T = 2, of ln 50257 = 10.82 (top-1 probability 18% and 0.6%). At T = 2 the term would weigh the logits of
# the whole vocabulary nearly uniformly (Hinton's logit-matching limit) rather than the tokens the teacher
# predicts, so T = 1 (the plain KL to the teacher's distribution). {runs} is the runs folder (all_runs fills it in).
TEACHERS = {'ce12x384': 'size12x384_s1', 'disp1.0': 'disp1.0_s1'}  # setting name -> the teacher's run folder


def distill_args(teacher):
    return [f'--teacher={{runs}}/{teacher}/ckpt.pt', '--distill_coeff=1.0', '--distill_temperature=1.0']


# experiment -> [(setting, extra train.py arguments)]; every setting runs with each of its seeds
EXPERIMENTS = {
    'main': [('ce', []),
             ('disp0.1', DISPERSION),
             ('disp1.0', DISPERSION + ['--dispersion_coeff=1.0']),
             ('noise', ['--noise_alpha=1.0']),
             # the authors' active forgetting (disperse.forget_lr): the embedding's own peak lr is the body's,
             # 1e-3, as theirs is (5e-5 = 5e-5, their GPT-2 run); 300 // 200 = 1: its curve is not restarted
             ('forget', ['--forget_every=200', '--forget_lr=1e-3'])],
    'variants': [('orthogonalization', DISPERSION + ['--dispersion=orthogonalization']),
                 ('decorrelation', DISPERSION + ['--dispersion=decorrelation']),
                 ('l2_repel', DISPERSION + ['--dispersion=l2_repel', f'--dispersion_tau_l2={L2_TAU}'])],
    'mlp': [(f'mlp{w}', [f'--n_inner={w}']) for w in (16, 64, 256, 1024)],
    # CE only at four sizes, depth and width growing together with 32-wide heads as in GPT-2's family (6 x 192 is
    # main's CE run): 12 L d^2 = 0.79M / 2.65M / 6.3M / 21.2M block parameters, 27x from the smallest to the
    # largest. The largest comes first: it is the distillation teacher.
    'size': [(f'size{l}x{d}', [f'--n_layer={l}', f'--n_head={d // 32}', f'--n_embd={d}'])
             for l, d in ((12, 384), (4, 128), (8, 256))],
    # 3x longer training (900 steps, warmup and decay stretched with it): does lambda 1.0's val-loss gain survive?
    'longer': [(f'{name}_900', extra + ['--max_iters=900', '--lr_decay_iters=900', '--warmup_iters=90'])
               for name, extra in (('ce', []), ('disp1.0', DISPERSION + ['--dispersion_coeff=1.0']))],
    # the research-shape student distilled (train.py's teacher) from two finished runs of this file: the largest
    # CE model, and the research shape at lambda 1.0 (condensation low by construction); then distillation plus
    # dispersion. The CE-only and dispersion-only students are main's ce and disp1.0. A run waits for its teacher.
    'distill': [(f'distill_{name}', distill_args(teacher)) for name, teacher in TEACHERS.items()]
               + [('distill_ce12x384_disp1.0', DISPERSION + ['--dispersion_coeff=1.0']
                   + distill_args(TEACHERS['ce12x384']))],
}
EXPERIMENT_SEEDS = {'main': SEEDS, 'variants': (1,), 'mlp': (1,), 'size': SEEDS, 'longer': (1, 2), 'distill': SEEDS}
SETTING_SEEDS = {'distill_ce12x384_disp1.0': (1,)}  # settings that run fewer seeds than their experiment


def all_runs(runs_dir):
    """[(experiment, setting, seed, run folder, train.py arguments)], seed-major so that partial sets are balanced
    (every experiment's seed 1 before any seed 2)."""
    runs = []
    for experiment, settings in EXPERIMENTS.items():
        for seed in EXPERIMENT_SEEDS[experiment]:
            for setting, extra in settings:
                if seed not in SETTING_SEEDS.get(setting, (seed,)):
                    continue
                folder = os.path.join(runs_dir, f'{setting}_s{seed}')
                extra = [a.replace('{runs}', runs_dir) for a in extra]
                runs.append((experiment, setting, seed, folder,
                             SHAPE + extra + [f'--seed={seed}', f'--out_dir={folder}']))
    return sorted(runs, key=lambda r: r[2])  # stable: within a seed, the order of EXPERIMENTS


def checkpoint_iter(folder):
    """(iter_num, max_iters) of folder/ckpt.pt, or None when there is no readable checkpoint (loaded as train.py
    loads it: weights only, no code)."""
    from checkpoint import read_checkpoint
    try:
        ckpt = read_checkpoint(os.path.join(folder, 'ckpt.pt'))
    except (FileNotFoundError, ValueError):
        return None
    return ckpt['iter_num'], ckpt['config']['max_iters']


def condensation_json(folder):
    """The run's condensation measurement, where eval_args(folder) makes eval.py write it."""
    from eval import condensation_path
    return condensation_path(os.path.join(folder, 'eval'), 'val', SEQ_LEN, NUM_SEQUENCES)


def generalization_json(folder):
    """The run's loss on the second held-out corpus, where loss_args(folder) makes eval.py write it."""
    from eval import loss_path
    return loss_path(os.path.join(folder, 'eval'), LOSS_DATA)


def status(folder):
    """'done' (trained and both measurements there), 'trained', 'at iter N' (to resume) or 'new'."""
    if os.path.exists(condensation_json(folder)) and os.path.exists(generalization_json(folder)):
        return 'done'
    it = checkpoint_iter(folder)
    if it is None:
        return 'new'
    return 'trained' if it[0] >= it[1] else f'at iter {it[0]}'


@functools.lru_cache(maxsize=None)
def _teacher_iter(path, mtime):
    """checkpoint_iter of a teacher's folder, read once per version of its ckpt.pt (mtime): the students of one
    teacher would otherwise each load the whole file (~0.5 GB at 12 x 384 with its AdamW state)."""
    return checkpoint_iter(os.path.dirname(path))


def teacher_wait(args):
    """None when the run has no teacher or its teacher's training is finished; else why the run must wait."""
    path = next((a.split('=', 1)[1] for a in args if a.startswith('--teacher=')), None)
    if path is None:
        return None
    it = _teacher_iter(path, os.path.getmtime(path) if os.path.exists(path) else None)
    if it is not None and it[0] >= it[1]:
        return None
    return (f"its teacher {path} {'does not exist yet' if it is None else f'is at iter {it[0]} of {it[1]}'}: it runs "
            f"once the teacher has finished")


def command_line(args):
    return 'python train.py ' + ' '.join(args)


def eval_args(folder):
    return ['--ckpt', os.path.join(folder, 'ckpt.pt'), '--num_sequences', str(NUM_SEQUENCES), '--seq_len', str(SEQ_LEN),
            '--out', os.path.join(folder, 'eval')]


def loss_args(folder):
    return ['--ckpt', os.path.join(folder, 'ckpt.pt'), '--loss_data', LOSS_DATA, '--out', os.path.join(folder, 'eval')]


def execute(run, threads):
    """Train (or resume) one run and take the measurements it lacks (condensation, the loss on LOSS_DATA), each
    alone: a finished folder is measured without retraining. Returns (folder, exit status)."""
    _, _, _, folder, args = run
    os.makedirs(folder, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    state = status(folder)  # again: another call may have finished it since the run list was made
    if state == 'done':
        return folder, 0
    with open(os.path.join(folder, 'train.out'), 'a') as log:
        if state != 'trained':
            resume = [] if state == 'new' else ['--init_from=resume']
            rc = subprocess.call([sys.executable, 'train.py'] + args + resume, cwd=ROOT, env=env,
                                 stdout=log, stderr=subprocess.STDOUT)
            if rc != 0:
                return folder, rc
        for path, args in ((condensation_json(folder), eval_args(folder)), (generalization_json(folder), loss_args(folder))):
            if not os.path.exists(path):
                rc = subprocess.call([sys.executable, 'eval.py'] + args, cwd=ROOT, env=env, stdout=log,
                                     stderr=subprocess.STDOUT)
                if rc != 0:
                    return folder, rc
    return folder, 0


# -----------------------------------------------------------------------------
# report: run folders -> results.md and figures, one function per table / figure

REFERENCE = ('main', 'ce')  # the research shape with CE only: the "vs CE" columns
LARGEST = ('size', 'size12x384')  # the largest model: the recovery section's target profile
SIZES = (('size', 'size4x128'), ('main', 'ce'), ('size', 'size8x256'), ('size', 'size12x384'))
SIZE_SHAPES = {'ce': (6, 192)}  # main's CE run is the 6 x 192 size; the others are named LxD


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
    return {'name': os.path.basename(os.path.normpath(folder)), 'val_loss': evals[-1]['val_loss'],
            'gen_loss': gen_loss, 'iters': [r['iter'] for r in evals],
            'val_curve': [r['val_loss'] for r in evals], 'probe': [r['mean_cos'] for r in evals],
            'mean_cos': mean_cos, 'blocks_cos': sum(mean_cos[1:]) / (len(mean_cos) - 1),
            'inner_cos': sum(mean_cos[1:-1]) / (len(mean_cos) - 2),  # block outputs without the final norm's
            'spearman': cond['spearman'], 'kendall': cond['kendall'], 'ms_per_iter': ms[len(ms) // 2],
            'distill': next((r['distill'] for r in reversed(steps) if 'distill' in r), None),  # the last logged
            'lr_embedding': {r['iter']: r['lr_embedding'] for r in steps if 'lr_embedding' in r},
            'anisotropy': cond.get('anisotropy')}  # eval.py --anisotropy's block, when measured with it


def mean_std(values):
    """(mean, sample std over seeds; 0 for one seed); None values (not measured) are left out."""
    import numpy as np
    v = np.array([x for x in values if x is not None], dtype=float)
    if len(v) == 0:
        return float('nan'), float('nan')
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def fmt(ms, digits=3):
    m, s = ms
    return '—' if m != m else f'{m:.{digits}f} ± {s:.{digits}f}'  # NaN: nothing measured


def rel(x, ref):
    return f'{100 * (x / ref - 1):+.1f}%' if ref and x == x else ''


def profile_distance(profile, target):
    """Mean absolute difference of two per-layer profiles (hidden states 0..n and 0..m) on the layer-fraction
    axis l/n: the target, linearly interpolated, read at the profile's own fractions 0, 1/n, .., 1."""
    import numpy as np
    x = np.linspace(0, 1, len(profile))
    return float(np.mean(np.abs(np.asarray(profile) - np.interp(x, np.linspace(0, 1, len(target)), target))))


def run_figures(run):
    """One run's figures, as the per-run table shows them and `rerun` compares them: name -> number or None."""
    figures = {'val loss': run['val_loss'], f'{LOSS_DATA} loss': run['gen_loss'], 'Spearman rho': run['spearman'],
               'Kendall tau': run['kendall'], 'blocks mean cos': run['blocks_cos']}
    figures.update({f'l={l}': v for l, v in enumerate(run['mean_cos'])})
    return figures


def collect(runs_dir):
    """({(experiment, setting): [run]}, {(experiment, setting): [train.py command]}) of the finished runs."""
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
    return groups, commands


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
    import numpy as np
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
    import numpy as np
    rows = [(s, runs) for (e, s), runs in groups.items() if e == experiment or (experiment == 'variants' and
                                                                              (e, s) in (REFERENCE, ('main', 'disp0.1')))]
    if not rows:
        return []
    ce = groups.get(REFERENCE)
    ref = {k: mean_std(r[k] for r in ce)[0] if ce else None
           for k in ('val_loss', 'gen_loss', 'blocks_cos', 'inner_cos', 'ms_per_iter')}
    n = len(rows[0][1][0]['mean_cos']) - 1
    lines = [f'## {title}', '',
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
            f'{m["ms_per_iter"][0]:.0f} | {rel(m["ms_per_iter"][0], ref["ms_per_iter"])} | '
            + ' | '.join(f'{v:.3f}' for v in per_layer) + ' |')
    return lines + [''] + profile_figure(out, f'{experiment}_mean_cos.png', title, rows)


def per_run_table(groups):
    """Every finished run's own figures (no means), so that a rerun is compared run by run (`rerun`)."""
    lines = ['## Per run', '', 'Every run\'s own figures; `python experiments.py rerun NAME` retrains one run into a '
             'temporary folder and compares it with its row here.', '',
             f'| run | experiment | val loss | {LOSS_DATA} loss | Spearman rho | Kendall tau | blocks mean cos | '
             'per-layer mean cos (l = 0..n) |', '|---|---|---|---|---|---|---|---|']
    order = list(EXPERIMENTS) + ['other']
    for (experiment, _), runs in sorted(groups.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1])):
        for r in sorted(runs, key=lambda r: r['name']):
            gen = '—' if r['gen_loss'] is None else f'{r["gen_loss"]:.4f}'
            lines.append(f'| {r["name"]} | {experiment} | {r["val_loss"]:.4f} | {gen} | {r["spearman"]:+.3f} | '
                         f'{r["kendall"]:+.3f} | {r["blocks_cos"]:.4f} | '
                         + ' '.join(f'{v:.4f}' for v in r['mean_cos']) + ' |')
    return lines + ['']


def committed_row(results_md, name):
    """The figures of run `name` in the per-run table of a results.md that report() wrote: name -> number."""
    if not os.path.exists(results_md):
        raise SystemExit(f"No {results_md} to compare with: write it with `python experiments.py report --out "
                         f"{os.path.dirname(results_md) or '.'}`.")
    rows = [l for l in open(results_md).read().splitlines() if l.startswith(f'| {name} |')]
    header = next((l for l in open(results_md).read().splitlines() if l.startswith('| run | experiment |')), None)
    if header is None or not rows:
        raise SystemExit(f"{results_md} has no per-run row for {name}: it was not among the reported runs.")
    cols = [c.strip() for c in header.strip('|').split('|')]
    cells = dict(zip(cols, (c.strip() for c in rows[0].strip('|').split('|'))))
    figures = {k: None if cells[k] == '—' else float(cells[k]) for k in cols[2:-1]}
    figures.update({f'l={l}': float(v) for l, v in enumerate(cells[cols[-1]].split())})
    return figures


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
    lines = ['## MLP width and condensation (seed 1)', '',
             'Init: the probe at step 0 (16 val windows); trained: the probe at the last step (same '
             'windows) and eval.py (100 windows).', '',
             '| MLP width | width / d | rho init | tau init | rho trained (probe) | tau trained (probe) | '
             'rho trained (eval) | tau trained (eval) | val loss | per-layer mean cos, trained (eval) |',
             '|---|---|---|---|---|---|---|---|---|---|']
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4), dpi=110, sharey=True)
    for w, r in widths:
        init, last = r['probe'][0], r['probe'][-1]
        layers = list(range(len(init)))
        lines.append(f'| {w} | {w / 192:.2f} | {spearman(layers, init):+.2f} | {kendall(layers, init):+.2f} | '
                     f'{spearman(layers, last):+.2f} | {kendall(layers, last):+.2f} | {r["spearman"]:+.2f} | '
                     f'{r["kendall"]:+.2f} | {r["val_loss"]:.3f} | ' + ' '.join(f'{v:.2f}' for v in r['mean_cos']) + ' |')
        axes[0].plot(layers, init, marker='o', ms=3, label=f'{w}')
        axes[1].plot(layers, r['mean_cos'], marker='o', ms=3, label=f'{w}')
    axes[0].set(title='at initialisation', xlabel='hidden state', ylabel='mean cosine')
    axes[1].set(title='after 300 steps', xlabel='hidden state')
    axes[1].legend(title='MLP width', fontsize=7, loc='upper left')
    return lines + [''] + save_figure(fig, out, 'mlp_width.png')


def over_training_section(groups, out):
    """The probe's per-layer mean cosine against the step (one panel per main setting) and the val-loss curves."""
    import matplotlib.pyplot as plt
    import numpy as np
    shown = [s for s in ('ce', 'disp0.1', 'disp1.0', 'noise', 'forget') if ('main', s) in groups]
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
    import numpy as np
    rows = [(key, groups[key]) for key in SIZES if key in groups]
    if not rows:
        return []
    lines = ['## Model size (CE only)', '', 'Depth and width grow together (32-wide heads); block parameters '
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
    lines = ['## Distillation', '', 'The research-shape student (6 x 192), T = 1, coefficient 1 (experiments.py). '
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
    import numpy as np
    if LARGEST not in groups:
        return []
    large = groups[LARGEST]
    target = np.mean([r['mean_cos'] for r in large], axis=0)
    rho = mean_std(r['spearman'] for r in large)[0]
    lines = ['## Recovery: distance to the largest model\'s profile', '',
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
    lines = ['## Longer training (900 steps)', '', f'| run | {SUMMARY} val loss vs CE at the same length |',
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
    lines = ['## Active forgetting', '', 'Re-drawn once after step 200 of 300, the authors\' schedule for the '
             'embedding (disperse.forget_lr); embedding lr: the learning rate the run logged for it at step 200 and at '
             'the first logged step after the reset (— : a run from before that schedule).', '',
             f'| setting | {SUMMARY} embedding lr at 200 / after the reset |', '|---' * 8 + '|']
    for label, key in (('CE', REFERENCE), ('active forgetting', ('main', 'forget'))):
        if key in groups:
            runs = groups[key]
            lrs = runs[0]['lr_embedding']
            after = min((i for i in lrs if i > 200), default=None)
            at = (f'{lrs[200]:.2e} / {lrs[after]:.2e} (step {after})' if 200 in lrs and after else '—'
                  ) if key != REFERENCE else ''
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
    lines = ['## Rogue dimensions and anisotropy', '', 'Means over the blocks (hidden states 1..n) of eval.py '
             '--anisotropy: raw and standardized (every dimension z-scored over the same tokens) mean cosine, the '
             'mean cosine between tokens of different sequences, within-sequence minus it, the share of the squared '
             'norm in the 2 largest dimensions, the TwoNN intrinsic dimension.', '', ANISOTROPY_HEAD]
    for r in runs:
        a = r['anisotropy']
        cells = anisotropy_summary(r['mean_cos'], a)
        lines.append(f'| {r["name"]} | {cells[0]} | {cells[1]} | {r["spearman"]:+.2f} | {a["std_spearman"]:+.2f} | '
                     + ' | '.join(cells[2:]) + ' |')
    return lines + ['']


def report(runs_dir, out):
    """Group the finished runs by setting, average over seeds, write out/results.md and the PNG figures."""
    import matplotlib
    matplotlib.use('Agg')
    groups, commands = collect(runs_dir)
    if not groups:
        raise SystemExit(f"No finished runs in {runs_dir}: run `python experiments.py run` first.")
    os.makedirs(out, exist_ok=True)
    lines = [f'# Results of `python experiments.py report --runs {runs_dir}`', '',
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


def prepare_data():
    """Tokenise what the runs read and lacks: the research shape's data (train and val) and LOSS_DATA (val), each by
    its own data/NAME/prepare.py (offline: both come from installed packages)."""
    for name in (DATASET, LOSS_DATA):
        if not os.path.exists(os.path.join(ROOT, 'data', name, 'val.bin')):
            rc = subprocess.call([sys.executable, f'data/{name}/prepare.py'], cwd=ROOT)
            if rc != 0:
                raise SystemExit(f"data/{name}/prepare.py failed (exit {rc}): the runs need its token files.")


def rerun(name, runs_dir, results_md, threads):
    """Retrain run `name` (as `run` would, with its own command line) into a temporary folder, measure it, and
    print its figures beside its row of results_md. Returns (committed, rerun) figures."""
    run = next((r for r in all_runs(runs_dir) if os.path.basename(r[3]) == name), None)
    if run is None:
        raise SystemExit(f"rerun: no run named {name!r} (`python experiments.py list` shows every run).")
    committed = committed_row(results_md, name)  # before training: a missing row should not cost a run
    wait = teacher_wait(run[4])
    if wait:
        raise SystemExit(f"rerun: {name} cannot run yet: {wait}.")
    prepare_data()
    folder = os.path.join(tempfile.mkdtemp(prefix=f'rerun-{name}-'), name)
    args = [a if not a.startswith('--out_dir=') else f'--out_dir={folder}' for a in run[4]]
    print(f'rerunning {name} into {folder}: {command_line(args)}', flush=True)
    _, rc = execute(run[:3] + (folder, args), threads)
    if rc != 0:
        raise SystemExit(f"rerun of {name} failed (exit {rc}); see {folder}/train.out.")
    again = run_figures(load_run(folder, condensation_json(folder)))
    print(comparison(name, committed, again))
    return committed, again


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('what', choices=['list', 'run', 'report', 'rerun'])
    p.add_argument('name', nargs='?', help='rerun: the run to retrain into a temporary folder (e.g. ce_s1)')
    p.add_argument('--runs', default='out-research', help='folder of the run folders (relative to this file\'s folder)')
    p.add_argument('--only', default=None, help='comma list of experiments (' + ', '.join(EXPERIMENTS) +
                   ') or settings (ce, size12x384, ...), or runs (ce_s1); '
                   'runs go in the order named here')
    p.add_argument('--jobs', type=int, default=2, help='runs at a time')
    p.add_argument('--threads', type=int, default=1, help='CPU threads per run (OMP_NUM_THREADS)')
    p.add_argument('--out', default=None, help='report: where results.md and the figures go (default: RUNS)')
    p.add_argument('--results', default='assets/results.md', help='rerun: the results.md to compare with')
    a = p.parse_args(argv)
    os.chdir(ROOT)  # run folders and config paths are relative to the repository, as in the printed commands
    if a.what == 'rerun':
        if not a.name:
            raise SystemExit("rerun needs the run's name: python experiments.py rerun ce_s1")
        return rerun(a.name, a.runs, a.results, a.threads)
    every = all_runs(a.runs)
    only = a.only.split(',') if a.only else list(EXPERIMENTS)
    names = lambda r: (r[0], r[1], os.path.basename(r[3]))  # noqa: E731  experiment, setting, run folder name
    unknown = [e for e in only if not any(e in names(r) for r in every)]
    if unknown:
        raise SystemExit(f"--only: unknown experiment, setting or run {unknown[0]!r}; experiments are "
                         f"{', '.join(EXPERIMENTS)} (`python experiments.py list` shows every run).")
    # in the order --only names them (a run named twice goes where it is first named), else seed-major
    rank = lambda r: min(i for i, e in enumerate(only) if e in names(r))  # noqa: E731
    runs = sorted((r for r in every if any(e in names(r) for e in only)), key=rank)
    if a.what == 'list':
        for run in runs:
            state = status(run[3])
            wait = teacher_wait(run[4]) if state == 'new' else None
            print(f'[{state}{", waiting for its teacher" if wait else ""}] {command_line(run[4])}')
        return
    if a.what == 'report':
        return report(a.runs, a.out or a.runs)
    todo = [r for r in runs if status(r[3]) != 'done']
    if todo:
        prepare_data()
    print(f'{len(runs) - len(todo)} of {len(runs)} runs done; {len(todo)} to go, {a.jobs} at a time', flush=True)
    failed, start = [], time.time()
    # two rounds: the runs whose teacher is unfinished go after the others (which may train it), then start only
    # if it has finished by then; the rest are skipped, said, and run by a later `run`
    first = [r for r in todo if not teacher_wait(r[4])]
    skipped = []
    for round_ in (first, [r for r in todo if r not in first]):
        waits = {r[3]: teacher_wait(r[4]) for r in round_} if round_ is not first else {}
        ready = [r for r in round_ if not waits.get(r[3])]
        for r in round_:
            if waits.get(r[3]):
                skipped.append(r)
                print(f'skipped {r[3]}: {waits[r[3]]} (run this command again then)', flush=True)
        with ThreadPoolExecutor(a.jobs) as pool:
            for folder, rc in pool.map(lambda r: execute(r, a.threads), ready):
                print(f'{time.strftime("%H:%M:%S")} {"finished" if rc == 0 else f"FAILED ({rc})"}: {folder}',
                      flush=True)
                if rc != 0:
                    failed.append(folder)
    print(f'{len(todo) - len(skipped)} runs in {(time.time() - start) / 60:.1f} minutes'
          + (f'; {len(skipped)} skipped for their teacher' if skipped else ''), flush=True)
    if failed:
        raise SystemExit(f"{len(failed)} runs failed; see train.out in {', '.join(failed)}.")


if __name__ == '__main__':
    main()
