"""Tests for experiments.py and report.py: which runs it starts, resumes or skips, and the report's arithmetic (seed means and
standard deviations, checked against hand-computed numbers on hand-written run folders).

Run: python -m pytest -q tests/test_experiments.py
"""
import json
import os

import pytest
import torch

import experiments
import report


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
    # lee_news loss: CE 8.0 and 7.0 -> 7.500 +- 0.707; dispersion 7.35: -2.0%
    write_run(f'{runs}/ce_s1', [9.0, 5.0], [0.1, 0.2, 0.4], ms=100, gen_loss=8.0)
    write_run(f'{runs}/ce_s2', [9.0, 5.2], [0.1, 0.2, 0.6], ms=100, resumed_at=0, gen_loss=7.0)  # its log holds redone steps
    # dispersion: blocks' mean cos (0.1 + 0.1) / 2 = 0.1 vs CE's (0.3 + 0.4) / 2 = 0.35: -71.4%; loss -2.0%
    write_run(f'{runs}/disp1.0_s1', [9.0, 4.998], [0.1, 0.1, 0.1], ms=110, spearman=0.5, gen_loss=7.35)
    for name in ('ce_s1', 'ce_s2', 'disp1.0_s1'):
        (tmp_path / 'runs' / name / 'code.txt').write_text('abc1234\n')
    out = str(tmp_path / 'report')
    experiments.main(['report', '--runs', runs, '--out', out])
    md = open(os.path.join(out, 'results.md')).read()
    ce_row = next(l for l in md.splitlines() if l.startswith('| ce |'))
    assert '| 2 | 5.100 ± 0.141 | +0.0% | 7.500 ± 0.707 | +0.0% | 0.350 ± 0.071 |' in ce_row
    disp_row = next(l for l in md.splitlines() if l.startswith('| disp1.0 |'))
    # 1..n-1 leaves out the final norm's entry: CE (0.2 + 0.2) / 2 = 0.2, dispersion 0.1: -50%
    # one seed: its value, no '± 0.000' (the seeds column says 1)
    assert ('| 1 | 4.998 | -2.0% | 7.350 | -2.0% | 0.100 | -71.4% | 0.100 | -50.0% | '
            '0.50 |') in disp_row
    assert '| 110 | +10.0% |' in disp_row
    assert 'python train.py config/research.py config/dispersion.py --dispersion_coeff=1.0 --seed=1' in md
    assert '## Dispersion against the baselines\n\nCode version: abc1234.\n' in md  # every row's RUN/code.txt
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
    # the data, once, before any run: the research shape's and the second corpus (neither is in tmp_path)
    assert calls[:2] == [['data/shakespeare/prepare.py'], ['data/lee_news/prepare.py']]
    trained = [next(a for a in c if a.startswith('--out_dir=')) for c in calls if c[0] == 'train.py']
    assert trained == ['--out_dir=runs/disp0.1_s1']  # not ce (done), disp1.0 (trained), noise (trained, measured)
    assert calls[2][-1] == '--init_from=resume'
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
    # (the two students run side by side, --jobs 2: in either order)
    assert trained[0] == '--out_dir=runs/size12x384_s1'
    assert sorted(trained[1:]) == ['--out_dir=runs/distill_ce12x384_disp1.0_s1', '--out_dir=runs/distill_ce12x384_s1']
    student = next(c for c in calls if '--out_dir=runs/distill_ce12x384_disp1.0_s1' in c)
    assert '--teacher=runs/size12x384_s1/ckpt.pt' in student and '--dispersion_coeff=1.0' in student
    out = capsys.readouterr().out
    assert 'skipped runs/distill_disp1.0_s1: its teacher runs/disp1.0_s1/ckpt.pt is at iter 150 of 300' in out


def append_steps(folder, steps):
    """Training-step records (distill term, embedding lr) added to a hand-written run's log."""
    with open(os.path.join(folder, 'log.jsonl'), 'a') as f:
        f.write(''.join(json.dumps(dict({'loss': 5.0, 'ce': 5.0, 'ms_per_iter': 100.0}, **s)) + '\n' for s in steps))


def test_report_sizes_distillation_recovery_longer_forgetting_and_per_run_rows(tmp_path):
    runs = str(tmp_path / 'runs')
    write_run(f'{runs}/size12x384_s1', [9.0, 4.0], [0.0, 0.1, 0.2, 0.3, 0.4], gen_loss=7.0)  # the target profile
    write_run(f'{runs}/ce_s1', [9.0, 5.0], [0.0, 0.3, 0.4], gen_loss=8.0)
    write_run(f'{runs}/size4x128_s1', [9.0, 6.0], [0.1, 0.1, 0.1, 0.1, 0.1], spearman=0.0, gen_loss=9.0)
    write_run(f'{runs}/disp1.0_s1', [9.0, 4.9], [0.0, 0.0, 0.1], gen_loss=7.9)
    write_run(f'{runs}/distill_ce12x384_s1', [9.0, 4.8], [0.0, 0.2, 0.4], gen_loss=7.8)
    append_steps(f'{runs}/distill_ce12x384_s1', [{'iter': 290, 'distill': 0.5}, {'iter': 300, 'distill': 0.25}])
    write_run(f'{runs}/ce_900_s1', [9.0, 4.5], [0.0, 0.2, 0.4])
    write_run(f'{runs}/disp1.0_900_s1', [9.0, 4.41], [0.0, 0.0, 0.1])
    write_run(f'{runs}/forget_s1', [9.0, 6.5], [0.0, 0.9, 0.9])
    append_steps(f'{runs}/forget_s1', [{'iter': 200, 'lr_embedding': 3.6e-4}, {'iter': 201, 'lr_embedding': 3.5e-4},
                                       {'iter': 210, 'lr_embedding': 3.4e-4}])
    experiments.main(['report', '--runs', runs])
    md = open(f'{runs}/results.md').read().splitlines()
    row = lambda start: next(l for l in md if l.startswith(start))  # noqa: E731
    # sizes: 12 L d^2 = 12 * 4 * 128^2 = 0.79M; 6 x 192's profile at l/n = 0.25 is (0 + 0.3) / 2 = 0.15
    assert row('| 4 x 128 |') == ('| 4 x 128 | 0.79M | 1 | 6.000 | 9.000 | 0.00 | 1.00 | '
                                  '0.100 | 0.100 | 0.100 | 0.100 | 0.100 | 0.100 |')
    assert row('| 6 x 192 |').endswith('| 0.000 | 0.150 | 0.300 | 0.350 | 0.400 |')
    assert row('| 12 x 384 |').startswith('| 12 x 384 | 21.23M | 1 | 4.000 | 7.000 |')
    assert os.path.getsize(f'{runs}/size_mean_cos.png') > 10_000
    # recovery: CE's middle layer 0.3 against the target's 0.2 at l/n = 0.5: |0.1| / 3 = 0.033; size 4 x 128:
    # (0.1 + 0 + 0.1 + 0.2 + 0.3) / 5 = 0.140 and rho 0 - 1 = -1
    assert row('| main | ce |') == '| main | ce | 1 | 0.033 | 1.00 | +0.00 |'
    assert row('| size | size4x128 |') == '| size | size4x128 | 1 | 0.140 | 0.00 | -1.00 |'
    assert not any(l.startswith('| size | size12x384 |') for l in md)
    # distillation: the student's profile is the 12 x 384 teacher's at l/n = 0, 0.5, 1 (distance 0); to the
    # dispersion teacher (0, 0, 0.1): (0 + 0.2 + 0.3) / 3 = 0.167; the last logged distill term 0.25
    assert row('| student, distilled from ce12x384 |').endswith('| 0.000 | 0.167 | 0.250 |')
    assert row('| student, CE only |').endswith('| 0.033 | 0.200 | — |')  # (0 + 0.3 + 0.3) / 3
    # the 12 x 384 teacher (0, .1, .2, .3, .4) against (0, 0, 0.1) read at l/n = 0, .25, .5, .75, 1 (0, 0, 0, .05, .1):
    # (0 + .1 + .2 + .25 + .3) / 5 = 0.170
    assert row('| teacher ce12x384 (size12x384_s1) |').endswith('| 0.000 | 0.170 | — |')
    # longer: 4.41 / 4.5 - 1 = -2.0%; at 300 steps 4.9 / 5.0 - 1 = -2.0% too
    assert row('| lambda 1.0, 900 steps |').endswith('| -2.0% |') and row('| CE, 900 steps |').endswith('| +0.0% |')
    assert row('| active forgetting |').endswith('| 3.60e-04 / 3.50e-04 (step 201) |')
    # per run: every run's own row
    assert row('| size4x128_s1 |') == ('| size4x128_s1 | size | — | 6.0000 | 9.0000 | +0.000 | +1.000 | 0.1000 | '
                                       '0.1000 0.1000 0.1000 0.1000 0.1000 |')  # code: no code.txt here
    assert row('| ce_900_s1 |').startswith('| ce_900_s1 | longer | — | 4.5000 | — |')


def test_report_keeps_committed_rows_of_runs_without_a_folder(tmp_path):
    """--keep: the per-run rows of a results.md stand for the runs that have no folder; a folder wins over its row;
    the code column says which version trained each run."""
    runs = str(tmp_path / 'runs')
    write_run(f'{runs}/ce_s1', [9.0, 5.0], [0.1, 0.2, 0.4], gen_loss=8.0)
    with open(f'{runs}/ce_s1/code.txt', 'w') as f:
        f.write('1234abc\n')
    write_run(f'{runs}/mlp64_s1', [9.0, 5.5], [0.1, 0.3, 0.5], gen_loss=8.5)
    kept = tmp_path / 'old.md'
    kept.write_text('# old\n\n| run | experiment | val loss | lee_news loss | Spearman rho | Kendall tau | blocks mean cos | '
                    'per-layer mean cos (l = 0..n) |\n|---|---|---|---|---|---|---|---|\n'
                    '| ce_s1 | main | 9.9999 | 9.9999 | +1.000 | +1.000 | 0.9000 | 0.9000 0.9000 0.9000 |\n'
                    '| ce_s2 | main | 5.2000 | — | +0.500 | +1.000 | 0.4000 | 0.1000 0.2000 0.6000 |\n'
                    '| mlp16_s1 | mlp | 6.0000 | 9.0000 | +1.000 | +1.000 | 0.3000 | 0.1000 0.2000 0.4000 |\n\n## Commands\n')
    experiments.main(['report', '--runs', runs, '--keep', str(kept)])
    md = open(f'{runs}/results.md').read().splitlines()
    row = lambda start: next(l for l in md if l.startswith(start))  # noqa: E731
    # CE: the folder's 5.0 (not the kept 9.9999) and the kept 5.2 -> 5.100 +- 0.141; news: only seed 1's 8.0;
    # blocks (0.2 + 0.4) / 2 = 0.3 and (0.2 + 0.6) / 2 = 0.4 -> 0.350 +- 0.071; rho (1.0 + 0.5) / 2 = 0.75;
    # step time only from the folder's log (100 ms)
    assert row('| ce |').startswith('| ce | 2 | 5.100 ± 0.141 | +0.0% | 8.000 | +0.0% | 0.350 ± 0.071 | +0.0% |')
    assert '| 0.75 ± 0.35 | 1.00 ± 0.00 | 100 | +0.0% |' in row('| ce |')
    assert row('| ce_s1 |').startswith('| ce_s1 | main | 1234abc | 5.0000 | 8.0000 |')
    assert row('| ce_s2 |').startswith('| ce_s2 | main | — | 5.2000 | — | +0.500 |')  # a row written without the column
    # a table whose rows come from several versions names each with its runs: the folder's 1234abc, the kept row's none
    assert row('Code versions') == 'Code versions (not one): 1234abc: ce_s1; not recorded: ce_s2.'
    # the MLP table: the kept width 16 has no probe (—), the folder's width 64 has its probe at step 0
    assert row('| 16 |').startswith('| 16 | 0.08 | — | — | — | — | +1.00 | +1.00 | 6.000 |')
    assert row('| 64 |').startswith('| 64 | 0.33 | +1.00 | +1.00 | +1.00 | +1.00 | +1.00 | +1.00 | 5.500 |')
    # the curves over training need every run's log: CE has a kept seed, so it is left out, and with it the figure
    assert not any(l.startswith('## Condensation over training') for l in md)
    # the report's own output kept again gives the same per-run rows (a committed results.md is its own input)
    experiments.main(['report', '--runs', str(tmp_path / 'none'), '--out', str(tmp_path / 'again'),
                      '--keep', f'{runs}/results.md'])
    again = open(tmp_path / 'again' / 'results.md').read()
    per_run = lambda text: text[text.index('## Per run'):text.index('## Commands')]  # noqa: E731
    assert per_run(again) == per_run('\n'.join(md))
    (tmp_path / 'notes.md').write_text('# no table here\n')
    with pytest.raises(SystemExit, match='has no per-run table'):
        experiments.main(['report', '--runs', runs, '--keep', str(tmp_path / 'notes.md')])
    with pytest.raises(SystemExit, match='No .*missing.md to read runs from'):
        experiments.main(['report', '--runs', runs, '--keep', str(tmp_path / 'missing.md')])


def test_record_code_writes_the_commit_and_a_second_line_when_other_code_resumes(tmp_path, monkeypatch):
    import subprocess
    repo = tmp_path / 'repo'
    repo.mkdir()
    git = lambda *a: subprocess.run(['git', '-c', 'user.name=t', '-c', 'user.email=t@t', *a], cwd=repo, check=True,  # noqa: E731
                                    capture_output=True, text=True).stdout.strip()
    git('init', '-q')
    (repo / 'train.py').write_text('a = 1\n')
    git('add', 'train.py')
    git('commit', '-qm', 'one')
    monkeypatch.setattr(experiments, 'ROOT', str(repo))
    run = tmp_path / 'ce_s1'
    run.mkdir()
    first = git('rev-parse', '--short=7', 'HEAD')
    experiments.record_code(str(run))
    experiments.record_code(str(run))  # the same code again: one line
    assert experiments.read_code(str(run)) == first
    (repo / 'train.py').write_text('a = 2\n')  # an uncommitted change to a tracked file
    (repo / 'notes.txt').write_text('untracked files do not count\n')
    experiments.record_code(str(run))
    assert experiments.read_code(str(run)) == f'{first} then {first}+changes'
    assert experiments.read_code(str(tmp_path)) is None


def test_rerun_trains_into_a_temporary_folder_and_prints_both_columns(tmp_path, monkeypatch, capsys):
    runs, out = str(tmp_path / 'runs'), str(tmp_path / 'assets')
    write_run(f'{runs}/ce_s1', [9.0, 5.0], [0.0, 0.2, 0.4], spearman=1.0, kendall=1.0, gen_loss=8.0)
    experiments.main(['report', '--runs', runs, '--out', out])
    assert report.committed_row(f'{out}/results.md', 'ce_s1') == {
        'val loss': 5.0, 'lee_news loss': 8.0, 'Spearman rho': 1.0, 'Kendall tau': 1.0, 'blocks mean cos': 0.3,
        'l=0': 0.0, 'l=1': 0.2, 'l=2': 0.4}
    calls = []

    def fake_call(cmd, **kw):  # train.py leaves the log and its condensation; eval.py --loss_data the loss
        calls.append(cmd[1:])
        if cmd[1] == 'train.py':
            folder = next(a.split('=', 1)[1] for a in cmd if a.startswith('--out_dir='))
            write_run(folder, [9.0, 5.1], [0.0, 0.2, 0.5], spearman=0.5, kendall=1.0)
        elif '--loss_data' in cmd:
            with open(os.path.join(cmd[cmd.index('--out') + 1], 'loss_lee_news.json'), 'w') as f:
                json.dump({'loss': 8.25}, f)
        return 0
    monkeypatch.setattr(experiments.subprocess, 'call', fake_call)
    monkeypatch.setattr(experiments, 'ROOT', str(tmp_path))  # a checkout without token files
    committed, again = experiments.main(['rerun', 'ce_s1', '--runs', runs, '--results', f'{out}/results.md'])
    assert calls[:2] == [['data/shakespeare/prepare.py'], ['data/lee_news/prepare.py']]  # prepared first
    folder = next(a.split('=', 1)[1] for a in calls[2] if a.startswith('--out_dir='))
    assert os.path.basename(folder) == 'ce_s1' and not folder.startswith(runs)  # a temporary folder, not the run's
    assert calls[2][:2] == ['train.py', 'config/research.py'] and '--seed=1' in calls[2]
    printed = capsys.readouterr().out
    assert 'val loss             5.0000     5.1000     +0.1000' in printed
    assert 'lee_news loss        8.0000     8.2500     +0.2500' in printed
    assert 'Spearman rho         1.0000     0.5000     -0.5000' in printed
    assert 'l=2                  0.4000     0.5000     +0.1000' in printed
    assert again['blocks mean cos'] == pytest.approx(0.35) and committed['blocks mean cos'] == 0.3
    with pytest.raises(SystemExit, match="no run named 'nope'"):
        experiments.main(['rerun', 'nope', '--runs', runs, '--results', f'{out}/results.md'])
    with pytest.raises(SystemExit, match='no per-run row for disp1.0_s1'):
        experiments.main(['rerun', 'disp1.0_s1', '--runs', runs, '--results', f'{out}/results.md'])


def test_a_run_finished_since_the_list_was_made_is_not_run_again(tmp_path, monkeypatch):
    """Two `experiments.py run` calls side by side: the run list is made at the start, so a run may be done by the
    time its turn comes; it must not be resumed (a finished checkpoint retrained) or measured again."""
    folder = str(tmp_path / 'ce_s1')
    write_run(folder, [9.0, 5.0], [0.1, 0.2], gen_loss=7.0)
    calls = []
    monkeypatch.setattr(experiments.subprocess, 'call', lambda cmd, **kw: calls.append(cmd) or 0)
    assert experiments.execute(('main', 'ce', 1, folder, ['config/research.py']), 1) == (folder, 0)
    assert calls == []
