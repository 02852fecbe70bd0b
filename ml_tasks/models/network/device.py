"""Where the network trains, and how much memory training took there.

The ``device`` param names the device (``"auto"``: CUDA when torch sees one, else the CPU). A
named CUDA device without an index becomes the current one, so ``device_`` always says exactly
which GPU ran (``"cuda:0"``). The peak memory a fit reports is the device's own figure on CUDA
(``torch.cuda.max_memory_allocated`` since the fit reset it) and the process's peak resident
set size on the CPU, where the rows and the network live in host memory.
"""

from __future__ import annotations

import resource
import sys

import torch


def resolve_device(name: str) -> torch.device:
    """``"auto"`` is CUDA when present, else the CPU; asking for an absent CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"torch_mlp: param 'device' is {name!r} but torch sees no CUDA device")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def peak_memory_bytes(device: torch.device) -> int:
    """The most memory training held on ``device``: CUDA's allocator peak, or the process's peak RSS."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # macOS reports bytes, Linux KiB
