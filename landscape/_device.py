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


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 256 << 20,
                      max_mmap_blocks: int | None = None) -> bool:
    """Ask glibc's ``malloc`` to keep freed blocks of up to ``mmap_threshold`` bytes for reuse.

    A batched evaluation allocates and frees the same activation blocks chunk after chunk. By default glibc
    gives a block of 128 KiB or more its own ``mmap`` and unmaps it when it is freed, so the next chunk pays
    a page fault per 4 KiB page to get it back: 40% of a plane's time on a tiny network
    (``benchmarks/planes.py``). This sets (``mallopt``, as the environment variables
    ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` and ``MALLOC_MMAP_MAX_`` would):

    - ``M_MMAP_THRESHOLD`` to ``mmap_threshold`` (32 MiB, glibc's largest): smaller blocks come from the heap;
    - ``M_TRIM_THRESHOLD`` to ``trim_threshold``: the process keeps up to 256 MiB of freed memory at the top of
      its heap rather than handing it back and faulting it in again;
    - ``M_MMAP_MAX`` to ``max_mmap_blocks`` where given (0: no block is ``mmap``'d, however large). Left at
      glibc's default on purpose: torch allocates with ``posix_memalign``, and glibc serves an aligned request
      from a freed heap block of the same size only when the padding fits, so without ``mmap`` every large
      block grew the heap (measured at ~1M parameters on 5,000 images, ``benchmarks/alloc_policy.py``: peak
      resident 1.3 → 4.0 GiB, user time not lower; faults 534k → 100k a gradient). Blocks above 32 MiB keep
      their own mapping and their page faults (returned to the system when freed).

    The ``landscape`` command calls it at start; a library user may. Does nothing (returns False) off glibc,
    or where any of those variables is set (the user's choice stands).
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
