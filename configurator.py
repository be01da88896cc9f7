"""
configurator.py: nanoGPT's "poor man's configurator", with its traps removed.

  python train.py config/train_shakespeare.py config/dispersion.py --batch_size=32 --max_iters=1e4 --compile=False
  python train.py --help

Each argument is either a config file or --key=value, applied in order (so several files compose, later ones
winning). Config files are Python and run as code, as in nanoGPT: run only config files you trust. A file can
build on another one beside it with include('train_shakespeare.py') (the included file's assignments land
where the call stands). --key=value values are parsed with ast.literal_eval, which reads literals only and
never executes anything (a bare word stays a string).

Every key must already exist among the script's defaults, and a value must have the default's type, with the
conversions a person means:
  an int for a float key (--learning_rate=1)        -> 1.0
  an integral float for an int key (--max_iters=1e4) -> 10000
  True / False / true / false for a bool key
A key whose default is None, or that takes more than one type, declares its types with an annotation in the
script (`compile: bool | None = None`, `dispersion_loc: str | list = 'all'`); 'None' / 'none' give None there.
Anything else ends with one sentence naming the key and the type it expects; an unknown key names the closest
existing ones.
"""

import ast
import difflib
import os
import types

_BOOLS = {"true": True, "false": False}
_NAMES = {bool: "a bool (True/False)", int: "an int", float: "a float", str: "a string", tuple: "a tuple",
          list: "a list", dict: "a dict", type(None): "None"}


def _type_name(value):
    return _NAMES.get(type(value), type(value).__name__)


def _coerce_to(value, kind):
    """value as type `kind` (bool, int, float, str, list, tuple, NoneType), or raise ValueError."""
    if kind is type(None):
        if value is None or (isinstance(value, str) and value.lower() == "none"):
            return None
    elif kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _BOOLS:
            return _BOOLS[value.lower()]
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind in (list, tuple):
        if isinstance(value, (list, tuple)):
            return kind(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    elif isinstance(value, kind):
        return value
    raise ValueError


def coerce(key, value, default, kinds=None):
    """value converted to one of `kinds` (default: the type of default), or SystemExit naming the key and the
    types it expects. With several kinds, None is tried first, then the others in the given order."""
    kinds = sorted(kinds or (type(default),), key=lambda kind: kind is not type(None))
    if len(kinds) == 1 and kinds[0] is str and not isinstance(value, str):
        return str(value)  # --out_dir=2024 is the folder '2024'
    for kind in kinds:
        try:
            return _coerce_to(value, kind)
        except ValueError:
            pass
    expected = " or ".join(_NAMES.get(k, k.__name__) for k in kinds)
    raise SystemExit(f"Config key '{key}' expects {expected}, got {value!r} ({_type_name(value)}).")


def key_types(annotations):
    """{key: (type, ...)} from a module's annotations such as `bool | None` or `str | list`."""
    out = {}
    for key, ann in annotations.items():
        out[key] = tuple(getattr(ann, "__args__", None) or (ann,))
    return out


def script_defaults(path, stop="config_keys"):
    """(defaults, kinds) of a script such as train.py, read without running it: its module-level `key = value`
    assignments up to `stop = ...` (literals and arithmetic such as 5 * 8, evaluated with no names in scope) and
    the types its annotations declare (key_types). For tools that need train.py's defaults: importing train.py
    would train."""
    tree = ast.parse(open(path).read())
    defaults, annotations = {}, {}
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            if target.id == stop:
                break
            defaults[target.id] = eval(compile(ast.Expression(node.value), path, "eval"), {})
            if isinstance(node, ast.AnnAssign):
                annotations[target.id] = eval(compile(ast.Expression(node.annotation), path, "eval"), {})
    return defaults, key_types(annotations)


def _unknown(key, known):
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return SystemExit(f"Unknown config key '{key}'.{hint}")


def _parse_value(raw):
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw  # a bare word such as --init_from=resume


def read_file(path, namespace=None, echo=False):
    """Run config file `path` (Python) in namespace (a dict, changed in place) and return it. The file may call
    include('other.py') to run a file beside it at that point."""
    if not os.path.isfile(path):
        raise SystemExit(f"Config file not found: {path}.")
    namespace = {} if namespace is None else namespace
    with open(path) as f:
        source = f.read()
    if echo:
        print(f"Overriding config with {path}:\n{source}")
    here = os.path.dirname(path)
    outer = namespace.get("include")
    namespace["include"] = lambda name: read_file(os.path.join(here, name), namespace, echo)
    namespace["__file__"] = path
    exec(compile(source, path, "exec"), namespace)
    namespace["include"] = outer
    return namespace


def configure(defaults, argv, kinds=None):
    """The config after applying argv (config files and --key=value, in order) to defaults (a dict); `types`
    kinds ({key: (type, ...)}, see key_types) for keys that take None or several types.

    Returns a new dict with the same keys; prints each change, as nanoGPT does."""
    kinds = kinds or {}
    config = dict(defaults)
    for arg in argv:
        if not arg.startswith("--"):
            namespace = read_file(arg, dict(config), echo=True)
            for key, value in namespace.items():
                if key.startswith("_") or key == "include" or isinstance(value, (types.ModuleType, types.FunctionType, type)):
                    continue  # imports and helpers inside a config file
                if key not in config:
                    raise _unknown(key, config)
                config[key] = coerce(key, value, defaults[key], kinds.get(key))
        else:
            key, eq, raw = arg[2:].partition("=")
            if not eq:
                raise SystemExit(f"Write overrides as --key=value (got '{arg}').")
            if key not in config:
                raise _unknown(key, config)
            config[key] = coerce(key, _parse_value(raw), defaults[key], kinds.get(key))
            print(f"Overriding: {key} = {config[key]!r}")
    return config


def doc_section(text, start, end):
    """The part of `text` (a docstring or a script's source) from the first `start` up to the next `end`: the one
    way a script's --help is cut out of its own docstring or source, so that the help never drifts from them."""
    i = text.index(start)
    return text[i:text.index(end, i + len(start))]


def print_help(script, usage):
    """`usage` and the defaults block of `script`: every `key = value  # comment` line and section comment between
    the two `# ----` rulers, read from the script itself, so the help never drifts from the defaults."""
    ruler = "\n# " + "-" * 77 + "\n"
    block = doc_section(open(script).read(), ruler, ruler)[len(ruler):]
    print(usage.strip() + "\n")
    print(f"Config keys and their defaults ({os.path.basename(script)}); set them in a config file or as --key=value:")
    for line in block.splitlines():
        print("  " + line if line.startswith("#") else "    " + line)
