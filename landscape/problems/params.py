"""Checks of an embedded problem's parameters before anything is built: type, range, memory.

A parameter takes the type of its default (an ``int`` parameter accepts ``3`` or ``3.0``, not
``2.5``; a float is finite), lies in the range :data:`RANGES` declares for its name, and the
problem it asks for must fit in the memory this machine has: ``-p width=1e12`` is refused in one
line before a tensor is allocated, not by the allocator (or the kernel) halfway through.
"""

from __future__ import annotations

import math
import os

from .._errors import LandscapeError

#: Closed ranges of the embedded problems' parameters, by name (a problem need not use them all).
RANGES: dict[str, tuple[float, float]] = {
    "width": (1, 1 << 16), "teacher_width": (1, 1 << 16), "depth": (0, 256), "input_dim": (1, 1 << 16),
    "output_dim": (1, 1 << 16), "dim": (1, 1 << 24), "n_train": (1, 10**8), "n_test": (0, 10**8),
    "data_seed": (0, 2**63 - 1), "test_fraction": (0.01, 0.99), "weight_decay": (0, math.inf),
    "noise": (0, math.inf), "margin": (0, math.inf), "alpha": (0, math.inf), "beta": (0, math.inf),
    "radius": (1e-6, 1e6), "bump": (0, 1e6), "tilt": (-1e6, 1e6), "stiffness": (0, 1e6),
}

_DIGITS = (1797, 64, 10)  # scikit-learn's digits: samples, pixels, classes


def _mlp(widths: list[int], bias: bool = True) -> int:
    return sum(a * b + (b if bias else 0) for a, b in zip(widths[:-1], widths[1:]))


def _hidden(p: dict) -> list[int]:
    return [p["width"]] * p["depth"]


#: Per embedded network: (number of parameters, stored data values, values of one forward pass).
_FOOTPRINTS = {
    "quadratic_regression": lambda p: ([1, *_hidden(p), 1], True, (p["n_train"] + p["n_test"]) * 2, p["n_train"]),
    "digits_mlp": lambda p: ([_DIGITS[1], *_hidden(p), _DIGITS[2]], True, _DIGITS[0] * (_DIGITS[1] + 1),
                             _DIGITS[0]),
    "moons_mlp": lambda p: ([2, *_hidden(p), 2], True, (p["n_train"] + p["n_test"]) * 3, p["n_train"]),
    "teacher_student": lambda p: ([p["input_dim"], p["width"], 1], False,
                                  (p["n_train"] + p["n_test"]) * (p["input_dim"] + 1), p["n_train"]),
    "deep_linear": lambda p: ([p["input_dim"], *_hidden(p), p["output_dim"]], False,
                              p["n_train"] * (p["input_dim"] + p["output_dim"]), p["n_train"]),
    "venturi_relu": lambda p: ([p["input_dim"], p["width"], 1], False,
                               (p["n_train"] + p["n_test"]) * (p["input_dim"] + 1), p["n_train"]),
    "exp_linear": lambda p: ([p["dim"], 1], False, 4 * (p["n_train"] + p["n_test"]) * (p["dim"] + 1), p["n_train"]),
}

#: Copies of the parameter vector a command holds at once (beads, optimiser moments, gradients).
STATE_COPIES = 64


def check_params(name: str, defaults: dict, given: dict) -> dict:
    """The parameters of problem ``name`` with ``given`` checked and coerced to their defaults' types.

    Raises
    ------
    LandscapeError
        One line naming the parameter, its value and what it must be; or the memory the problem
        would need against what this machine has.
    """
    params = dict(defaults)
    for key, value in given.items():
        params[key] = _coerce(name, key, defaults[key], value)
    if name in _FOOTPRINTS:
        _check_memory(name, params, given)
    return {k: params[k] for k in given}


def _coerce(name: str, key: str, default, value):
    where = f"problem {name!r} parameter {key}={value!r}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise LandscapeError(f"{where}: must be true or false")
        return value
    if isinstance(default, int) and default is not None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or value != int(value):
            raise LandscapeError(f"{where}: must be a whole number")
        value = int(value)
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise LandscapeError(f"{where}: must be a finite number")
        value = float(value)
    elif isinstance(default, str) and not isinstance(value, str):
        raise LandscapeError(f"{where}: must be a word (e.g. -p {key}={default})")
    if key in RANGES and isinstance(value, (int, float)):
        lo, hi = RANGES[key]
        if not lo <= value <= hi:
            raise LandscapeError(f"{where}: must lie in [{lo:g}, {hi:g}]")
    return value


def _check_memory(name: str, params: dict, given: dict) -> None:
    widths, bias, data, samples = _FOOTPRINTS[name](params)
    dim = _mlp(widths, bias)
    values = STATE_COPIES * dim + data + samples * sum(widths)  # states, data, one forward pass
    need = 4 * values
    have = available_memory()
    if have is not None and need > have:
        shown = ", ".join(f"{k}={v}" for k, v in given.items())
        raise LandscapeError(f"problem {name!r} with {shown} needs about {format_bytes(need)} ({dim:,} parameters, "
                             f"{samples:,} samples); this machine has {format_bytes(have)} available: use smaller values")


def available_memory(device=None) -> int | None:
    """Bytes of memory the device can give now, or None where unknown.

    The CPU (``device`` None or ``"cpu"``): the host's ``MemAvailable``. A CUDA device: the free bytes
    of ``torch.cuda.mem_get_info`` (memory other processes hold is not free).
    """
    import torch

    device = torch.device("cpu" if device is None else device)
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except (RuntimeError, AssertionError):
            return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(n: float) -> str:
    """``n`` bytes in binary units, three significant digits: ``format_bytes(3 << 30) == "3 GiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} PiB"
