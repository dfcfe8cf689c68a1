"""BatchNorm with statistics recomputed at every point θ (Garipov et al. 2018, "Loss Surfaces, Mode
Connectivity, and Fast Ensembling of DNNs", NeurIPS 2018: a point on a curve between two minima needs
its own normalization statistics, computed from the training data).

:class:`landscape.NetworkProblem` swaps each BatchNorm layer of a copy of the module for a
:class:`RecomputedNorm`; one forward pass over the training split records the statistics of
every layer on a :class:`Tape`, a second pass normalizes the evaluated split with them. Both
passes run inside ``torch.func.vmap``, so K points take one batched call.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from .._errors import LandscapeError


class Tape:
    """Statistics of a forward pass: recorded per layer while ``collecting``, read back afterwards."""

    def __init__(self, collecting: bool):
        self.collecting = collecting
        self.stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def active(self, module: nn.Module):
        """Attach the tape to every :class:`RecomputedNorm` of ``module`` for the duration of a ``with``."""

        @contextlib.contextmanager
        def attached():
            layers = [m for m in module.modules() if isinstance(m, RecomputedNorm)]
            for layer in layers:
                layer.tape = self
            try:
                yield self
            finally:
                for layer in layers:
                    layer.tape = None

        return attached()


class RecomputedNorm(nn.Module):
    """A BatchNorm layer (any dimension) normalizing with statistics recomputed at the current θ.

    Collecting: normalizes with the batch statistics (biased variance, as training mode does) and
    records the mean and the unbiased variance, as a reset BatchNorm with ``momentum=None`` stores
    them after one pass. Applying: normalizes with the recorded statistics, as evaluation mode does.
    Its parameters keep the names ``weight`` and ``bias``, so the flat layout is unchanged.
    """

    def __init__(self, bn: nn.Module, name: str):
        super().__init__()
        self.name, self.eps, self.tape = name, bn.eps, None
        self.weight = bn.weight
        self.bias = bn.bias

    def forward(self, x):
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        if self.tape.collecting:
            mean = x.mean(dims)
            var = x.var(dims, unbiased=False)
            n = x.numel() // x.shape[1]
            self.tape.stats.setdefault(self.name, (mean, var * n / max(n - 1, 1)))
            scale = var
        else:
            if self.name not in self.tape.stats:
                raise LandscapeError(f"BatchNorm layer {self.name!r} did not run on the training data")
            mean, scale = self.tape.stats[self.name]
        y = (x - mean.reshape(shape)) / torch.sqrt(scale.reshape(shape) + self.eps)
        if self.weight is not None:
            y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
        return y


def recomputing_copy(module: nn.Module, layers: list[str]) -> nn.Module:
    """A deep copy of ``module`` whose BatchNorm layers (named ``layers``) are :class:`RecomputedNorm`."""
    import copy

    m = copy.deepcopy(module)
    for name in layers:
        parent, _, child = name.rpartition(".")
        owner = m.get_submodule(parent) if parent else m
        setattr(owner, child, RecomputedNorm(owner.get_submodule(child), name))
    return m
