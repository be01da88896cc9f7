"""
configurator.py: nanoGPT's "poor man's configurator", with its traps removed.

  python train.py config/train_shakespeare.py --batch_size=32 --max_iters=1e4 --compile=False

Each argument is either a config file (plain Python assignments, executed in order) or --key=value. Every key
must already exist among the script's defaults. Values are parsed with ast.literal_eval (a bare word stays a
string) and must have the default's type, with the conversions a person means:
  an int for a float key (--learning_rate=1)        -> 1.0
  an integral float for an int key (--max_iters=1e4) -> 10000
  True / False / true / false for a bool key
  anything for a key whose default is None
Anything else ends with one sentence naming the key and the type it expects; an unknown key names the closest
existing ones.
"""

import ast
import difflib
import os
import types

_BOOLS = {"true": True, "false": False}


def _type_name(value):
    return {bool: "a bool (True/False)", int: "an int", float: "a float", str: "a string",
            tuple: "a tuple", list: "a list", dict: "a dict"}.get(type(value), type(value).__name__)


def coerce(key, value, default):
    """value converted to the type of default, or SystemExit naming the key and the expected type."""
    if default is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _BOOLS:
            return _BOOLS[value.lower()]
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, str):
        return value if isinstance(value, str) else str(value)
    elif isinstance(default, (tuple, list)) and isinstance(value, (tuple, list)):
        return type(default)(value)
    elif isinstance(value, type(default)):
        return value
    raise SystemExit(f"Config key '{key}' expects {_type_name(default)}, got {value!r} ({_type_name(value)}).")


def _unknown(key, known):
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return SystemExit(f"Unknown config key '{key}'.{hint}")


def _parse_value(raw):
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw  # a bare word such as --init_from=resume


def configure(defaults, argv):
    """The config after applying argv (config files and --key=value, in order) to defaults (a dict).

    Returns a new dict with the same keys; prints each change, as nanoGPT does."""
    config = dict(defaults)
    for arg in argv:
        if not arg.startswith("--"):
            if not os.path.exists(arg):
                raise SystemExit(f"Config file not found: {arg}.")
            print(f"Overriding config with {arg}:")
            with open(arg) as f:
                source = f.read()
            print(source)
            namespace = dict(config, __file__=arg)  # a config file can build on another one beside it
            exec(compile(source, arg, "exec"), namespace)
            for key, value in namespace.items():
                if key.startswith("_") or isinstance(value, (types.ModuleType, types.FunctionType, type)):
                    continue  # imports and helpers inside a config file
                if key not in config:
                    raise _unknown(key, config)
                config[key] = coerce(key, value, defaults[key])
        else:
            key, eq, raw = arg[2:].partition("=")
            if not eq:
                raise SystemExit(f"Write overrides as --key=value (got '{arg}').")
            if key not in config:
                raise _unknown(key, config)
            value = _parse_value(raw)
            if isinstance(defaults[key], str) and not isinstance(value, str):
                value = raw  # --out_dir=2024 is the folder '2024'
            config[key] = coerce(key, value, defaults[key])
            print(f"Overriding: {key} = {config[key]!r}")
    return config
