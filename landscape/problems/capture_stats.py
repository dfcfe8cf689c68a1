"""BatchNorm statistics recomputed at θ as torch computes them, for the differential check (:mod:`.capture`): the
module's own layers reset and run once in training mode on the training split, and the same statistics as
functions of θ, for the gradient through them."""

from __future__ import annotations

import contextlib

import torch
from torch import nn


def recompute_statistics(m, x_train):
    """What torch computes with statistics recomputed at θ: reset BatchNorm layers, ``momentum=None``, one
    training-mode pass over the training split, then evaluation mode."""
    norms = [b for b in m.modules() if isinstance(b, nn.modules.batchnorm._BatchNorm)]
    for b in norms:
        b.reset_running_stats()
        b.momentum = None
        b.train()
    m(x_train)
    for b in norms:
        b.eval()


@contextlib.contextmanager
def differentiable_statistics(m, norms):
    """The recomputed statistics of :func:`recompute_statistics` as functions of θ (torch stores them outside
    autograd): each BatchNorm layer records its training-mode input's mean and unbiased variance (what
    ``momentum=None`` stores after one pass) and in evaluation mode normalizes with them as torch does."""
    stats, handles = {}, []

    def record(b, args):
        if b.training:
            v, dims = args[0], [0, *range(2, args[0].dim())]
            stats[b] = (v.mean(dims), v.var(dims, correction=1 if v.numel() > v.shape[1] else 0))

    def normalize(b, args, out):
        if b.training or b not in stats:
            return out
        mean, var = stats[b]
        shape = (1, -1, *[1] * (args[0].dim() - 2))
        out = (args[0] - mean.reshape(shape)) * torch.rsqrt(var + b.eps).reshape(shape)
        if b.weight is not None:
            out = out * b.weight.reshape(shape)
        return out if b.bias is None else out + b.bias.reshape(shape)

    for b in norms:
        handles += [b.register_forward_pre_hook(record, prepend=True),
                    b.register_forward_hook(normalize, prepend=True)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
