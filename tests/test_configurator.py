"""configurator.py: nanoGPT's semantics, and each of its traps turned into a working value or one sentence."""
import pytest

from configurator import configure

DEFAULTS = dict(batch_size=12, learning_rate=6e-4, max_iters=600000, compile=True, out_dir='out',
                init_from='scratch', betas=(0.9, 0.95), dispersion=None)


def test_file_then_overrides_in_order(tmp_path, capsys):
    f = tmp_path / 'c.py'
    f.write_text("import math\nbatch_size = 4 * 8\nout_dir = 'out-' + str(batch_size)\nlearning_rate = 1\n")
    c = configure(DEFAULTS, [str(f), '--batch_size=7'])
    assert c['batch_size'] == 7 and c['out_dir'] == 'out-32'
    assert c['learning_rate'] == 1.0 and isinstance(c['learning_rate'], float)
    assert DEFAULTS['batch_size'] == 12  # defaults untouched
    assert "Overriding: batch_size = 7" in capsys.readouterr().out


def test_int_for_float_and_integral_float_for_int():
    c = configure(DEFAULTS, ['--learning_rate=1', '--max_iters=1e4'])
    assert c['learning_rate'] == 1.0 and type(c['learning_rate']) is float
    assert c['max_iters'] == 10000 and type(c['max_iters']) is int
    with pytest.raises(SystemExit, match="'max_iters' expects an int, got 1.5"):
        configure(DEFAULTS, ['--max_iters=1.5'])


@pytest.mark.parametrize("raw,value", [("True", True), ("False", False), ("true", True), ("false", False)])
def test_booleans(raw, value):
    assert configure(DEFAULTS, [f'--compile={raw}'])['compile'] is value


def test_wrong_types_name_key_and_type():
    with pytest.raises(SystemExit, match="'compile' expects a bool"):
        configure(DEFAULTS, ['--compile=maybe'])
    with pytest.raises(SystemExit, match="'batch_size' expects an int, got 'lots'"):
        configure(DEFAULTS, ['--batch_size=lots'])
    with pytest.raises(SystemExit, match="'learning_rate' expects a float"):
        configure(DEFAULTS, ['--learning_rate=True'])


def test_unknown_key_names_closest():
    with pytest.raises(SystemExit, match="Unknown config key 'learning_rat'. Did you mean 'learning_rate'"):
        configure(DEFAULTS, ['--learning_rat=0.1'])


def test_unknown_key_in_file(tmp_path):
    f = tmp_path / 'c.py'
    f.write_text("batchsize = 3\n")
    with pytest.raises(SystemExit, match="Unknown config key 'batchsize'. Did you mean 'batch_size'"):
        configure(DEFAULTS, [str(f)])


def test_strings_none_defaults_and_tuples():
    c = configure(DEFAULTS, ['--init_from=resume', '--out_dir=2024', '--dispersion=angular_spread',
                             '--betas=(0.9, 0.99)'])
    assert c['init_from'] == 'resume' and c['out_dir'] == '2024'
    assert c['dispersion'] == 'angular_spread' and c['betas'] == (0.9, 0.99)
    assert configure(DEFAULTS, ['--dispersion=x', '--dispersion=None'])['dispersion'] is None


def test_malformed_argument_and_missing_file():
    with pytest.raises(SystemExit, match="--key=value"):
        configure(DEFAULTS, ['--compile'])
    with pytest.raises(SystemExit, match="Config file not found"):
        configure(DEFAULTS, ['config/nope.py'])
