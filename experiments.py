"""
experiments.py: the CPU-scale reproduction of the paper's findings (arXiv 2602.00217), as runs anyone can redo.

  python experiments.py list                  # every run's train.py command line, and whether it is done
  python experiments.py run --jobs 2          # train what has no result yet (two at a time, one thread each),
                                              # resume what was interrupted, measure condensation at the end
  python experiments.py run --only main       # one experiment: main, variants or mlp
  python experiments.py report                # tables (results.md) and figures (PNG) from the run folders

Every run is `python train.py config/research.py [config/dispersion.py] --key=value ... --seed=S --out_dir=...`
(the research shape: 6 layers x 192 on Shakespeare, 300 steps of 8 x 128 tokens), followed by
`python eval.py --ckpt RUN/ckpt.pt --num_sequences 100 --seq_len 128 --out RUN/eval` (per-layer mean cosine on
100 val windows). A run is done when RUN/eval/condensation.json exists; a run with a checkpoint short of
max_iters continues with --init_from=resume, so a later session finishes what an earlier one could not.

The experiments (README, "Results"):
  main      CE only; CE + angular_spread at lambda 0.1 and 1.0; noisy embeddings (alpha 1); active forgetting
            (once, after step 200 of 300: the paper's 1000 of 1526 steps is 2/3 of training). Seeds 1, 2, 3.
  variants  orthogonalization, decorrelation, l2_repel at lambda 0.1 (angular_spread at 0.1 is in main). Seed 1.
  mlp       CE only with MLP width 16 / 64 / 256 / 1024 (the paper's Fig. 3 widths 64..4096 over d = 768, here
            over d = 192; 768 = 4 x 192 is main's CE run). Seed 1.
"""

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.abspath(__file__))
SHAPE = ['config/research.py']
DISPERSION = ['config/dispersion.py']
SEEDS = (1, 2, 3)
SEQ_LEN = 128  # the research shape's context
# l2_repel on raw hidden states: exp(-|z_i - z_j|^2 / tau) underflows at tau = 1 (disperse.py); tau = F = 192
# keeps the distances on the order of one
L2_TAU = 192.0

# experiment -> [(setting, extra train.py arguments)]; every setting runs with each of its seeds
EXPERIMENTS = {
    'main': [('ce', []),
             ('disp0.1', DISPERSION),
             ('disp1.0', DISPERSION + ['--dispersion_coeff=1.0']),
             ('noise', ['--noise_alpha=1.0']),
             ('forget', ['--forget_every=200'])],
    'variants': [('orthogonalization', DISPERSION + ['--dispersion=orthogonalization']),
                 ('decorrelation', DISPERSION + ['--dispersion=decorrelation']),
                 ('l2_repel', DISPERSION + ['--dispersion=l2_repel', f'--dispersion_tau_l2={L2_TAU}'])],
    'mlp': [(f'mlp{w}', [f'--n_inner={w}']) for w in (16, 64, 256, 1024)],
}
EXPERIMENT_SEEDS = {'main': SEEDS, 'variants': (1,), 'mlp': (1,)}


def all_runs(runs_dir):
    """[(experiment, setting, seed, run folder, train.py arguments)], seed-major so that partial sets are balanced."""
    runs = []
    for experiment, settings in EXPERIMENTS.items():
        for seed in EXPERIMENT_SEEDS[experiment]:
            for setting, extra in settings:
                folder = os.path.join(runs_dir, f'{setting}_s{seed}')
                runs.append((experiment, setting, seed, folder,
                             SHAPE + extra + [f'--seed={seed}', f'--out_dir={folder}']))
    return runs


def checkpoint_iter(folder):
    """(iter_num, max_iters) of folder/ckpt.pt, or None when there is no readable checkpoint."""
    import torch
    path = os.path.join(folder, 'ckpt.pt')
    if not os.path.exists(path):
        return None
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=False)
    except Exception:
        return None
    return ckpt['iter_num'], ckpt['config']['max_iters']


def status(folder):
    if os.path.exists(os.path.join(folder, 'eval', 'condensation.json')):
        return 'done'
    it = checkpoint_iter(folder)
    if it is None:
        return 'new'
    return 'trained' if it[0] >= it[1] else f'at iter {it[0]}'


def command_line(args):
    return 'python train.py ' + ' '.join(args)


def eval_args(folder):
    return ['--ckpt', os.path.join(folder, 'ckpt.pt'), '--num_sequences', '100', '--seq_len', str(SEQ_LEN),
            '--out', os.path.join(folder, 'eval')]


def execute(run, threads):
    """Train (or resume) one run and measure its condensation; returns (folder, exit status)."""
    _, _, _, folder, args = run
    os.makedirs(folder, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    state = status(folder)
    with open(os.path.join(folder, 'train.out'), 'a') as log:
        if state != 'trained':
            resume = [] if state == 'new' else ['--init_from=resume']
            rc = subprocess.call([sys.executable, 'train.py'] + args + resume, cwd=ROOT, env=env,
                                 stdout=log, stderr=subprocess.STDOUT)
            if rc != 0:
                return folder, rc
        rc = subprocess.call([sys.executable, 'eval.py'] + eval_args(folder), cwd=ROOT, env=env,
                             stdout=log, stderr=subprocess.STDOUT)
    return folder, rc


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('what', choices=['list', 'run', 'report'])
    p.add_argument('--runs', default='out-research', help='folder of the run folders (relative to this file\'s folder)')
    p.add_argument('--only', default=None, help='comma list of experiments: ' + ', '.join(EXPERIMENTS))
    p.add_argument('--jobs', type=int, default=2, help='runs at a time')
    p.add_argument('--threads', type=int, default=1, help='CPU threads per run (OMP_NUM_THREADS)')
    p.add_argument('--out', default=None, help='report: where results.md and the figures go (default: RUNS)')
    a = p.parse_args(argv)
    os.chdir(ROOT)  # run folders and config paths are relative to the repository, as in the printed commands
    only = a.only.split(',') if a.only else list(EXPERIMENTS)
    unknown = [e for e in only if e not in EXPERIMENTS]
    if unknown:
        raise SystemExit(f"--only: unknown experiment {unknown[0]!r}; choose from {', '.join(EXPERIMENTS)}.")
    runs = [r for r in all_runs(a.runs) if r[0] in only]
    if a.what == 'list':
        for run in runs:
            print(f'[{status(run[3])}] {command_line(run[4])}')
        return
    if a.what == 'report':
        from results import report
        return report(a.runs, a.out or a.runs)
    todo = [r for r in runs if status(r[3]) != 'done']
    print(f'{len(runs) - len(todo)} of {len(runs)} runs done; {len(todo)} to go, {a.jobs} at a time', flush=True)
    failed = []
    with ThreadPoolExecutor(a.jobs) as pool:
        for folder, rc in pool.map(lambda r: execute(r, a.threads), todo):
            print(f'{"finished" if rc == 0 else f"FAILED ({rc})"}: {folder}', flush=True)
            if rc != 0:
                failed.append(folder)
    if failed:
        raise SystemExit(f"{len(failed)} runs failed; see train.out in {', '.join(failed)}.")


if __name__ == '__main__':
    main()
