"""Tests for experiments.py: which runs it starts, resumes or skips, and the report's arithmetic (seed means and
standard deviations, checked against hand-computed numbers on hand-written run folders).

Run: python -m pytest -q tests/test_experiments.py
"""
import json
import os

import pytest
import torch

import experiments


def write_run(folder, val_losses, mean_cos, ms=100.0, spearman=1.0, kendall=1.0, resumed_at=None, gen_loss=None):
    """A finished run folder as train.py and eval.py leave it: log.jsonl, eval/condensation_val_S128_N100.json and,
    given gen_loss, eval/loss_lee_news.json."""
    os.makedirs(os.path.join(folder, 'eval'), exist_ok=True)
    records = [{'iter': 0, 'event': 'start'}]
    for i, v in enumerate(val_losses):
        it = 50 * i
        if it > 0:
            records.append({'iter': it, 'loss': v, 'ce': v, 'ms_per_iter': ms})
        records.append({'iter': it, 'train_loss': v, 'val_loss': v, 'mean_cos': mean_cos})
    if resumed_at is not None:  # a run that stopped after its last eval and was resumed from resumed_at:
        records = ([r for r in records if r['iter'] <= resumed_at + 50] + [{'iter': resumed_at, 'event': 'start'}]
                   + [r for r in records if r['iter'] > resumed_at])
    with open(os.path.join(folder, 'log.jsonl'), 'w') as f:
        f.write('\n'.join(json.dumps(r) for r in records) + '\n')
    with open(experiments.condensation_json(folder), 'w') as f:
        json.dump({'mean_cos': mean_cos, 'spearman': spearman, 'kendall': kendall}, f)
    if gen_loss is not None:
        with open(experiments.generalization_json(folder), 'w') as f:
            json.dump({'loss': gen_loss}, f)


def test_report_means_and_stds_over_seeds(tmp_path):
    runs = str(tmp_path / 'runs')
    # CE: final val losses 5.0 and 5.2 -> 5.100 +- 0.141 (sample std: sqrt(0.02) = 0.1414)
    write_run(f'{runs}/ce_s1', [9.0, 5.0], [0.1, 0.2, 0.4], ms=100)
    write_run(f'{runs}/ce_s2', [9.0, 5.2], [0.1, 0.2, 0.6], ms=100, resumed_at=0)  # its log holds redone steps
    # dispersion: blocks' mean cos (0.1 + 0.1) / 2 = 0.1 vs CE's (0.3 + 0.4) / 2 = 0.35: -71.4%; loss -2.0%
    write_run(f'{runs}/disp1.0_s1', [9.0, 4.998], [0.1, 0.1, 0.1], ms=110, spearman=0.5)
    out = str(tmp_path / 'report')
    experiments.main(['report', '--runs', runs, '--out', out])
    md = open(os.path.join(out, 'results.md')).read()
    ce_row = next(l for l in md.splitlines() if l.startswith('| ce |'))
    assert '| 2 | 5.100 ± 0.141 |' in ce_row and '| 0.350 ± 0.071 |' in ce_row
    disp_row = next(l for l in md.splitlines() if l.startswith('| disp1.0 |'))
    # 1..n-1 leaves out the final norm's entry: CE (0.2 + 0.2) / 2 = 0.2, dispersion 0.1: -50%
    assert '| 1 | 4.998 ± 0.000 | -2.0% | 0.100 ± 0.000 | -71.4% | 0.100 ± 0.000 | -50.0% | 0.50 ± 0.00 |' in disp_row
    assert '| 110 | +10.0% |' in disp_row
    assert 'python train.py config/research.py config/dispersion.py --dispersion_coeff=1.0 --seed=1' in md
    assert os.path.getsize(os.path.join(out, 'main_mean_cos.png')) > 10_000


def test_report_reads_other_run_folders_and_refuses_an_empty_set(tmp_path):
    runs = str(tmp_path / 'runs')
    write_run(f'{runs}/mytry_s1', [9.0, 4.0], [0.1, 0.3, 0.5])
    write_run(f'{runs}/mytry_s7', [9.0, 6.0], [0.1, 0.3, 0.5])
    experiments.main(['report', '--runs', runs])
    row = next(l for l in open(f'{runs}/results.md').read().splitlines() if l.startswith('| mytry |'))
    assert '| 2 | 5.000 ± 1.414 |' in row
    with pytest.raises(SystemExit, match='No finished runs'):
        experiments.main(['report', '--runs', str(tmp_path / 'nothing')])


def test_run_skips_done_resumes_unfinished_and_starts_new(tmp_path, monkeypatch):
    runs = 'runs'
    monkeypatch.setattr(experiments, 'ROOT', str(tmp_path))
    monkeypatch.setattr(experiments, 'EXPERIMENTS', {'main': experiments.EXPERIMENTS['main'][:4]})
    monkeypatch.setattr(experiments, 'EXPERIMENT_SEEDS', {'main': (1,)})
    os.chdir(tmp_path)
    write_run(f'{runs}/ce_s1', [9.0, 5.0], [0.1, 0.2], gen_loss=6.0)  # done: has both measurements
    os.makedirs(f'{runs}/disp0.1_s1')
    torch.save({'model': {}, 'model_args': {}, 'iter_num': 150, 'config': {'max_iters': 300}}, f'{runs}/disp0.1_s1/ckpt.pt')  # interrupted
    os.makedirs(f'{runs}/disp1.0_s1')
    torch.save({'model': {}, 'model_args': {}, 'iter_num': 300, 'config': {'max_iters': 300}}, f'{runs}/disp1.0_s1/ckpt.pt')  # trained only
    write_run(f'{runs}/noise_s1', [9.0, 5.0], [0.1, 0.2])  # an older finished run: condensation, no loss on lee_news
    torch.save({'model': {}, 'model_args': {}, 'iter_num': 300, 'config': {'max_iters': 300}}, f'{runs}/noise_s1/ckpt.pt')
    calls = []
    monkeypatch.setattr(experiments.subprocess, 'call', lambda cmd, **kw: calls.append(cmd[1:]) or 0)
    experiments.main(['run', '--runs', runs, '--jobs', '1'])
    assert calls[0] == ['data/lee_news/prepare.py']  # the second corpus, once, before any run
    trained = [next(a for a in c if a.startswith('--out_dir=')) for c in calls if c[0] == 'train.py']
    assert trained == ['--out_dir=runs/disp0.1_s1']  # not ce (done), disp1.0 (trained), noise (trained, measured)
    assert calls[1][-1] == '--init_from=resume'
    condensation = [c[c.index('--ckpt') + 1] for c in calls if c[0] == 'eval.py' and '--loss_data' not in c]
    assert condensation == ['runs/disp0.1_s1/ckpt.pt', 'runs/disp1.0_s1/ckpt.pt']  # noise_s1 has its own already
    loss = [c[c.index('--ckpt') + 1] for c in calls if c[0] == 'eval.py' and '--loss_data' in c]
    assert loss == ['runs/disp0.1_s1/ckpt.pt', 'runs/disp1.0_s1/ckpt.pt', 'runs/noise_s1/ckpt.pt']
    assert all(c[c.index('--loss_data') + 1] == 'lee_news' for c in calls if '--loss_data' in c)


def test_a_distillation_run_waits_for_its_teacher(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(experiments, 'ROOT', str(tmp_path))
    monkeypatch.setattr(experiments, 'EXPERIMENT_SEEDS', dict(experiments.EXPERIMENT_SEEDS, size=(1,), distill=(1,)))
    os.chdir(tmp_path)
    calls = []

    def fake_call(cmd, **kw):  # training the 12 x 384 teacher leaves its finished checkpoint
        calls.append(cmd[1:])
        out = next((a.split('=', 1)[1] for a in cmd if a.startswith('--out_dir=')), None)
        if cmd[1] == 'train.py' and out.endswith('size12x384_s1'):
            torch.save({'model': {}, 'model_args': {}, 'iter_num': 300, 'config': {'max_iters': 300}}, f'{out}/ckpt.pt')
        return 0
    monkeypatch.setattr(experiments.subprocess, 'call', fake_call)
    # the dispersion teacher disp1.0_s1 is half trained and not selected: its student is skipped, and says why
    os.makedirs('runs/disp1.0_s1')
    torch.save({'model': {}, 'model_args': {}, 'iter_num': 150, 'config': {'max_iters': 300}}, 'runs/disp1.0_s1/ckpt.pt')
    experiments.main(['list', '--runs', 'runs', '--only', 'distill_disp1.0'])
    assert '[new, waiting for its teacher]' in capsys.readouterr().out
    experiments.main(['run', '--runs', 'runs', '--jobs', '2', '--only', 'size12x384_s1,distill'])
    trained = [next(a for a in c if a.startswith('--out_dir=')) for c in calls if c[0] == 'train.py']
    # the teacher first (round 1), then its two students (round 2); the other teacher's student not at all
    assert trained == ['--out_dir=runs/size12x384_s1', '--out_dir=runs/distill_ce12x384_s1',
                       '--out_dir=runs/distill_ce12x384_disp1.0_s1']
    student = next(c for c in calls if '--out_dir=runs/distill_ce12x384_disp1.0_s1' in c)
    assert '--teacher=runs/size12x384_s1/ckpt.pt' in student and '--dispersion_coeff=1.0' in student
    out = capsys.readouterr().out
    assert 'skipped runs/distill_disp1.0_s1: its teacher runs/disp1.0_s1/ckpt.pt is at iter 150 of 300' in out
