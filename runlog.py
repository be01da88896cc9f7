"""
runlog.py: out_dir/log.jsonl, the record of a training run: written by train.py, read by anything that plots it.

One JSON object per line: {'iter': 0, 'event': 'start', 'config': ..., ...} each time train.py starts (a resume
too), then one record per log step ('loss', 'ce', ...) and per eval ('val_loss', ...). A resumed run starts again
from its checkpoint's iteration k, so the lines that an earlier start wrote after k describe steps that were
redone: read_log drops them, and of two records of the same kind at the same iteration keeps the later.

  from runlog import read_log
  evals = [r for r in read_log('out-shakespeare/log.jsonl') if 'val_loss' in r]

train.py also sends each record to Weights & Biases (wandb_log=True), as wandb_scalars flattens it.
"""

import json
import math


def append_record(path, record):
    """Append one record as a line of standard JSON (a NaN or inf, e.g. rho of a constant curve, becomes null)."""
    record = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
    with open(path, 'a') as f:
        f.write(json.dumps(record) + '\n')


def wandb_scalars(record):
    """The record as wandb logs it: a list (one number per layer) becomes one curve per layer, 'k/layer_i'; the
    iteration (wandb's step), the start record's event, config and model_args, and None values are left out."""
    flat = {}
    for k, v in record.items():
        if isinstance(v, list):
            flat.update({f'{k}/layer_{i}': x for i, x in enumerate(v)})
        elif k not in ('iter', 'event', 'config', 'model_args') and v is not None:
            flat[k] = v
    return flat


def _kind(record):
    return 'start' if 'event' in record else 'eval' if 'val_loss' in record else 'step'


def read_log(path):
    """The records of log.jsonl in order, superseded ones dropped: a start record at iteration k removes the
    earlier records with iter > k, and a record replaces an earlier one of the same kind and iteration. Start
    records are kept (they mark where each process began)."""
    records, where = [], {}  # where: (kind, iter) -> index in records of the record that stands
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError:  # a run killed while writing leaves at most a half last line
                raise ValueError(f"{path}, line {number}, is not JSON; delete that line if the run was killed "
                                 f"while writing it.") from None
            if _kind(r) == 'start':  # rare: a linear pass is fine
                for i, old in enumerate(records):
                    if old is not None and _kind(old) != 'start' and old['iter'] > r['iter']:
                        records[i] = None
            else:
                key = (_kind(r), r['iter'])
                if key in where:
                    records[where[key]] = None
                where[key] = len(records)
            records.append(r)
    return [r for r in records if r is not None]
