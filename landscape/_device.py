"""Where computations run: ``--device auto|cpu|cuda[:n]``."""

from __future__ import annotations

import torch

from ._errors import LandscapeError
from ._registry import Registry

#: Device kinds ``--device`` accepts (``cuda`` with an optional index, ``cuda:1``).
DEVICES = Registry("device", ("auto", "cpu", "cuda"))


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` is CUDA when a GPU is present, else the CPU; ``"cuda"`` without a GPU is an error."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in DEVICES:
        DEVICES.lookup(name)  # raises, listing the device kinds
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LandscapeError(f"--device {name}: CUDA is not available on this machine; use --device auto or cpu")
    return device


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Ask glibc's ``malloc`` to keep freed blocks of up to ``mmap_threshold`` bytes for reuse.

    A batched evaluation allocates and frees the same few activation blocks (a few MiB) chunk after
    chunk. By default glibc returns blocks that large to the system when they are freed, and the next
    chunk pays a page fault per 4 KiB page to get them back: 40% of a plane's time on a tiny network
    (``benchmarks/planes.py``). This sets ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` (``mallopt``),
    as the environment variables ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` would: the
    process keeps up to ``trim_threshold`` bytes of freed memory. The ``landscape`` command calls it at
    start; a library user may. Does nothing (returns False) off glibc, or where those variables are set.
    """
    import ctypes
    import os
    import sys

    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ \
            or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # malloc.h
        return bool(libc.mallopt(M_MMAP_THRESHOLD, int(mmap_threshold))) and \
            bool(libc.mallopt(M_TRIM_THRESHOLD, int(trim_threshold)))
    except (OSError, AttributeError):
        return False
