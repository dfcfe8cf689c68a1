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


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 1 << 30,
                      max_mmap_blocks: int | None = 0) -> bool:
    """Ask glibc's ``malloc`` to keep freed blocks for reuse instead of handing them back to the system.

    A batched evaluation allocates and frees the same activation blocks chunk after chunk. By default glibc
    gives a block of 128 KiB or more its own ``mmap`` and unmaps it when it is freed, so the next chunk pays
    a page fault per 4 KiB page to get it back: 40% of a plane's time on a tiny network
    (``benchmarks/planes.py``); at ~1M parameters on 5,000 images, 345,000 faults and 0.69 s of system time
    a gradient (``benchmarks/alloc_policy.py``). This sets (``mallopt``, as the environment variables
    ``MALLOC_MMAP_MAX_``, ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` would):

    - ``M_MMAP_MAX`` to ``max_mmap_blocks``: 0, no block gets its own mapping, however large, so freed
      activations of any size stay in the heap for the next chunk (None leaves glibc's default);
    - ``M_MMAP_THRESHOLD`` to ``mmap_threshold`` (32 MiB, glibc's largest; what applies where ``mmap`` is allowed);
    - ``M_TRIM_THRESHOLD`` to ``trim_threshold``: up to 1 GiB of freed memory at the top of the heap is kept.

    Measured on that 1M-parameter gradient (one thread, interleaved processes, two rounds while the conv
    evaluator was being rewritten beside it): faults 345,000 → 0 and 335,000 → 3,700; CPU 2.08 → 1.27 s and
    2.08 → 1.49 s; peak resident 1,355 → 1,701 MiB and 1,356 → 814 MiB. The previous policy (32 MiB, 256 MiB
    kept, ``mmap`` allowed) gave 310,000 and 0 faults, 1.83 and 1.40 s: it helps only while every block is under
    32 MiB. The cost is resident memory: what the largest evaluation freed stays with the process (and glibc
    reuses a freed block for torch's aligned requests only when the alignment padding fits, so a run of growing
    blocks can grow the heap further). The ``landscape`` command calls
    it at start; a library user may. Does nothing (returns False) off glibc, or where any of those variables is
    set (the user's choice stands).
    """
    import ctypes
    import os
    import sys

    chosen = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_MAX_")
    if not sys.platform.startswith("linux") or any(name in os.environ for name in chosen):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4  # malloc.h
        done = bool(libc.mallopt(M_MMAP_THRESHOLD, int(mmap_threshold))) and \
            bool(libc.mallopt(M_TRIM_THRESHOLD, int(trim_threshold)))
        if max_mmap_blocks is not None:
            done = bool(libc.mallopt(M_MMAP_MAX, int(max_mmap_blocks))) and done
        return done
    except (OSError, AttributeError):
        return False


def passive_workers(environ=None) -> bool:
    """Make processes started from now on wait passively: ``OMP_WAIT_POLICY=PASSIVE`` in ``environ`` (``os.environ``,
    which spawned workers inherit), unless the user set ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``.

    OpenMP threads spin while they wait for work by default; local study workers share the machine's cores
    (cores / workers threads each), and a thread that spins holds a core another worker needs. This process's
    own threads are not changed (the OpenMP runtime read the variable when torch was loaded; the ``landscape``
    command sets it before that). Returns True where it set the policy.
    """
    import os

    environ = os.environ if environ is None else environ
    if environ.get("OMP_WAIT_POLICY") or environ.get("GOMP_SPINCOUNT"):
        return False
    environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True
