"""
checkpoint.py: what a training checkpoint holds, how it is written (atomically) and read (safely), and when
train.py writes one.

  python train.py config/train_shakespeare.py                      # writes out-shakespeare/ckpt.pt and best.pt
  python train.py config/train_shakespeare.py --init_from=resume   # continues exactly where ckpt.pt stopped
  model, ckpt = load_checkpoint('out-shakespeare/ckpt.pt')         # eval.py, sample.py, hf_convert.py, ...

What a checkpoint holds (checkpoint_dict): the un-compiled, un-wrapped model's state dict, the optimizer's,
model_args (the model config's fields, model_type, the tokenizer, 'lora': build_model rebuilds the model from
them alone), iter_num, best_val_loss and best_iter, the run's config, every process's torch RNG state (dropout)
and init_origin ('scratch' or the released weights the run started from). Tensors and plain values only, so it
loads with torch.load(weights_only=True), where a file from elsewhere cannot run code, and --init_from=resume
continues exactly where the run stopped.

Atomic writes: a single file (DDP, one process) goes to a uniquely named temp file beside its path, is fsynced
and renamed over it (save_checkpoint); a sharded one (FSDP: out_dir/ckpt_dcp, best_dcp) goes into the one of two
slots its link does not point to, and the link is swapped once every shard is on disk (fsdp.save). A crash or a
full disk leaves the previous checkpoint whole.

The save policy (save_checkpoints), after every eval (every eval_interval iters and at max_iters): ckpt.pt after
every one with always_save_checkpoint=True, otherwise only when the val loss improved; best.pt when it improved
(save_best). Never at iter 0 of a new run, nor with eval_only. One trainer at a time holds out_dir (lock_out_dir),
and a new run never replaces another run's checkpoint unless overwrite=True (config_check.py).
"""

import os
import pickle
import tempfile
import zipfile

import numpy as np
import torch

from model import build_model

# -----------------------------------------------------------------------------
# one checkpoint file: atomic write, safe read


def save_checkpoint(ckpt, path):
    """torch.save made atomic: write a uniquely named temp file beside path, fsync, rename over path. A run killed
    while saving, or a full disk (OSError), leaves the previous checkpoint intact (rename is atomic on POSIX file
    systems), and two writers never share a temp file."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=os.path.basename(path) + '.',
                               suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            os.fchmod(f.fileno(), 0o644)  # mkstemp's 0600 would hide the checkpoint from a shared group
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# numpy arrays in the RNG states of checkpoints written before they held tensors only: plain data, no code
_LEGACY_SAFE = [np.ndarray, np.dtype, np.dtypes.UInt32DType,
                getattr(np, '_core', np).multiarray._reconstruct]


def _intact_beside(path):
    """'; <dir>/best.pt is intact' for the checkpoints beside path whose zip archive checks out, else ''."""
    folder = os.path.dirname(os.path.abspath(path))
    ok = []
    for name in ('ckpt.pt', 'best.pt'):
        other = os.path.join(folder, name)
        if os.path.isfile(other) and os.path.abspath(other) != os.path.abspath(path):
            try:
                with zipfile.ZipFile(other) as z:
                    if z.testzip() is None:
                        ok.append(other)
            except (OSError, zipfile.BadZipFile):
                pass
    return f"; the intact {' and '.join(ok)} beside it can be used instead" if ok else ""


def read_checkpoint(path, device='cpu'):
    """The dict in a checkpoint file, loaded with torch.load(weights_only=True): tensors, numbers, strings, lists
    and dicts only, so a file from elsewhere cannot run code. Every failure is a ValueError in one sentence that
    names the file (and an intact ckpt.pt / best.pt beside it); a missing file is a FileNotFoundError."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"No checkpoint at {path}: train one first (python train.py ...) or check the path.")
    if os.path.isdir(path):
        raise ValueError(f"{path} is a directory, not a checkpoint file{_intact_beside(path)}.")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path} is empty (0 bytes), not a checkpoint{_intact_beside(path)}.")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; a cut one has lost its directory at the end
        raise ValueError(f"{path} is truncated or not a checkpoint (no complete zip archive){_intact_beside(path)}.")
    try:
        with torch.serialization.safe_globals(_LEGACY_SAFE):
            ckpt = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        if 'Weights only load failed' in str(e):
            raise ValueError(f"{path} holds Python objects other than tensors, numbers, strings and lists, which could "
                             f"run code when loaded, so it is refused; load it with torch.load(weights_only=False) "
                             f"only if you trust where it came from.") from None
        raise ValueError(f"{path} is corrupt (unreadable pickle){_intact_beside(path)}.") from None
    except Exception as e:  # a truncated zip archive, bytes that are no checkpoint, an unreadable file
        first = str(e).strip().split('\n')[0][:200]
        raise ValueError(f"{path} is corrupt or truncated ({type(e).__name__}: {first}){_intact_beside(path)}.") from None
    if not isinstance(ckpt, dict) or 'model' not in ckpt or 'model_args' not in ckpt:
        raise ValueError(f"{path} is not a disperse-gpt checkpoint (it lacks 'model' / 'model_args').")
    return ckpt


def load_checkpoint(path, device='cpu', **overrides):
    """(model, ckpt) from a checkpoint written by train.py: the model in eval mode on `device`. overrides replace
    model_args entries that do not change the weights' shapes (train.py's resume passes dropout)."""
    ckpt = read_checkpoint(path, device)
    args = dict(ckpt['model_args'], **overrides)
    if 'tokenizer' not in args:  # written before model_args held it: the config did, or nothing (GPT-2)
        args['tokenizer'] = (ckpt.get('config') or {}).get('tokenizer') or 'gpt2'
    model = build_model(args)
    try:
        model.load_state_dict(ckpt['model'])
    except RuntimeError as e:
        first = str(e).split('\n')[1].strip() if '\n' in str(e) else str(e)
        raise ValueError(f"The weights in {path} do not fit the {model.model_type} model its model_args describe "
                         f"({first}).") from None
    return model.to(device).eval(), ckpt

