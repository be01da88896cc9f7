"""
fsdp.py: shard a model over the processes with PyTorch's FSDP2 (torch.distributed.fsdp.fully_shard), and write
and read sharded checkpoints with torch.distributed.checkpoint (DCP). train.py calls it when parallelism='fsdp'.

  torchrun --standalone --nproc_per_node=8 train.py config/train_qwen3_4b.py             # one node
  python fsdp.py --consolidate out/ckpt_dcp out/ckpt.pt   # a sharded checkpoint -> one file for eval.py / DDP
  python fsdp.py --memory                                  # per-GPU memory of Qwen3 0.6B-8B, DDP vs FSDP

Why: DDP keeps a whole copy of the model, its gradients and AdamW's two moments on every process, 16 bytes per
parameter in fp32 (4 weight + 4 gradient + 8 moments); FSDP keeps 16 / N bytes per parameter on each of N
processes and all-gathers one block's weights at a time for its forward and backward, then frees them; the
gradients are reduce-scattered (averaged, as DDP) so each process updates only its own shard.

  shard(model, ...)     AC / compile per block, fully_shard per block then the root, fill the weights
  build_device(...)     where train.py builds the model: rank 0 for real, the others on the meta device
  from_pretrained(...)  released weights read on rank 0 only; the others build an empty (meta) model
  save(...) / load(...) DCP checkpoints: every process writes and reads its own shards; atomic; resharding
  consolidate(src, dst) a sharded checkpoint as the single-file ckpt.pt (model, optimizer, rng, config)

Weights start on rank 0 only (a fresh init with the run's seed, or released weights): every other process
builds the model on the meta device (shapes, no memory), and after sharding rank 0 broadcasts one full tensor
at a time, from which each process keeps its shard. So a fresh FSDP run starts from the same weights as DDP
(which broadcasts rank 0's) and as one process, and no process but rank 0 ever holds the full fp32 model.
The tied embedding (GPT-2, small Qwen3) is one Parameter held by the root module, so it stays one sharded
tensor: lm_head.weight is transformer.wte.weight before and after sharding, and after a resume.
"""

import argparse
import functools
import os
import shutil
import warnings
from contextlib import nullcontext

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict)
from torch.utils.checkpoint import checkpoint

CKPT, BEST = 'ckpt_dcp', 'best_dcp'  # under out_dir, beside the single-file ckpt.pt / best.pt of DDP runs
EXTRA = 'extra.pt'  # everything but weights and optimizer: model_args, iter_num, best_val_loss, config, rng


def build_device(parallelism, rank, init_from):
    """Context for building the model in train.py: the meta device (shapes only) on every process that gets its
    weights later, i.e. all but rank 0, and all on a resume (each reads its shards)."""
    if parallelism == 'fsdp' and (rank != 0 or init_from == 'resume'):
        return torch.device('meta')
    return nullcontext()


def from_pretrained(name_or_path, dropout, rank):
    """Released weights: rank 0 reads them (hf_convert.from_pretrained, fp32 on the CPU), the others build the same
    shapes on the meta device from rank 0's model_args; shard() then sends rank 0's tensors out one at a time."""
    from hf_convert import from_pretrained as load
    from model import build_model, model_args_of
    model = load(name_or_path, dropout=dropout) if rank == 0 else None
    shape = [model_args_of(model) if rank == 0 else None]  # the shapes and the tokenizer
    dist.broadcast_object_list(shape, src=0)
    if rank != 0:
        with torch.device('meta'):
            model = build_model(shape[0])
    return model


def wrap_blocks(model, activation_checkpointing, compile):
    """Per transformer block: activation checkpointing (keep only the block's input, recompute its inside in the
    backward: the activations of a 4096-token block are ~34 x B x T x C bytes in bf16, its input 2 x B x T x C),
    then torch.compile. The block's output is unchanged, so the hidden states the dispersion loss and the
    condensation probe read are the same tensors; parameter names are unchanged (no wrapper modules)."""
    for block in model.transformer.h:
        forward = block.forward
        if activation_checkpointing:
            forward = functools.partial(checkpoint, forward, use_reentrant=False)
        if compile:
            forward = torch.compile(forward)
        block.forward = forward
    return model


def shard(model, device, dtype, activation_checkpointing=False, compile=False, from_rank0=True):
    """fully_shard each block, then the root (embedding, final norm, LM head). With from_rank0 the weights are
    rank 0's (the model is real there, meta elsewhere); otherwise they come later from a checkpoint (load()).
    dtype: 'bfloat16' = the blocks' weights in bf16 for forward/backward, fp32 master weights and gradient
    reduction. Precision as under DDP + autocast, where the residual stream stays fp32 (the fp32 embedding
    plus bf16 block outputs) and only the matmuls run in bf16: the root (embeddings, final norm, LM head) keeps
    fp32 weights, and the blocks do not cast their input (cast_forward_inputs=False), so the residual stream,
    and the hidden states that the dispersion loss and the probe read, are fp32 under both; train.py's autocast
    runs the matmuls in bf16 under both. The cost: the root's weights are all-gathered in fp32 (2x the bytes
    of that one gather; the blocks, nearly all of the parameters, in bf16)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method
    if dtype == 'float16':  # train.py says so before any process group starts
        raise ValueError("parallelism='fsdp' supports dtype 'bfloat16' or 'float32', not float16.")
    assert not list(model.buffers()), "shard() assumes the model has no buffers (to_empty would leave them empty)"
    device_type = device.split(':')[0]
    mesh = init_device_mesh(device_type, (dist.get_world_size(),))
    bf16 = dtype == 'bfloat16'
    block_mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if bf16 else None, reduce_dtype=torch.float32,
                                    cast_forward_inputs=False)
    root_mp = MixedPrecisionPolicy(reduce_dtype=torch.float32)  # fp32 embedding output: the residual stays fp32
    full = model.state_dict() if from_rank0 and dist.get_rank() == 0 else {}  # rank 0's weights, kept on the CPU
    tied = model.tied
    model.to('meta')  # every process now shards shapes alone; no full copy goes to the accelerator
    if tied:  # .to() across devices makes a new Parameter per module: tie them again, as the model's __init__
        model.lm_head.weight = model.transformer.wte.weight
    wrap_blocks(model, activation_checkpointing, compile)
    for block in model.transformer.h:
        fully_shard(block, mesh=mesh, mp_policy=block_mp)
    fully_shard(model, mesh=mesh, mp_policy=root_mp)
    model.to_empty(device=device)  # this process's shards, uninitialised
    assert model.tied == getattr(model.config, 'tie_embeddings', True), "sharding untied the embedding and LM head"
    # the probe and the benchmarks call hidden_states() directly: it must all-gather the root's weights as forward
    register_fsdp_forward_method(model, 'hidden_states')
    if from_rank0:  # one full tensor at a time from rank 0; each process keeps its shard
        set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    return model


def read_meta(path):
    """The small part of a sharded checkpoint (model_args, iter_num, best_val_loss, config, rng, init_origin)."""
    f = os.path.join(path, EXTRA)
    if not os.path.exists(f):
        raise SystemExit(f"{path} is not a sharded disperse-gpt checkpoint (no {EXTRA}): train with "
                         f"--parallelism=fsdp first, or resume a DDP run with --parallelism=ddp.")
    return torch.load(f, map_location='cpu', weights_only=True)  # numbers, strings, lists, tensors: no code


def _state(model, optimizer):
    """Model and optimizer state keyed by parameter name (FQN), so any sharding can read what any other wrote."""
    return {'model': get_model_state_dict(model), 'optimizer': get_optimizer_state_dict(model, optimizer)}


def save(ckpt, model, optimizer, path):
    """Every process writes its shards of model and optimizer (DCP); rank 0 adds ckpt's other entries.
    Atomic: path is a symlink to one of two slots, path.0 and path.1. The new checkpoint goes into the slot path
    does not point to, and only when every process has finished writing does rank 0 swap the link (rename of
    a new symlink over the old one: atomic on POSIX). A crash at any moment leaves path on a whole checkpoint."""
    rank0 = dist.get_rank() == 0
    current = os.path.realpath(path) if os.path.islink(path) else None
    slot = path + ('.1' if current == os.path.realpath(path + '.0') else '.0')
    if rank0:
        shutil.rmtree(slot, ignore_errors=True)  # an unfinished earlier save, or the checkpoint before last
    dist.barrier()
    dcp.save(_state(model, optimizer), checkpoint_id=slot)
    if rank0:
        with open(os.path.join(slot, EXTRA), 'wb') as f:
            torch.save({k: v for k, v in ckpt.items() if k not in ('model', 'optimizer')}, f)
            f.flush()
            os.fsync(f.fileno())
    dist.barrier()  # every shard is on disk
    if rank0:
        link = path + '.link'
        if os.path.lexists(link):
            os.remove(link)
        os.symlink(os.path.basename(slot), link)
        os.replace(link, path)
    dist.barrier()


def load(path, model, optimizer):
    """Read a checkpoint written by save() into this process's shards (any number of processes, or none: a plain
    model); DCP reshards when the world size differs from the one that wrote it."""
    state = _state(model, optimizer)
    with warnings.catch_warnings():  # one process without a process group is what consolidate() means
        warnings.filterwarnings('ignore', message='torch.distributed is disabled')
        dcp.load(state, checkpoint_id=os.path.realpath(path), no_dist=not dist.is_initialized())
    set_model_state_dict(model, state['model'])
    set_optimizer_state_dict(model, optimizer, state['optimizer'])


def consolidate(src, dst):
    """A sharded checkpoint as train.py's single-file format, on one process (CPU memory: ~16 bytes/parameter):
    the model and AdamW rebuilt from the saved model_args and config, filled from the shards, saved atomically."""
    from checkpoint import save_checkpoint
    from model import build_model
    ckpt = read_meta(src)
    c = ckpt['config']
    model = build_model(ckpt['model_args'])
    optimizer = model.configure_optimizers(c['weight_decay'], c['learning_rate'], (c['beta1'], c['beta2']), 'cpu')
    if c.get('forget_every', 0) > 0:  # train.py's optimizer layout: the token embedding in a group of its own
        import disperse
        disperse.embedding_group(optimizer, model)
    load(src, model, optimizer)
    assert model.tied == ckpt['model_args'].get('tie_embeddings', True)
    save_checkpoint(dict(ckpt, model=model.state_dict(), optimizer=optimizer.state_dict()), dst)


def memory_gb(n_params, n_layer, n_embd, vocab_size, tokens, world_size, fsdp, ac, accumulate, teacher_params=0,
              seq_len=None):
    """Estimated peak memory per GPU (GB) of bf16 training with fp32 master weights and AdamW:
      state        16 N bytes (4 weight + 4 gradient + 8 AdamW moments), / world_size under FSDP
      accumulated  4 N bytes under FSDP while micro-steps skip the reduce-scatter (FSDP2 keeps an unsharded fp32
                   gradient until the last micro-step): only when a process runs more than one micro-batch
      activations  34 C bytes per token per layer (Korthikanti et al. 2022, bf16, flash attention: no T^2 term);
                   with activation checkpointing 2 C per token per layer (the block inputs) + one block's 34 C.
                   An all-bf16 count: the fp32 residual stream (DDP's autocast, and shard() above) makes the
                   norms' inputs fp32, ~4 C more per token per layer (~10% more activation memory)
      logits       6 V bytes per token (bf16 logits + the fp32 softmax of the cross-entropy)
      teacher      distillation (train.py's teacher): a whole fp32 copy on every process, DDP and FSDP alike,
                   4 N_teacher bytes (no gradient, no optimizer state), + 10 V bytes per token in the step (its bf16
                   logits and the fp32 log-softmaxes of teacher and student at T); its no_grad forward keeps no
                   activations
      probe        (seq_len given) the condensation probe at an eval, after the step's activations are freed:
                   one forward's fp32 hidden states, 4 (n+1) C bytes per token, for max(1, 4096 // T) windows
                   of T = seq_len (eval.PROBE_TOKENS), and its [B, T, T] fp32 cosines and unit vectors, 8 T bytes
                   per token; the peak is then state + teacher + max(step, probe)
    tokens: B x T of one micro-batch. An estimate, to choose B and AC; measure with torch.cuda.max_memory_allocated."""
    state = 16 * n_params / (world_size if fsdp else 1)
    acc = 4 * n_params if fsdp and accumulate else 0
    act = (2 * n_layer + 34) * n_embd * tokens if ac else 34 * n_embd * n_layer * tokens
    teacher = 4 * teacher_params
    step = acc + act + 6 * vocab_size * tokens + (10 * vocab_size * tokens if teacher_params else 0)
    probe = 0
    if seq_len:
        probe_tokens = max(1, 4096 // seq_len) * seq_len
        probe = (4 * (n_layer + 1) * n_embd + 8 * seq_len) * probe_tokens
    return (state + teacher + max(step, probe)) / 1e9


def memory_table(world_size=8):
    """The README's table: Qwen3 0.6B-8B (GPT-2 vocabulary, T = 4096) with our configs' micro-batch sizes."""
    from model import QWEN3_PRESETS, build_model
    rows = ["| model | params | B x T | DDP | FSDP (8 GPUs) | FSDP + AC |", "|---|---|---|---|---|---|"]
    for name, B in (('0.6B', 4), ('1.7B', 4), ('4B', 2), ('8B', 4)):
        with torch.device('meta'):
            m = build_model(dict(QWEN3_PRESETS[f'Qwen/Qwen3-{name}'], model_type='qwen3', vocab_size=50304, block_size=4096))
        c, n = m.config, m.num_params(non_embedding=False)
        gb = [memory_gb(n, c.n_layer, c.n_embd, c.vocab_size, B * 4096, world_size, f, ac, True, seq_len=4096)
              for f, ac in ((False, False), (True, False), (True, True))]
        rows.append(f"| Qwen3-{name} | {n / 1e9:.2f}B | {B} x 4096 | " + " | ".join(f"{g:.0f} GB" for g in gb) + " |")
    return "\n".join(rows)


if __name__ == '__main__':
    p = argparse.ArgumentParser(description="Convert a sharded (DCP) checkpoint into a single-file ckpt.pt, or "
                                            "print the per-GPU memory table.")
    p.add_argument('--consolidate', nargs=2, metavar=('SRC', 'DST'), help="e.g. out/ckpt_dcp out/ckpt.pt")
    p.add_argument('--memory', action='store_true', help="the README's per-GPU memory estimates")
    a = p.parse_args()
    if a.memory:
        print(memory_table())
    elif a.consolidate:
        consolidate(*a.consolidate)
        print(f"wrote {a.consolidate[1]}")
    else:
        p.print_help()
