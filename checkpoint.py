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

import fcntl
import os
import pickle
import socket
import tempfile
import zipfile
from dataclasses import asdict

import numpy as np
import torch

from model import MODELS, build_model

# fsdp.py (torch.distributed.checkpoint: ~1 s to import) is imported inside the functions train.py calls, so that
# eval.py, sample.py and the other readers of a file do not wait for it

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


# -----------------------------------------------------------------------------
# train.py's checkpoints: where they go, what they hold, when they are written


def checkpoint_path(out_dir, parallelism, name='ckpt.pt'):
    """Where a run keeps name ('ckpt.pt', the latest, or 'best.pt') in out_dir: that file, or under FSDP the link
    of the sharded checkpoint (fsdp.CKPT, fsdp.BEST)."""
    if parallelism == 'fsdp':
        import fsdp
        name = fsdp.CKPT if name == 'ckpt.pt' else fsdp.BEST
    return os.path.join(out_dir, name)


def lock_out_dir(out_dir):
    """One trainer per out_dir: an exclusive flock on out_dir/train.lock, which holds the host and pid, released by
    the OS when the process ends, however it ends. -> the open lock file (keep it: closing it releases the lock)."""
    os.makedirs(out_dir, exist_ok=True)
    lock = open(os.path.join(out_dir, 'train.lock'), 'a+')
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        raise SystemExit(f"Another train.py is running in {out_dir} (host and pid: {lock.read().strip()}): wait "
                         f"for it to finish, or train in another --out_dir.")
    lock.seek(0)
    lock.truncate()
    lock.write(f"{socket.gethostname()} {os.getpid()}\n")
    lock.flush()
    return lock


def rng_states(cuda):
    """This process's RNG states that anything draws from: torch's (dropout, the noise baseline), as tensors."""
    return {'torch': torch.get_rng_state(), 'cuda': torch.cuda.get_rng_state() if cuda else None}


def gather_rng_states(cuda):
    """Every process's RNG states, in rank order (a collective: every process calls it), saved by rank 0."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [rng_states(cuda)]
    rng = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(rng, rng_states(cuda))
    return rng


def checkpoint_dict(model, optimizer, model_args, it, kept, config, rng, init_origin):
    """What a checkpoint holds (the top of this file) at iteration it; kept: best_val_loss and best_iter."""
    return {'model': model.state_dict(), 'optimizer': optimizer.state_dict(), 'model_args': model_args,
            'iter_num': it, 'best_val_loss': kept['best_val_loss'], 'best_iter': kept['best_iter'], 'config': config,
            'rng': rng, 'init_origin': init_origin}


def write_checkpoint(ckpt, name, out_dir, parallelism, model, optimizer, log=print):
    """ckpt as name ('ckpt.pt' or 'best.pt') in out_dir: one file (save_checkpoint), or under FSDP every process
    writes its shards of model and optimizer (fsdp.save). A failed write ends in one sentence; the previous
    checkpoint is kept."""
    path = checkpoint_path(out_dir, parallelism, name)
    try:
        if parallelism == 'fsdp':
            import fsdp
            fsdp.save(ckpt, model, optimizer, path)
        else:
            save_checkpoint(ckpt, path)
    except OSError as e:
        raise SystemExit(f"Could not write {path} ({e.strerror or e}): the previous {name} is kept; free disk space "
                         f"and continue with --init_from=resume.")
    log(f"saved checkpoint to {path}")


def save_checkpoints(config, it, val_loss, kept, model, optimizer, model_args, rng, init_origin, rank0, log=print):
    """After an eval: ckpt.pt when the val loss improved (or always_save_checkpoint), best.pt when it improved
    (save_best); rank 0 writes, every process under FSDP (its shards). Not at iter 0 of a new run, nor eval_only.
    config: the run's (out_dir, parallelism, the switches above; saved whole); model: the un-wrapped one.
    -> the next kept (best_val_loss, best_iter, saved_iter); the given one is not changed."""
    if not ((rank0 or config['parallelism'] == 'fsdp') and (it > 0 or config['init_from'] == 'resume')
            and not config['eval_only']):
        return kept

    def write(name, kept):
        write_checkpoint(checkpoint_dict(model, optimizer, model_args, it, kept, config, rng, init_origin), name,
                         config['out_dir'], config['parallelism'], model, optimizer, log)

    improved = val_loss < kept['best_val_loss']
    if improved:
        kept = dict(kept, best_val_loss=val_loss, best_iter=it)
    if improved or config['always_save_checkpoint']:
        write('ckpt.pt', kept)
        kept = dict(kept, saved_iter=it)
    if improved and config['save_best']:
        write('best.pt', kept)
    return kept


def checkpoints_note(config, kept):
    """Which checkpoint in out_dir is the last good one, for the message of a non-finite stop."""
    saved_iter, best_iter = kept['saved_iter'], kept['best_iter']
    ckpt, best = (checkpoint_path(config['out_dir'], config['parallelism'], n) for n in ('ckpt.pt', 'best.pt'))
    if not os.path.exists(ckpt):
        return f"no checkpoint was saved in {config['out_dir']}"
    if saved_iter is None:
        return f"{ckpt}, from before this run (overwrite=True), is kept"
    if not config['always_save_checkpoint'] or best_iter == saved_iter:
        return f"{ckpt} (iter {saved_iter}, the lowest val loss) is kept"
    note = f"{ckpt} (iter {saved_iter}) is kept but, saved at every eval, it may already be diverging"
    if os.path.exists(best):
        note += f"; {best} (iter {best_iter}, val loss {kept['best_val_loss']:.4f}) has the lowest val loss" if best_iter \
            else f"; {best} has the lowest val loss"
    return note


# -----------------------------------------------------------------------------
# train.py's reads: --init_from=resume, and a distillation teacher


def load_resume(out_dir, parallelism, rank, dropout, model_keys):
    """--init_from=resume -> (model, ckpt, path): out_dir's ckpt.pt, its weights loaded (on the CPU), or under FSDP
    its sharded checkpoint's small part, the model built on the meta device (restore_state reads the shards once
    it is sharded). model_keys: the config's model settings (with model_type and block_size), which must be the
    checkpoint's when the run started from scratch. A missing, unreadable or different checkpoint ends in one
    sentence."""
    import fsdp
    path = checkpoint_path(out_dir, parallelism)
    if parallelism == 'fsdp':  # the same checks for a single-file and a sharded checkpoint
        if not os.path.exists(path):
            also = " (it holds a single-file ckpt.pt: resume it with --parallelism=ddp)" \
                if os.path.exists(os.path.join(out_dir, 'ckpt.pt')) else ""
            raise SystemExit(f"Cannot resume: there is no sharded checkpoint at {path}{also}.")
        ckpt = fsdp.read_meta(path)
        with fsdp.build_device(parallelism, rank, 'resume'):
            model = build_model(dict(ckpt['model_args'], dropout=dropout))
    else:
        try:
            model, ckpt = load_checkpoint(path, 'cpu', dropout=dropout)
        except FileNotFoundError:
            also = (f" ({out_dir} holds a sharded checkpoint, {fsdp.CKPT}: resume it with --parallelism=fsdp, or "
                    f"make it one file with python fsdp.py --consolidate)") \
                if os.path.exists(os.path.join(out_dir, fsdp.CKPT)) else " Train with --init_from=scratch first."
            raise SystemExit(f"Cannot resume: there is no checkpoint at {path}.{also}")
        except ValueError as e:
            raise SystemExit(f"Cannot resume: {e}")
    saved = ckpt['model_args']
    if ckpt.get('init_origin', 'scratch') == 'scratch':  # the config shapes the model: it must be the checkpoint's
        keys = dict(model_keys)
        arch = keys.pop('model_type')
        wanted = asdict(MODELS[arch][0](**dict(keys, vocab_size=saved['vocab_size'])))
        diff = {k: (saved.get(k), v) for k, v in dict(wanted, model_type=arch).items()
                if k not in ('dropout', 'tokenizer') and saved.get(k) != v}
        if diff:
            raise SystemExit(f"The checkpoint in {out_dir} is a different model from this config (key: (checkpoint, "
                             f"config) {diff}); resume with the config it was trained with.")
    return model, ckpt, path


def restore_state(ckpt, path, model, optimizer, parallelism, rank, world_size, cuda, log=print):
    """The rest of a resume, once the model is on its device (sharded under FSDP) and the optimizer built: the
    optimizer's state (under FSDP also the weights, from the shards), and every process's RNG streams when the
    checkpoint was written by as many processes (else dropout is reseeded, with a note)."""
    if parallelism == 'fsdp':
        import fsdp
        fsdp.load(path, model, optimizer)
    else:
        try:
            optimizer.load_state_dict(ckpt['optimizer'])
        except ValueError as e:  # e.g. an active-forgetting run from before the embedding had a group of its own
            raise SystemExit(f"The optimizer state in {path} does not fit this run's parameter groups ({e}): "
                             f"resume with the code and settings it was trained with, or start it anew.")
    rng = ckpt.get('rng')
    if rng is not None and len(rng) == world_size:  # the same process layout: continue every stream exactly
        torch.set_rng_state(rng[rank]['torch'])
        if rng[rank].get('cuda') is not None and cuda:
            torch.cuda.set_rng_state(rng[rank]['cuda'])
    else:
        log("note: the checkpoint was written by a different number of processes; dropout masks are reseeded")


def load_teacher(teacher, meta, dataset, block_size, device):
    """The distillation teacher, frozen: eval mode (no dropout), requires_grad False, never in the optimizer, run
    under no_grad. teacher: a checkpoint of ours (its ckpt.pt, or the run folder that holds one) or a transformers
    directory / hub name. Every process holds a whole copy on its device, under DDP and FSDP alike (not sharded:
    it has no gradients or optimizer state to share, and a copy costs 4 bytes per teacher parameter in fp32; its
    memory is in fsdp.memory_gb's teacher_params). Its tokens must be the data's (meta), its vocabulary cover the
    data's, its context block_size."""
    import fsdp
    from hf_convert import from_pretrained
    path = os.path.join(teacher, 'ckpt.pt') if os.path.isfile(os.path.join(teacher, 'ckpt.pt')) else teacher
    if path.endswith('.pt') or (os.path.isfile(path) and not path.endswith('.gguf')):
        try:
            t, _ = load_checkpoint(path, 'cpu')
        except FileNotFoundError:
            raise SystemExit(f"No teacher checkpoint at {path}: train the teacher first (or fix --teacher).")
        except ValueError as e:
            raise SystemExit(f"Cannot load the teacher: {e}")
    elif os.path.isdir(os.path.join(teacher, fsdp.CKPT)):
        raise SystemExit(f"The teacher {teacher} has a sharded checkpoint only: write one file with "
                         f"python fsdp.py --consolidate {os.path.join(teacher, fsdp.CKPT)} {os.path.join(teacher, 'ckpt.pt')}.")
    else:
        t = from_pretrained(teacher)  # a transformers directory or hub name (one sentence if it cannot be read)
    if t.config.tokenizer != meta['tokenizer']:
        raise SystemExit(f"The teacher {teacher} uses the tokenizer '{t.config.tokenizer}' but data/{dataset} is "
                         f"tokenised with '{meta['tokenizer']}': distil from a teacher trained on the same tokens.")
    if t.config.vocab_size < meta['vocab_size']:
        raise SystemExit(f"The teacher {teacher} has {t.config.vocab_size} logits, fewer than the data's "
                         f"{meta['vocab_size']} token ids: it is not a model of this tokenizer.")
    if t.config.block_size < block_size:
        raise SystemExit(f"The teacher {teacher} has a context of {t.config.block_size}, shorter than block_size "
                         f"{block_size}: train with --block_size={t.config.block_size} or a longer-context teacher.")
    return t.to(device).eval().requires_grad_(False)
