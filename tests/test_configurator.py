"""configurator.py: nanoGPT's semantics, and each of its traps turned into a working value or one sentence."""
import pytest

from configurator import configure, key_types

DEFAULTS = dict(batch_size=12, learning_rate=6e-4, max_iters=600000, compile=True, out_dir='out',
                init_from='scratch', betas=(0.9, 0.95), dispersion=None, dispersion_loc='all', maybe=None)
# what train.py's annotations declare (compile: bool | None = None; dispersion_loc: str | list = 'all')
KINDS = key_types({'dispersion': str | None, 'dispersion_loc': str | list, 'maybe': bool | None})


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
                             '--betas=(0.9, 0.99)'], KINDS)
    assert c['init_from'] == 'resume' and c['out_dir'] == '2024'
    assert c['dispersion'] == 'angular_spread' and c['betas'] == (0.9, 0.99)
    assert configure(DEFAULTS, ['--dispersion=x', '--dispersion=None'], KINDS)['dispersion'] is None


@pytest.mark.parametrize("raw,value", [("false", False), ("False", False), ("true", True), ("None", None),
                                       ("none", None)])
def test_a_none_default_key_is_typed(raw, value):
    """--compile=false must turn compile off: a string 'false' would be truthy (it compiled before)."""
    assert configure(DEFAULTS, [f'--maybe={raw}'], KINDS)['maybe'] is value
    with pytest.raises(SystemExit, match="'maybe' expects None or a bool"):
        configure(DEFAULTS, ['--maybe=sometimes'], KINDS)
    with pytest.raises(SystemExit, match="'maybe' expects None"):  # a None default without declared types
        configure(DEFAULTS, ['--maybe=true'])


def test_a_list_key_from_the_command_line_and_a_file(tmp_path):
    assert configure(DEFAULTS, ['--dispersion_loc=[1, 3]'], KINDS)['dispersion_loc'] == [1, 3]
    assert configure(DEFAULTS, ['--dispersion_loc=last'], KINDS)['dispersion_loc'] == 'last'
    f = tmp_path / 'c.py'
    f.write_text("dispersion_loc = [2, 4]\n")
    assert configure(DEFAULTS, [str(f)], KINDS)['dispersion_loc'] == [2, 4]
    with pytest.raises(SystemExit, match="'dispersion_loc' expects a string or a list, got 3"):
        configure(DEFAULTS, ['--dispersion_loc=3'], KINDS)


def test_files_compose_by_include_and_on_the_command_line(tmp_path):
    (tmp_path / 'base.py').write_text("batch_size = 4\nmax_iters = 10\n")
    (tmp_path / 'extra.py').write_text("dispersion = 'angular_spread'\nbatch_size = 6\n")
    (tmp_path / 'both.py').write_text("include('base.py')\ninclude('extra.py')\nmax_iters = batch_size * 2\n")
    c = configure(DEFAULTS, [str(tmp_path / 'both.py')], KINDS)
    assert (c['batch_size'], c['max_iters'], c['dispersion']) == (6, 12, 'angular_spread')
    c = configure(DEFAULTS, [str(tmp_path / 'base.py'), str(tmp_path / 'extra.py')], KINDS)
    assert (c['batch_size'], c['max_iters'], c['dispersion']) == (6, 10, 'angular_spread')


def test_values_are_literals_never_executed(tmp_path):
    marker = tmp_path / 'ran'
    c = configure(DEFAULTS, [f"--out_dir=__import__('os').mkdir('{marker}')"])
    assert not marker.exists() and c['out_dir'].startswith("__import__")


def test_malformed_argument_and_missing_file():
    with pytest.raises(SystemExit, match="--key=value"):
        configure(DEFAULTS, ['--compile'])
    with pytest.raises(SystemExit, match="Config file not found"):
        configure(DEFAULTS, ['config/nope.py'])


def test_doc_section_cuts_from_start_to_the_next_end():
    from configurator import doc_section
    doc = "title\n\n  python a.py\n  python b.py\n\nMore: x\n\nEnd"
    assert doc_section(doc, "  python", "\n\n") == "  python a.py\n  python b.py"
    assert doc_section(doc, "More", "\n\n") == "More: x"
    with pytest.raises(ValueError):
        doc_section(doc, "absent", "\n\n")


def test_script_defaults_reads_the_assignments_without_running_the_script(tmp_path):
    from configurator import script_defaults
    marker = tmp_path / 'ran'
    script = tmp_path / 'script.py'
    script.write_text(f"import os\nos.mkdir({str(marker)!r})\nbatch_size = 4 * 8\nmaybe: bool | None = None\n"
                      "name = 'gpt'\nconfig_keys = [k for k in globals()]\nlater = 1\n")
    defaults, kinds = script_defaults(str(script))
    assert defaults == {'batch_size': 32, 'maybe': None, 'name': 'gpt'}  # 4 * 8; nothing after config_keys
    assert kinds == {'maybe': (bool, type(None))} and not marker.exists()
