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
    """Ask glibc's ``malloc`` to keep freed blocks for reuse instead of handing them back to the system.

    A batched evaluation allocates and frees the same activation blocks chunk after chunk. By default glibc
    gives a block of 128 KiB or more its own ``mmap`` and unmaps it when it is freed, so the next chunk pays
    a page fault per 4 KiB page to get it back: 40% of a plane's time on a tiny network
    (``benchmarks/planes.py``); at ~1M parameters on 5,000 images, 345,000 faults and 0.69 s of system time
    a gradient (``benchmarks/alloc_policy.py``). This sets (``mallopt``, as the environment variables
    ``MALLOC_MMAP_MAX_``, ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` would):

    - ``M_MMAP_THRESHOLD`` to ``mmap_threshold`` (32 MiB, glibc's largest): blocks below it come from the heap
      and stay there when freed;
    - ``M_TRIM_THRESHOLD`` to ``trim_threshold``: up to 256 MiB of freed memory at the top of the heap is kept;
    - ``M_MMAP_MAX`` to ``max_mmap_blocks`` if given (0: no block gets its own mapping, however large).

    The evaluators keep their blocks under 32 MiB where they can (the wide evaluator takes a large split in
    blocks of samples), so the default leaves larger blocks to ``mmap``. Measured on that 1M-parameter gradient
    (one thread, interleaved processes, two rounds while the conv evaluator was being rewritten beside it):
    this policy gave 310,000 and 0 faults, 1.83 and 1.40 CPU s (the second round with the evaluator's blocks);
    ``max_mmap_blocks=0`` with 1 GiB kept gave 0 and 3,700 faults, 1.27 and 1.49 s, for a peak resident of 1,701
    and 814 MiB against 1,355 — and one run peaked at 3,991 MiB: glibc reuses a freed block for torch's aligned
    requests only when the alignment padding fits, so without ``mmap`` a run of growing blocks grows the heap.
    No gain left for an unbounded cost: ``mmap`` stays allowed by default. The ``landscape`` command calls
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
