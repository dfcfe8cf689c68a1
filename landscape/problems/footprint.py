"""What a module's forward pass holds, measured on one or two samples: its largest output, the values autograd saves.

These sizes set how many points a batched call takes (:meth:`Problem.chunk_size`) and the bytes a point
needs under a memory budget (:mod:`.memory`).
"""

from __future__ import annotations

import math

import torch
from .fcall import functional_call

from .._errors import LandscapeError


def measure_activations(module, params, buffers, x1) -> int:
    """Largest output size (per sample) of any submodule, found with forward hooks on one sample."""
    sizes = []

    def hook(_, __, out):
        if isinstance(out, torch.Tensor):
            sizes.append(out.numel())

    handles = [m.register_forward_hook(hook) for m in module.modules()]
    try:
        with torch.no_grad():
            functional_call(module, ({k: v.detach() for k, v in params.items()}, buffers), (x1,))
    except Exception as err:  # noqa: BLE001 - any failure here is the user's model/data mismatch
        raise LandscapeError(f"the model cannot run on the data (input shape {tuple(x1.shape[1:])}): {err}") from None
    finally:
        for h in handles:
            h.remove()
    return max(sizes + [1])


def saved_values(module, params, buffers, x) -> int:
    """Values of the tensors autograd saves for the backward pass of one forward on ``x`` (each storage once)."""
    seen = {}

    def pack(t):
        seen[(t.data_ptr(), tuple(t.shape))] = t.numel()
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        dtype = next(iter(params.values())).dtype
        out = functional_call(module, (params, buffers), (x.to(dtype) if x.is_floating_point() else x,))  # tokens stay
    return sum(seen.values()) + out.numel()


def forward_flops(module, params, buffers, x1) -> float:
    """Multiply-add FLOPs (2 a multiply-add) of the convolutions and linear layers of one forward pass on one
    sample ``x1`` (shape (1, ...)): 2 × outputs × inputs per output (``in_channels / groups × kernel``)."""
    from torch import nn

    total = [0.0]

    def hook(m, _, out):
        if isinstance(m, nn.Linear):
            total[0] += 2.0 * out.numel() * m.in_features
        elif isinstance(m, nn.modules.conv._ConvNd):
            total[0] += 2.0 * out.numel() * m.in_channels // m.groups * math.prod(m.kernel_size)

    layers = (nn.Linear, nn.modules.conv._ConvNd)
    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, layers)]
    try:
        with torch.no_grad():
            functional_call(module, ({k: v.detach() for k, v in params.items()}, buffers), (x1,))
    finally:
        for h in handles:
            h.remove()
    return total[0]
