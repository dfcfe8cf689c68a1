"""Where computations run: ``--device auto|cpu|cuda[:n]``."""

from __future__ import annotations

import torch

from ._errors import LandscapeError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` is CUDA when a GPU is present, else the CPU; ``"cuda"`` without a GPU is an error."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LandscapeError(f"unknown device {name!r}; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LandscapeError(f"--device {name}: CUDA is not available on this machine; use --device auto or cpu")
    if device.type not in ("cpu", "cuda"):
        raise LandscapeError(f"unsupported device {name!r}; use auto, cpu or cuda")
    return device
