"""
hardware.py: which device, which dtype, which process group, and what the GPU's peak is: one answer each, used by
train.py, eval.py, sample.py, bench.py and the lm-eval adapter (tasks/lm_eval_adapter.py).

Why a file of its own: these four questions were answered five, two and three times with small differences
(one script set the CUDA device, another did not; one default dtype trusted bf16 emulation, another did not;
MFU took a guessed peak). A difference there only shows on a GPU, where the tests do not run, so each answer
lives here once and the tests call it on CPU the way the scripts do.

  resolve_device('auto')                  'cuda' if there is a GPU, else 'cpu'; 'cuda:1' also becomes current
  resolve_dtype('auto', 'cuda')           'bfloat16' where the GPU has it natively, else 'float16' (+ GradScaler)
  torchrun_env()                          (rank, local_rank, world_size) from torchrun, or None
  init_distributed(device)                the process group under torchrun (nccl on CUDA, gloo elsewhere)
  rank_share(items, 8), busiest(n, dev)   a process's share of some work, and how many forwards every process runs
  peak_flops('NVIDIA H100 PCIe', 'bfloat16') = 756e12; None for a GPU not in the table (then no MFU is shown)
  keep_freed_memory()                     CPU training: glibc keeps freed blocks for the next step (see there)

    python hardware.py        # what this machine resolves to, and the peak table
"""

import ctypes
import math
import os
import re

import torch

DTYPES = ('float32', 'bfloat16', 'float16')


def device_problem(device):
    """Why `device` cannot be used on this machine, as one sentence, or None. Asked before any process group."""
    kind = device.split(':')[0]
    if kind not in ('cpu', 'cuda', 'mps'):
        return f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', not '{device}'."
    if kind == 'cuda':
        if not torch.cuda.is_available():
            return f"device='{device}' but this machine has no CUDA GPU that PyTorch can use: use --device=cpu."
        index = int(device.split(':')[1]) if ':' in device else 0
        if index >= torch.cuda.device_count():
            return (f"device='{device}' but this machine has {torch.cuda.device_count()} CUDA GPU(s) "
                    f"(cuda:0..cuda:{torch.cuda.device_count() - 1}).")
    if kind == 'mps' and not (hasattr(torch.backends, 'mps') and torch.backends.mps.is_available()):
        return "device='mps' but PyTorch's Apple-GPU backend is not available here: use --device=cpu."
    return None


def default_device():
    """What device='auto' means: the GPU if PyTorch sees one, else the CPU (MPS only when asked for)."""
    return 'cuda' if torch.cuda.is_available() else 'cpu'


def resolve_device(device='auto', local_rank=None):
    """The device string a script runs on, made current. 'auto': cuda if available, else cpu. Under torchrun
    (local_rank given) on CUDA each process takes its own GPU, cuda:local_rank. A 'cuda:N' becomes the current
    device (torch.cuda.set_device), so that torch.cuda's RNG state, memory statistics and device name, which
    all read the current device, are those of the GPU the run is on, not of cuda:0."""
    if device == 'auto':
        device = default_device()
    if device.startswith('cuda'):
        if local_rank is not None:
            device = f'cuda:{local_rank}'
        elif device == 'cuda':
            device = f'cuda:{torch.cuda.current_device()}'
        torch.cuda.set_device(device)
    return device


def bf16_native():
    """True where the current CUDA GPU computes bf16 in hardware (Ampere and later). torch.cuda.is_bf16_supported()
    alone also says True where bf16 is only emulated (e.g. a V100), which runs far slower than fp16."""
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch before 2.3 has no including_emulation argument
        return torch.cuda.is_bf16_supported() and torch.cuda.get_device_capability()[0] >= 8


def resolve_dtype(dtype, device):
    """The compute dtype's name: dtype itself, or for None / 'auto': bfloat16 on a CUDA GPU with native bf16,
    float16 on other CUDA GPUs (the trainer then scales the loss with a GradScaler), float32 on CPU and MPS.
    float64 is never chosen (MPS has none)."""
    if dtype in (None, 'auto'):
        if device.startswith('cuda'):
            return 'bfloat16' if bf16_native() else 'float16'
        return 'float32'
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be 'auto', {', '.join(repr(d) for d in DTYPES)}, not '{dtype}'.")
    return dtype


def autocast(dtype, device):
    """The forward's context for `dtype` on `device`: torch.autocast for bf16/fp16, a no-op for float32."""
    from contextlib import nullcontext
    if dtype == 'float32':
        return nullcontext()
    return torch.autocast(device_type=device.split(':')[0], dtype=getattr(torch, dtype))


def torchrun_env():
    """(rank, local_rank, world_size) as torchrun sets them in the environment, or None outside torchrun. Read
    before any process group exists, so a setting that cannot run stops every process before it starts one."""
    if int(os.environ.get('RANK', -1)) == -1:
        return None
    return tuple(int(os.environ[k]) for k in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE'))


def init_distributed(device, backend='auto'):
    """Under torchrun, start the process group (once): nccl for CUDA devices, gloo otherwise ('auto'), after
    resolve_device made this process's GPU current (NCCL binds to it). Returns (rank, local_rank, world_size),
    (0, 0, 1) outside torchrun."""
    env = torchrun_env()
    if env is None:
        return 0, 0, 1
    if not torch.distributed.is_initialized():
        if backend == 'auto':
            backend = 'nccl' if device.startswith('cuda') else 'gloo'
        torch.distributed.init_process_group(backend=backend)
    return env


def group_rank():
    """(rank, world_size) in the default process group, (0, 1) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


# Work shared out among the processes of a group (eval windows, probe windows, task requests): a sharded (FSDP)
# model's forward is a collective, so every process runs as many forwards as the busiest one, and one with less
# to do pads with forwards whose results it does not count; otherwise the others would wait for it for ever.

def rank_share(items, per_batch):
    """(this process's share of items, the number of batches of per_batch items every process runs). Process r
    takes items[r::world_size]: shares differ by at most one item, so the busiest holds ceil(N / world_size) of
    them, in ceil(ceil(N / world_size) / per_batch) batches. Without a process group: (items, ceil(N / per_batch))."""
    rank, world_size = group_rank()
    return items[rank::world_size], math.ceil(math.ceil(len(items) / world_size) / per_batch)


def busiest(count, device):
    """The largest count over the process group (an all-reduce on device), count itself without one: the number
    of forwards every process runs when each knows only its own (rank_share's when a share's size decides it)."""
    if group_rank()[1] == 1:
        return count
    most = torch.tensor([count], device=device)
    torch.distributed.all_reduce(most, op=torch.distributed.ReduceOp.MAX)
    return int(most.item())


# Dense (no structured sparsity) peak FLOP/s per GPU from NVIDIA's data sheets. 'float32' is the TF32 tensor-core
# rate, since train.py allows TF32 for fp32 matmuls on CUDA; 'bfloat16' and 'float16' are the 16-bit tensor-core
# rates with fp32 accumulation (what PyTorch's matmuls use; GeForce cards run half of their fp16-accumulate rate).
# Matched in this order against torch.cuda.get_device_name(), e.g. 'NVIDIA H100 80GB HBM3' (the SXM part).
PEAK_FLOPS = (  # (pattern, {dtype: FLOP/s})
    (r'H200 NVL', {'bfloat16': 835e12, 'float16': 835e12, 'float32': 418e12}),
    (r'H200', {'bfloat16': 989e12, 'float16': 989e12, 'float32': 495e12}),           # SXM, and GH200
    (r'H100 NVL', {'bfloat16': 835e12, 'float16': 835e12, 'float32': 418e12}),
    (r'H100 PCIe', {'bfloat16': 756e12, 'float16': 756e12, 'float32': 378e12}),
    (r'H100', {'bfloat16': 989e12, 'float16': 989e12, 'float32': 495e12}),           # SXM (HBM3)
    (r'B200', {'bfloat16': 2250e12, 'float16': 2250e12, 'float32': 1100e12}),
    (r'A100', {'bfloat16': 312e12, 'float16': 312e12, 'float32': 156e12}),           # SXM and PCIe
    (r'L40S', {'bfloat16': 362e12, 'float16': 362e12, 'float32': 183e12}),
    (r'L40\b', {'bfloat16': 181e12, 'float16': 181e12, 'float32': 90.5e12}),
    (r'L4\b', {'bfloat16': 121e12, 'float16': 121e12, 'float32': 60e12}),
    (r'A10\b', {'bfloat16': 125e12, 'float16': 125e12, 'float32': 62.5e12}),
    (r'RTX 4090', {'bfloat16': 165e12, 'float16': 165e12, 'float32': 82.6e12}),
    (r'RTX 3090', {'bfloat16': 71e12, 'float16': 71e12, 'float32': 35.6e12}),
    (r'V100', {'float16': 125e12, 'float32': 15.7e12}),                # SXM2; no bf16 hardware, fp32 without TF32
)


def peak_flops(device_name, dtype):
    """Dense peak FLOP/s of the GPU called device_name (torch.cuda.get_device_name()) in dtype, or None when the
    GPU or the dtype is not in the table: better no MFU than a wrong one."""
    for pattern, peaks in PEAK_FLOPS:
        if re.search(pattern, device_name):
            return peaks.get(dtype)
    return None


M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory():
    """Make glibc's malloc keep the memory a training step frees for the next step; True if it took effect.

    glibc serves each block over its mmap threshold (at most 32 MiB) with a mapping of its own and unmaps it on
    free, and gives the top of its heap back once more than the trim threshold is free. A CPU training step frees
    and asks again for the same large blocks every step (SmolLM2-135M at 2 x 512 tokens: the logits and their two
    gradients, 1024 x 49,152 floats = 192 MiB each, the embedding's gradient and AdamW's temporaries), so every
    step the kernel faults in and zeroes those pages again. M_MMAP_MAX = 0 serves every block from the heap and a
    trim threshold of 2^31 - 1 bytes keeps it: the next step reuses the same pages. Numbers do not change (only
    where memory comes from); the process's memory stays at its peak instead of shrinking between steps. Measured by
    bench_released.py (--keep_freed_memory=0 / 1): a SmolLM2-135M step on one thread 17-19% faster (RESULTS.md).
    Elsewhere than glibc (macOS, musl) nothing changes and it returns False."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1))


if __name__ == '__main__':
    device = resolve_device('auto')
    dtype = resolve_dtype('auto', device)
    name = torch.cuda.get_device_name() if device.startswith('cuda') else device
    print(f"device {device} ({name}), default dtype {dtype}, peak {peak_flops(name, dtype)} FLOP/s")
    for pattern, peaks in PEAK_FLOPS:
        print(f"{pattern:>10}  " + "  ".join(f"{k} {v / 1e12:g}T" for k, v in peaks.items()))
