"""
midtrain.py: the paper's main experiment (arXiv 2602.00217 section 4: a released model mid-trained with and without
the dispersion loss, scored at step 0 and at the end) on a real released model at the scale of one CPU.

    python data/released.py smollm2-135m mmlu && python data/released.py --mmlu_dir ~/.cache/disperse-gpt/tasks
    python data/shakespeare/prepare.py --tokenizer ~/.cache/disperse-gpt/released/SmolLM2-135M-Instruct.Q4_1.gguf --name shakespeare_smollm2
    python data/lee_news/prepare.py --tokenizer ~/.cache/disperse-gpt/released/SmolLM2-135M-Instruct.Q4_1.gguf --name lee_news_smollm2
    python midtrain.py list                  # every run's commands, and whether it is done
    python midtrain.py run --jobs 2          # train and measure what is missing (two at a time, one thread each)
    python midtrain.py run --only ce_s1      # one run (or step0, the released model's own measurements)
    python midtrain.py report                # the per-run rows and the per-setting means (markdown)

The model: SmolLM2-135M-Instruct (Llama, 30 x 576; an instruct model, from a Q4_1 GGUF dequantized to float32, so
real pretrained weights, not bit-identical to the released fp16 ones). Every run is
`python train.py config/midtrain_smollm2.py [config/dispersion.py] --seed=S --out_dir=RUN` (32 steps of 2 x 512
Shakespeare tokens in SmolLM2's tokens, lr 5e-5, the paper's schedule; LoRA runs add config/midtrain_smollm2_lora.py),
then the measurements, each into RUN/eval:
  condensation   eval.py, 100 windows of 512 tokens of the Lee news articles (data/lee_news/lee_news.jsonl, text
                 tokenized by the model's own tokenizer): per-layer mean cosine, rho, tau
  val loss       train.py's last eval: 10 x 2 fixed windows of 512 tokens of the Shakespeare val plays
  news loss      eval.py --loss_data lee_news_smollm2 (the same rule on the news corpus, 20 windows of 512)
  MMLU           eval.py --tasks on 6 subjects x 20 real test rows (120 questions), 0-shot and 5-shot (the paper's
                 Qwen3 setting); each subject's first 5 rows are its few-shot pool (data/released.write_mmlu)
Step 0 (the released model itself) is measured once through --init_from, in RUNS/step0/eval.
"""

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

ROOT = os.path.dirname(os.path.abspath(__file__))
MODEL = os.path.join(os.path.expanduser('~'), '.cache', 'disperse-gpt', 'released', 'SmolLM2-135M-Instruct.Q4_1.gguf')
TASKS_DATA = os.path.join(os.path.expanduser('~'), '.cache', 'disperse-gpt', 'tasks')
SUBJECTS = ('high_school_geography', 'marketing', 'sociology', 'us_foreign_policy', 'nutrition', 'miscellaneous')
LIMIT, SHOTS = 20, (0, 5)
SOURCE, SEQ_LEN, NUM_SEQUENCES = 'data/lee_news/lee_news.jsonl', 512, 100
NEWS = 'lee_news_smollm2'
# setting -> train.py arguments after the base config; LoRA (rank 16, alpha 32: config/midtrain_smollm2_lora.py)
# is the authors' other mid-training option, one pair
SETTINGS = {'ce': [], 'disp0.1': ['config/dispersion.py'], 'lora_ce': ['config/midtrain_smollm2_lora.py'],
            'lora_disp0.1': ['config/midtrain_smollm2_lora.py', 'config/dispersion.py'],
            # a stronger setting: at 32 steps lambda 0.1 barely moves condensation
            'disp1.0': ['config/dispersion.py', '--dispersion_coeff=1.0']}
SEEDS = (1, 2, 3)
SETTING_SEEDS = {'lora_ce': (1,), 'lora_disp0.1': (1,)}  # the LoRA pair: one seed; the rest: SEEDS


def measurements(which):
    """[(result file relative to RUN/eval, eval.py arguments)] for a checkpoint (which = ['--ckpt', RUN/ckpt.pt])
    or the released model (which = ['--init_from', MODEL])."""
    tasks = ','.join(f'mmlu_{s}' for s in SUBJECTS)
    win = [] if which[0] == '--ckpt' else ['--num_sequences', '20', '--seq_len', str(SEQ_LEN)]  # = the runs' 10 x 2
    return ([(f'condensation_lee-news_S{SEQ_LEN}_N{NUM_SEQUENCES}.json',
              which + ['--source', SOURCE, '--seq_len', str(SEQ_LEN), '--num_sequences', str(NUM_SEQUENCES)]),
             (f'loss_{NEWS}.json', which + ['--loss_data', NEWS] + win)]
            + [(f'mmlu{k}/tasks.json', which + ['--tasks', tasks, '--limit', str(LIMIT), '--fewshot', str(k),
                                               '--tasks_data', TASKS_DATA, '--subdir', f'mmlu{k}']) for k in SHOTS])


def all_runs(runs):
    """[(name, folder, train.py arguments or None for step 0)]."""
    out = [('step0', os.path.join(runs, 'step0'), None)]
    for seed in SEEDS:
        for setting, extra in SETTINGS.items():
            if seed not in SETTING_SEEDS.get(setting, SEEDS):
                continue
            folder = os.path.join(runs, f'{setting}_s{seed}')
            out.append((f'{setting}_s{seed}', folder,
                        ['config/midtrain_smollm2.py'] + extra + [f'--seed={seed}', f'--out_dir={folder}']))
    return out


def eval_command(folder, args):
    """eval.py's command line: --subdir D puts the result in RUN/eval/D (the two MMLU settings apart)."""
    args = list(args)
    sub = ''
    if '--subdir' in args:
        i = args.index('--subdir')
        sub = args[i + 1]
        del args[i:i + 2]
    return ['eval.py'] + args + ['--out', os.path.join(folder, 'eval', sub)]


def todo(name, folder, train_args):
    """The commands a run still needs, in order (training first, unless its checkpoint has finished)."""
    steps = []
    which = ['--init_from', MODEL] if train_args is None else ['--ckpt', os.path.join(folder, 'ckpt.pt')]
    if train_args is not None and not os.path.exists(os.path.join(folder, 'eval', 'trained')):
        resume = ['--init_from=resume'] if os.path.exists(os.path.join(folder, 'ckpt.pt')) else []
        steps.append(['train.py'] + train_args + resume)
    for result, args in measurements(which):
        if not os.path.exists(os.path.join(folder, 'eval', result)):
            steps.append(eval_command(folder, args))
    return steps


def execute(run, threads):
    name, folder, train_args = run
    os.makedirs(os.path.join(folder, 'eval'), exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with open(os.path.join(folder, 'run.log'), 'a') as log:
        for cmd in todo(name, folder, train_args):
            rc = subprocess.call([sys.executable] + cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            if rc != 0:
                return name, rc
            if cmd[0] == 'train.py':  # marks a finished training: a resumed one continues from its checkpoint
                open(os.path.join(folder, 'eval', 'trained'), 'w').close()
    return name, 0


# -----------------------------------------------------------------------------
# report

def _json(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def run_row(folder):
    """{column: value} of one run folder (None where a measurement is missing)."""
    ev = os.path.join(folder, 'eval')
    cond = _json(os.path.join(ev, f'condensation_lee-news_S{SEQ_LEN}_N{NUM_SEQUENCES}.json'))
    news = _json(os.path.join(ev, f'loss_{NEWS}.json'))
    row = {'val': None, 'news': news and news['loss'], 'rho': cond and cond['spearman'],
           'tau': cond and cond['kendall'],
           # the blocks' mean: hidden states 1..n, as the dispersion loss's 'all' (never the embedding output)
           'blocks': cond and float(np.mean(cond['mean_cos'][1:]))}
    for k in SHOTS:
        tasks = _json(os.path.join(ev, f'mmlu{k}', 'tasks.json'))
        if tasks:  # accuracy over all questions (subjects weighted by their rows, all LIMIT here)
            t = tasks['tasks'].values()
            row[f'mmlu{k}'] = sum(x['acc'] * x['n'] for x in t) / sum(x['n'] for x in t)
        else:
            row[f'mmlu{k}'] = None
    log = os.path.join(folder, 'log.jsonl')
    if os.path.exists(log):
        with open(log) as f:
            evals = [r for r in map(json.loads, f) if 'val_loss' in r]
        row['val'] = evals[-1]['val_loss'] if evals else None
        row['val0'] = evals[0]['val_loss'] if evals else None
    return row


COLUMNS = (('val', 'val loss', 4), ('news', 'news loss', 4), ('rho', 'rho', 2), ('tau', 'tau', 2),
           ('blocks', 'blocks mean cos', 4), ('mmlu0', 'MMLU 0-shot', 3), ('mmlu5', 'MMLU 5-shot', 3))


def cell(values, digits):
    v = [x for x in values if x is not None]
    if not v:
        return '—'
    if len(v) == 1:
        return f'{v[0]:.{digits}f} (1 seed)' if len(values) > 1 else f'{v[0]:.{digits}f}'
    return f'{np.mean(v):.{digits}f} ± {np.std(v, ddof=1):.{digits}f}'


def report(runs):
    rows = {name: run_row(folder) for name, folder, _ in all_runs(runs) if os.path.isdir(folder)}
    if 'step0' in rows:  # the released model's val loss: every run's step-0 eval (the same fixed windows)
        rows['step0']['val'] = next((r.get('val0') for n, r in rows.items() if r.get('val0') is not None), None)
    head = '| run | ' + ' | '.join(c[1] for c in COLUMNS) + ' |'
    lines = [head, '|' + '---|' * (len(COLUMNS) + 1)]
    for name, r in rows.items():
        lines.append(f'| {name} | ' + ' | '.join(cell([r[k]], d) for k, _, d in COLUMNS) + ' |')
    lines += ['', '| setting | seeds | ' + ' | '.join(c[1] for c in COLUMNS) + ' |',
              '|' + '---|' * (len(COLUMNS) + 2)]
    for setting in SETTINGS:
        group = [r for n, r in rows.items() if n.startswith(setting + '_s')]
        if group:
            lines.append(f'| {setting} | {len(group)} | '
                         + ' | '.join(cell([r[k] for r in group], d) for k, _, d in COLUMNS) + ' |')
    return '\n'.join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('what', choices=['list', 'run', 'report'])
    p.add_argument('--runs', default='out-real/midtrain', help='folder of the run folders')
    p.add_argument('--only', default=None, help='comma list of run names (step0, ce_s1, disp0.1_s2, ...)')
    p.add_argument('--jobs', type=int, default=2)
    p.add_argument('--threads', type=int, default=1)
    args = p.parse_args(argv)
    runs = all_runs(args.runs)
    if args.only:
        names = args.only.split(',')
        unknown = sorted(set(names) - {r[0] for r in runs})
        if unknown:
            raise SystemExit(f"No run named {', '.join(unknown)}: one of {', '.join(r[0] for r in runs)}.")
        runs = [r for r in runs if r[0] in names]
    if args.what == 'list':
        for run in runs:
            steps = todo(*run)
            print(f"[{'done' if not steps else 'todo'}] {run[0]}")
            for cmd in steps:
                print('    python ' + ' '.join(cmd))
    elif args.what == 'run':
        pending = [r for r in runs if todo(*r)]
        with ThreadPoolExecutor(args.jobs) as pool:
            for name, rc in pool.map(lambda r: execute(r, args.threads), pending):
                print(f'{name}: {"done" if rc == 0 else f"failed (exit {rc}), see its run.log"}', flush=True)
    else:
        print(report(args.runs))


if __name__ == '__main__':
    main()
