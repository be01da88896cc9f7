"""Tests for midtrain.py: which commands a released-model run still needs (training first, resumed from its
checkpoint, measurements skipped once written) and the report's arithmetic on hand-written run folders.

Run: python -m pytest -q tests/test_midtrain.py
"""
import json
import os

import pytest

import midtrain


def runs_by_name(runs):
    return {name: (name, folder, args) for name, folder, args in midtrain.all_runs(runs)}


def test_the_run_set_is_three_seeds_of_each_setting_and_one_lora_pair(tmp_path):
    names = set(runs_by_name(str(tmp_path)))
    assert names == {'step0', 'ce_s1', 'ce_s2', 'ce_s3', 'disp0.1_s1', 'disp0.1_s2', 'disp0.1_s3', 'disp1.0_s1',
                     'disp1.0_s2', 'disp1.0_s3', 'lora_ce_s1', 'lora_disp0.1_s1'}
    _, folder, args = runs_by_name(str(tmp_path))['lora_disp0.1_s1']
    assert args == ['config/midtrain_smollm2.py', 'config/midtrain_smollm2_lora.py', 'config/dispersion.py',
                    '--seed=1', f'--out_dir={folder}']


def test_a_new_run_trains_first_then_measures_its_checkpoint(tmp_path):
    name, folder, args = runs_by_name(str(tmp_path))['disp1.0_s1']
    steps = midtrain.todo(name, folder, args)
    assert steps[0] == ['train.py', 'config/midtrain_smollm2.py', 'config/dispersion.py', '--dispersion_coeff=1.0',
                        '--seed=1', f'--out_dir={folder}']
    assert len(steps) == 5  # train, condensation, news loss, MMLU 0-shot, MMLU 5-shot
    ckpt = os.path.join(folder, 'ckpt.pt')
    assert all(s[:3] == ['eval.py', '--ckpt', ckpt] for s in steps[1:])
    assert steps[3][-2:] == ['--out', os.path.join(folder, 'eval', 'mmlu0')]
    assert steps[4][steps[4].index('--fewshot') + 1] == '5'
    assert steps[4][-2:] == ['--out', os.path.join(folder, 'eval', 'mmlu5')]


def test_an_interrupted_run_resumes_and_a_finished_measurement_is_not_redone(tmp_path):
    name, folder, args = runs_by_name(str(tmp_path))['ce_s2']
    os.makedirs(os.path.join(folder, 'eval', 'mmlu0'))
    open(os.path.join(folder, 'ckpt.pt'), 'w').close()  # training stopped after a checkpoint
    assert midtrain.todo(name, folder, args)[0][-1] == '--init_from=resume'
    open(os.path.join(folder, 'eval', 'trained'), 'w').close()  # training finished
    with open(os.path.join(folder, 'eval', 'mmlu0', 'tasks.json'), 'w') as f:
        json.dump({}, f)
    steps = midtrain.todo(name, folder, args)
    assert [s[0] for s in steps] == ['eval.py'] * 3  # no training; condensation, news loss and 5-shot remain
    assert not any(s[-1].endswith('mmlu0') for s in steps)


def test_step0_measures_the_released_model_on_the_runs_windows(tmp_path):
    name, folder, args = runs_by_name(str(tmp_path))['step0']
    steps = midtrain.todo(name, folder, args)
    assert len(steps) == 4 and all(s[1:3] == ['--init_from', midtrain.MODEL] for s in steps)
    loss = next(s for s in steps if '--loss_data' in s)
    # the runs' val windows: eval_iters 10 x batch_size 2 = 20 windows of 512 tokens
    assert loss[loss.index('--num_sequences') + 1] == '20' and loss[loss.index('--seq_len') + 1] == '512'


def write_run(folder, val, news, mean_cos, acc0, acc5, rho=0.5, val0=3.47):
    ev = os.path.join(folder, 'eval')
    for k, acc in ((0, acc0), (5, acc5)):
        os.makedirs(os.path.join(ev, f'mmlu{k}'), exist_ok=True)
        with open(os.path.join(ev, f'mmlu{k}', 'tasks.json'), 'w') as f:  # two subjects of 20 rows and one of 10
            json.dump({'tasks': {'a': {'acc': acc[0], 'n': 20}, 'b': {'acc': acc[1], 'n': 20},
                                 'c': {'acc': acc[2], 'n': 10}}}, f)
    with open(os.path.join(ev, 'condensation_lee-news_S512_N100.json'), 'w') as f:
        json.dump({'mean_cos': mean_cos, 'spearman': rho, 'kendall': rho}, f)
    with open(os.path.join(ev, f'loss_{midtrain.NEWS}.json'), 'w') as f:
        json.dump({'loss': news}, f)
    if val is not None:
        with open(os.path.join(folder, 'log.jsonl'), 'w') as f:
            for r in ({'iter': 0, 'event': 'start'}, {'iter': 0, 'val_loss': val0}, {'iter': 32, 'loss': 3.0},
                      {'iter': 32, 'val_loss': val}):
                f.write(json.dumps(r) + '\n')


def test_report_rows_and_seed_means_by_hand(tmp_path):
    runs = str(tmp_path)
    # step 0 has no log: its val loss is any run's first eval (3.47)
    write_run(os.path.join(runs, 'step0'), None, 3.5, [1.0, 0.5, 0.5], (0.25, 0.25, 0.3), (0.2, 0.2, 0.2))
    write_run(os.path.join(runs, 'ce_s1'), 3.3, 3.4, [1.0, 0.5, 0.7], (0.3, 0.2, 0.1), (0.25, 0.25, 0.5))
    write_run(os.path.join(runs, 'ce_s2'), 3.5, 3.6, [1.0, 0.4, 0.6], (0.3, 0.2, 0.1), (0.25, 0.25, 0.5))
    write_run(os.path.join(runs, 'disp1.0_s1'), 3.25, 3.45, [1.0, 0.2, 0.2], (0.3, 0.2, 0.1), (0.25, 0.25, 0.5))
    lines = midtrain.report(runs).splitlines()
    row = {l.split(' | ')[0][2:]: l for l in lines if l.startswith('| ')}
    # MMLU weighted by rows: (0.3 * 20 + 0.2 * 20 + 0.1 * 10) / 50 = 0.22; 5-shot (5 + 5 + 5) / 50 = 0.30
    # blocks mean: hidden states 1..n, (0.5 + 0.7) / 2 = 0.6
    assert row['ce_s1'] == '| ce_s1 | 3.3000 | 3.4000 | 0.50 | 0.50 | 0.6000 | 0.220 | 0.300 |'
    assert row['step0'].startswith('| step0 | 3.4700 | 3.5000 |')
    # two seeds: val (3.3, 3.5) -> 3.4 +- sqrt(0.02) = 0.1414; blocks (0.6, 0.5) -> 0.55 +- 0.0707
    assert row['ce'] == '| ce | 2 | 3.4000 ± 0.1414 | 3.5000 ± 0.1414 | 0.50 ± 0.00 | 0.50 ± 0.00 | 0.5500 ± 0.0707 | 0.220 ± 0.000 | 0.300 ± 0.000 |'
    # one seed: the seeds column says so, and no standard deviation is shown
    assert row['disp1.0'] == '| disp1.0 | 1 | 3.2500 | 3.4500 | 0.50 | 0.50 | 0.2000 | 0.220 | 0.300 |'


def test_an_unknown_run_name_is_one_sentence(tmp_path):
    with pytest.raises(SystemExit, match=r"^No run named ce_s9: one of step0, "):
        midtrain.main(['list', '--runs', str(tmp_path), '--only', 'ce_s9'])
