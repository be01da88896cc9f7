"""hardware.py: device, dtype and peak-FLOPs answers, checked against NVIDIA's data sheets and torch's CUDA API
(faked on this CPU machine the way a GPU answers)."""
import pytest
import torch

import hardware
from conftest import ROOT


@pytest.mark.parametrize("name, dtype, peak", [
    ("NVIDIA A100-SXM4-80GB", "bfloat16", 312e12),
    ("NVIDIA A100-PCIE-40GB", "float16", 312e12),
    ("NVIDIA H100 80GB HBM3", "bfloat16", 989e12),  # the SXM part's name
    ("NVIDIA H100 PCIe", "bfloat16", 756e12),
    ("NVIDIA H100 NVL", "bfloat16", 835e12),
    ("NVIDIA H200", "bfloat16", 989e12),
    ("NVIDIA H200 NVL", "bfloat16", 835e12),
    ("NVIDIA L40S", "bfloat16", 362e12),
    ("NVIDIA L40", "bfloat16", 181e12),
    ("NVIDIA L4", "bfloat16", 121e12),
    ("NVIDIA A10", "bfloat16", 125e12),
    ("NVIDIA GeForce RTX 4090", "bfloat16", 165e12),
    ("NVIDIA H100 80GB HBM3", "float32", 495e12),  # TF32
    ("Tesla V100-SXM2-16GB", "bfloat16", None),  # emulated only: no figure
    ("NVIDIA GeForce GTX 1080", "bfloat16", None),  # unknown GPU: no figure rather than a wrong one
    ("NVIDIA A100-SXM4-80GB", "float64", None),
])
def test_peak_flops_by_gpu_model_and_dtype(name, dtype, peak):
    assert hardware.peak_flops(name, dtype) == peak


@pytest.mark.parametrize("native, expected", [(True, "bfloat16"), (False, "float16")])
def test_default_cuda_dtype_is_bf16_only_where_native(monkeypatch, native, expected):
    calls = []

    def is_bf16_supported(including_emulation=True):
        calls.append(including_emulation)
        return native or including_emulation  # an emulating GPU (V100) says True unless asked for hardware

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert hardware.resolve_dtype("auto", "cuda:0") == expected
    assert calls == [False]
    assert hardware.resolve_dtype(None, "cpu") == "float32"
    assert hardware.resolve_dtype("auto", "mps") == "float32"  # MPS has no float64, and no other default is safe
    assert hardware.resolve_dtype("bfloat16", "cpu") == "bfloat16"
    with pytest.raises(ValueError, match="dtype must be"):
        hardware.resolve_dtype("float64", "cpu")


def test_cuda_1_without_torchrun_becomes_the_current_device(monkeypatch):
    current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: current.append(str(d)))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert hardware.device_problem("cuda:1") is None
    assert hardware.resolve_device("cuda:1") == "cuda:1" and current == ["cuda:1"]
    assert hardware.resolve_device("cuda", local_rank=1) == "cuda:1"  # torchrun: each process its own GPU
    assert hardware.resolve_device("auto") == "cuda:0"
    assert "2 CUDA GPU" in hardware.device_problem("cuda:2")


def test_devices_that_are_not_here_are_one_sentence():
    if not torch.cuda.is_available():
        assert "no CUDA GPU" in hardware.device_problem("cuda")
    assert "device must be" in hardware.device_problem("tpu")
    assert hardware.device_problem("cpu") is None
    assert hardware.resolve_device("cpu") == "cpu"


@pytest.mark.parametrize("rank, world, share, batches", [
    (0, 1, list(range(7)), 4),  # one process: every item, ceil(7 / 2) batches
    (0, 3, [0, 3, 6], 2),       # 7 items over 3 processes: shares of 3, 2, 2; the busiest needs ceil(3 / 2) batches
    (2, 3, [2, 5], 2),          # a share of 2 fits one batch of 2 but runs as many as the busiest: one pads
    (7, 8, [], 1),              # more processes than items: rank 7 has none and still runs one (padding) batch
])
def test_rank_share_gives_every_process_the_busiest_ones_number_of_batches(monkeypatch, rank, world, share, batches):
    monkeypatch.setattr(hardware, "group_rank", lambda: (rank, world))
    assert hardware.rank_share(list(range(7)), 2) == (share, batches)


def test_busiest_without_a_process_group_is_the_own_count():
    assert hardware.busiest(5, "cpu") == 5


def test_keep_freed_memory_keeps_a_freed_large_block_resident():
    """Measured by the kernel (VmRSS): without the setting, glibc unmaps a freed 256 MiB tensor at once (resident
    memory falls by it); with it, the pages stay for the next allocation. Each case in a fresh process: the setting
    holds for the rest of a process."""
    import subprocess
    import sys
    code = ("import sys, torch, hardware\n"
            "kept = hardware.keep_freed_memory() if sys.argv[1] == '1' else None\n"
            "rss = lambda: int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1]) // 1024\n"
            "t = torch.ones(2 ** 26)\n"
            "before = rss()\n"
            "del t\n"
            "print(kept, before - rss())\n")
    fell = {}
    for keep in ('0', '1'):
        out = subprocess.run([sys.executable, '-c', code, keep], capture_output=True, text=True, cwd=ROOT, check=True)
        kept, mib = out.stdout.split()
        fell[keep] = int(mib)
    assert kept == 'True'
    assert fell['0'] >= 250 and fell['1'] < 10, fell  # MiB given back: all of the 256 without, none with
