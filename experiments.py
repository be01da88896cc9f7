"""
experiments.py: the CPU-scale reproduction of the paper's findings (arXiv 2602.00217), as runs anyone can redo.

  python experiments.py list                  # every run's train.py command line, and whether it is done
  python experiments.py run --jobs 2          # train what has no result yet (two at a time, one thread each),
                                              # resume what was interrupted, measure condensation at the end
  python experiments.py run --only main       # one experiment (main, variants, mlp, size, longer, distill),
                                              # setting (ce, distill_ce12x384) or run (ce_s1)
  python experiments.py report                # tables (results.md) and figures (PNG) from the run folders (report.py)
  python experiments.py report --out assets --keep assets/results.md
                                              # the same, with the committed rows of runs that have no folder here
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
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

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


CODE_FILE = 'code.txt'  # in a run folder: the code version of each training invocation, one line each


def code_version():
    """The commit of this checkout (short hash), '+changes' when tracked files differ from it; None outside git."""
    git = lambda *a: subprocess.run(['git', *a], cwd=ROOT, capture_output=True, text=True)  # noqa: E731
    head = git('rev-parse', '--short=7', 'HEAD')
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ('+changes' if git('status', '--porcelain', '--untracked-files=no').stdout.strip()
                                  else '')


def record_code(folder):
    """Append this checkout's code version to folder/code.txt unless it is already the last line (a run resumed by
    other code gets two lines)."""
    version = code_version() or 'unknown'
    path = os.path.join(folder, CODE_FILE)
    lines = open(path).read().split() if os.path.exists(path) else []
    if lines[-1:] != [version]:
        with open(path, 'a') as f:
            f.write(version + '\n')


def read_code(folder):
    """The code version(s) that trained the run in folder ('a then b' for a resumed run), None if not recorded."""
    path = os.path.join(folder, CODE_FILE)
    return ' then '.join(open(path).read().split()) if os.path.exists(path) else None


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
            record_code(folder)
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
    from report import committed_row, comparison, load_run, run_figures
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
    p.add_argument('--keep', default=None, help='report: a results.md whose per-run rows stand for the runs that have '
                   'no folder in RUNS (e.g. assets/results.md)')
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
        from report import report
        return report(a.runs, a.out or a.runs, a.keep)
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
