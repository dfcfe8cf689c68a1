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
    "p": (2, 1 << 12), "d_model": (1, 1 << 14), "heads": (1, 1 << 10), "layers": (1, 64), "d_mlp": (1, 1 << 16),
    "train_fraction": (0.01, 0.99),
}

_DIGITS = (1797, 64, 10)  # scikit-learn's digits: samples, pixels, classes


def _mlp(widths: list[int], bias: bool = True) -> int:
    return sum(a * b + (b if bias else 0) for a, b in zip(widths[:-1], widths[1:]))


def _hidden(p: dict) -> list[int]:
    return [p["width"]] * p["depth"]


def _net(widths: list[int], bias: bool, data: int, samples: int) -> tuple[int, int, int, int]:
    """An MLP's footprint: its parameters, the data it stores, its samples, and the values of one sample's forward
    pass (every layer's output)."""
    return _mlp(widths, bias), data, samples, sum(widths)


def _digits_samples(p: dict) -> int:
    return _DIGITS[0] if p.get("n_train") is None else min(p["n_train"], _DIGITS[0])


def _cnn(p: dict) -> tuple[int, int, int, int]:
    """digits_cnn (``convnets.cnn``): per block a 3x3 conv without bias, BatchNorm, ReLU and 2x2 pooling; a linear
    head. Values a sample: every block's conv, BatchNorm and ReLU outputs and its pooled output."""
    c_in, size, dim, values = 1, 8, 0, 64
    for i in range(p["depth"]):
        c = p["width"] * 2**i
        dim += 9 * c_in * c + 2 * c
        values += 3 * c * size * size + c * (size // 2) ** 2
        c_in, size = c, size // 2
    dim += c_in * size * size * _DIGITS[2] + _DIGITS[2]
    return dim, _DIGITS[0] * (_DIGITS[1] + 1), _digits_samples(p), values + _DIGITS[2]


def _resnet(p: dict) -> tuple[int, int, int, int]:
    """digits_resnet (``convnets.PreResNet``): a stem conv, ``depth`` pre-activation blocks at 8x8 and ``width``
    channels, ``depth`` at 4x4 and twice the channels (the first with a 1x1 projection), BatchNorm, pooling, a
    linear head. Values a sample: each block's two BatchNorm, two ReLU and two conv outputs, its projection and
    its sum."""
    w = p["width"]
    blocks = [(w, w, 8, 8)] * p["depth"] + [(w, 2 * w, 8, 4)] + [(2 * w, 2 * w, 4, 4)] * (p["depth"] - 1)
    dim, values = 9 * w, 64 + 64 * w
    for c_in, c_out, s_in, s in blocks:
        projection = c_in != c_out or s != s_in
        dim += 2 * c_in + 9 * c_in * c_out + 2 * c_out + 9 * c_out * c_out + (c_in * c_out if projection else 0)
        values += 2 * c_in * s_in * s_in + (5 + projection) * c_out * s * s
    dim += 4 * w + 2 * w * _DIGITS[2] + _DIGITS[2]
    values += 2 * 2 * w * 16 + 2 * w + _DIGITS[2]
    return dim, _DIGITS[0] * (_DIGITS[1] + 1), _digits_samples(p), values


#: Per embedded network: (parameters, stored data values, samples, values of one sample's forward pass).
_FOOTPRINTS = {
    "quadratic_regression": lambda p: _net([1, *_hidden(p), 1], True, (p["n_train"] + p["n_test"]) * 2,
                                           p["n_train"]),
    "digits_mlp": lambda p: _net([_DIGITS[1], *_hidden(p), _DIGITS[2]], True, _DIGITS[0] * (_DIGITS[1] + 1),
                                 _DIGITS[0]),
    "moons_mlp": lambda p: _net([2, *_hidden(p), 2], True, (p["n_train"] + p["n_test"]) * 3, p["n_train"]),
    "teacher_student": lambda p: _net([p["input_dim"], p["width"], 1], False,
                                      (p["n_train"] + p["n_test"]) * (p["input_dim"] + 1), p["n_train"]),
    "deep_linear": lambda p: _net([p["input_dim"], *_hidden(p), p["output_dim"]], False,
                                  p["n_train"] * (p["input_dim"] + p["output_dim"]), p["n_train"]),
    "venturi_relu": lambda p: _net([p["input_dim"], p["width"], 1], False,
                                   (p["n_train"] + p["n_test"]) * (p["input_dim"] + 1), p["n_train"]),
    "exp_linear": lambda p: _net([p["dim"], 1], False, 4 * (p["n_train"] + p["n_test"]) * (p["dim"] + 1),
                                 p["n_train"]),
    "digits_cnn": _cnn,
    "digits_resnet": _resnet,
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
    dim, data, samples, per_sample = _FOOTPRINTS[name](params)
    values = STATE_COPIES * dim + data + samples * per_sample  # states, data, one forward pass
    need = 4 * values
    have = available_memory()
    if have is not None and need > have:
        shown = ", ".join(f"{k}={v}" for k, v in given.items())
        raise LandscapeError(f"problem {name!r} with {shown} needs about {format_bytes(need)} ({dim:,} parameters, "
                             f"{samples:,} samples); this machine has {format_bytes(have)} available: use smaller values")


def available_memory(device=None) -> int | None:
    """Bytes of memory the device can give now, or None where unknown.

    The CPU (``device`` None or ``"cpu"``): the least of the host's ``MemAvailable``, what the address-space limit
    (``ulimit -v``) leaves above the process's present size, and what its control group's memory limit leaves
    (``memory.max`` or ``memory.limit_in_bytes``, less the usage that is not reclaimable cache). A CUDA device:
    the free bytes of ``torch.cuda.mem_get_info`` (memory other processes hold is not free).
    """
    import torch

    device = torch.device("cpu" if device is None else device)
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except (RuntimeError, AssertionError):
            return None
    found = [n for n in (_host_available(), _address_space_left(), _cgroup_left()) if n is not None]
    return max(0, min(found)) if found else None


#: Where :func:`available_memory` reads the process's limits (tests point these at files of their own).
PROC, CGROUP = "/proc", "/sys/fs/cgroup"


def _host_available() -> int | None:
    try:
        with open(f"{PROC}/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _address_space_left() -> int | None:
    """``RLIMIT_AS`` less the process's virtual size (VmSize), or None without a limit."""
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        if limit == resource.RLIM_INFINITY or limit <= 0:
            return None
        with open(f"{PROC}/self/status") as f:
            size = next((int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:")), 0)
        return limit - size
    except (ImportError, OSError, ValueError, IndexError):
        return None


def _cgroup_left() -> int | None:
    """The memory limit of the process's control group (v2, else v1) less its usage without inactive file cache."""
    try:
        with open(f"{PROC}/self/cgroup") as f:
            lines = [line.strip().split(":", 2) for line in f if line.count(":") >= 2]
    except OSError:
        return None
    for hierarchy, controllers, where in lines:
        if hierarchy == "0" and controllers == "":  # v2
            files, folders = ("memory.max", "memory.current", "inactive_file"), (f"{CGROUP}{where}", CGROUP)
        elif "memory" in controllers.split(","):  # v1
            files = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
            folders = (f"{CGROUP}/memory{where}", f"{CGROUP}/memory")
        else:
            continue
        for folder in folders:
            left = _limit_left(folder, *files)
            if left is not None:
                return left
    return None


def _limit_left(folder: str, limit_file: str, usage_file: str, cache_key: str) -> int | None:
    try:
        with open(f"{folder}/{limit_file}") as f:
            text = f.read().strip()
        if text == "max" or int(text) >= 1 << 60:  # no limit here
            return None
        with open(f"{folder}/{usage_file}") as f:
            usage = int(f.read().strip())
        cache = 0
        try:
            with open(f"{folder}/memory.stat") as f:
                cache = next((int(line.split()[1]) for line in f if line.split()[0] == cache_key), 0)
        except (OSError, ValueError, IndexError):
            pass
        return int(text) - max(0, usage - cache)
    except (OSError, ValueError):
        return None


def format_bytes(n: float) -> str:
    """``n`` bytes in binary units, three significant digits: ``format_bytes(3 << 30) == "3 GiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} PiB"
