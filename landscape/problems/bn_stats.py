"""BatchNorm statistics of a trained point, and the training-mode loss of K networks in one pass.

Two things training a network with BatchNorm needs (:func:`landscape.train`, :func:`landscape.train_checkpoints`):

- :func:`training_loss_and_grad`: the full-batch training-mode loss (every BatchNorm layer normalizes its input by
  that input's mean and biased variance, as ``module.train()`` does) and its gradient, K points at once, in **one**
  forward and backward pass. The ``recompute`` policy's loss at θ is a statistics pass in training mode and then a
  loss pass normalizing with the unbiased variance n/(n−1)·σ²: a different function only by that factor (n values
  per channel: 92,032 in digits_cnn's first layer), at three times the cost. Training descends the training-mode
  loss; the minimum is then polished and checked on the problem's own loss (:mod:`landscape.minima.train`).
- :func:`running_statistics`: the running statistics to store with a trained θ so that the ``frozen`` policy is
  the trained network: per BatchNorm layer, the exact mean and unbiased variance of the layer's input over the whole
  training split at θ (``problem.batchnorm_statistics``), named as the module's buffers. Then the frozen loss at θ
  equals the recomputed loss at θ (to the statistics' float32 rounding) and differs from the training-mode loss by
  the batch-vs-population correction n/(n−1) of the variance (:func:`mode_losses` measures the three).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import vmap

from .fcall import functional_call


class _SelfNorm(nn.Module):
    """A BatchNorm layer in training mode without running statistics: it normalizes its input by the input's own
    mean and biased variance (a module of plain tensors, so ``vmap`` batches it)."""

    def __init__(self, bn: nn.Module):
        super().__init__()
        self.eps = bn.eps
        self.weight, self.bias = bn.weight, bn.bias

    def forward(self, x):
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        mean = x.mean(dims)
        var = x.var(dims, unbiased=False)
        y = (x - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + self.eps)
        if self.weight is not None:
            y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
        return y


def self_normalizing_copy(problem) -> nn.Module:
    """A copy of the problem's module whose BatchNorm layers normalize each input by its own statistics."""
    key = "_training_mode_module"
    found = problem.__dict__.get(key)
    if found is None:
        found = copy.deepcopy(problem.module())
        for name in problem._bn_layers:
            parent, _, child = name.rpartition(".")
            owner = found.get_submodule(parent) if parent else found
            setattr(owner, child, _SelfNorm(owner.get_submodule(child)))
        problem.__dict__[key] = found
    return found


def one_pass_applies(problem) -> bool:
    """Whether :class:`OnePass` trains ``problem``: a module problem with recomputed BatchNorm whose training split
    is taken whole (no ``sample_chunk``)."""
    return (getattr(problem, "bn", None) == "recompute" and getattr(problem, "_mlp", 1) is None
            and getattr(problem, "sample_chunk", None) is None and hasattr(problem, "_one_loss"))


def _loss(problem, module, thetas):
    x, y = problem._device_data("train", thetas.device, thetas.dtype)
    unflatten = problem.layout.unflatten

    def one(theta):
        return problem._one_loss(functional_call(module, unflatten(theta), (x,)), y)

    value = vmap(one)(thetas)
    if problem.weight_decay:
        mask = problem._decay.to(thetas.device)
        value = value + 0.5 * problem.weight_decay * thetas[:, mask].pow(2).sum(-1)
    return value


def training_loss_and_grad(problem, thetas: torch.Tensor):
    """Full-batch training-mode loss and gradient of K points (K, D), weight decay included, in one pass (see the
    module docstring).

    Returns
    -------
    loss : Tensor, shape (K,)
    grad : Tensor, shape (K, D)
    """
    module = self_normalizing_copy(problem)
    size = problem.chunk_size(problem.n_samples("train"), thetas.device, thetas.dtype)
    losses, grads = [], []
    for part in thetas.split(max(1, size)):
        with torch.enable_grad():
            t = part.detach().requires_grad_(True)
            value = _loss(problem, module, t)
            (g,) = torch.autograd.grad(value.sum(), t)
        losses.append(value.detach())
        grads.append(g)
    return torch.cat(losses), torch.cat(grads)


class OnePass:
    """A problem whose full-batch training loss and gradient are :func:`training_loss_and_grad` (training-mode
    BatchNorm: one pass instead of a statistics pass and a loss pass); minibatches, other splits and everything
    else are the problem's own. What :func:`landscape.train` descends before polishing on the problem itself."""

    def __init__(self, problem):
        self.problem = problem
        self.dim, self.name = problem.dim, problem.name

    def loss_and_grad(self, thetas, *, split="train", batch=None):
        if split != "train" or batch is not None or thetas.dim() != 2:
            return self.problem.loss_and_grad(thetas, split=split, batch=batch)
        return training_loss_and_grad(self.problem, thetas)

    def loss(self, thetas, *, split="train", batch=None):
        if split != "train" or batch is not None or thetas.dim() != 2:
            return self.problem.loss(thetas, split=split, batch=batch)
        with torch.no_grad():
            module = self_normalizing_copy(self.problem)
            return torch.cat([_loss(self.problem, module, part) for part in thetas.split(
                max(1, self.problem.chunk_size(self.problem.n_samples("train"), thetas.device, thetas.dtype)))])

    def __getattr__(self, name):
        return getattr(self.problem, name)


def one_pass(problem):
    """:class:`OnePass` of ``problem`` where it applies (:func:`one_pass_applies`), else ``problem`` itself."""
    return OnePass(problem) if one_pass_applies(problem) else problem


def running_statistics(problem, theta: torch.Tensor) -> dict[str, torch.Tensor]:
    """The BatchNorm buffers that make the ``frozen`` policy the network at θ (D,): per layer ``<name>.running_mean``
    and ``<name>.running_var``, the exact mean and unbiased variance of the layer's input over the training split
    at θ (float32 on the CPU, as the module stores them), and ``<name>.num_batches_tracked`` as 1. Empty without
    BatchNorm."""
    if not getattr(problem, "_bn_layers", None):
        return {}
    bn, problem.bn = problem.bn, "recompute"  # the statistics pass is the recompute policy's
    try:
        stats = problem.batchnorm_statistics(theta.detach())
    finally:
        problem.bn = bn
    out = {}
    for name, (mean, var) in stats.items():
        own = problem.module().get_submodule(name)
        out[f"{name}.running_mean"] = mean.detach().to("cpu", own.running_mean.dtype).clone()
        out[f"{name}.running_var"] = var.detach().to("cpu", own.running_var.dtype).clone()
        out[f"{name}.num_batches_tracked"] = torch.tensor(1, dtype=torch.long)
    return out


def mode_losses(problem, theta: torch.Tensor, statistics: dict) -> dict[str, float]:
    """The training loss at θ three ways: ``recompute`` (statistics of the training split at θ, unbiased variance),
    ``train_mode`` (a training-mode forward: batch statistics, biased variance) and ``frozen`` (the module with
    ``statistics`` as its running statistics, evaluation mode), evaluated with torch's own modules, float64."""
    module = copy.deepcopy(problem.module()).double()
    with torch.no_grad():
        for name, value in problem.layout.unflatten(theta.detach().double().cpu()).items():
            module.get_parameter(name).copy_(value)
        buffers = dict(module.named_buffers())
        for name, value in statistics.items():
            if buffers[name].is_floating_point():
                buffers[name].copy_(value.double())
    x, y = (t.double() if t.is_floating_point() else t for t in problem.data("train"))
    out = {}
    with torch.no_grad():
        out["frozen"] = float(problem._one_loss(module.eval()(x), y))
        out["train_mode"] = float(problem._one_loss(copy.deepcopy(module).train()(x), y))
        bn, problem.bn = problem.bn, "recompute"
        try:
            out["recompute"] = float(problem.loss(theta.detach().double()[None])[0]) - _decay(problem, theta.double())
        finally:
            problem.bn = bn
    return out


def _decay(problem, theta):
    if not problem.weight_decay:
        return 0.0
    return 0.5 * problem.weight_decay * float(theta[problem._decay].pow(2).sum())


__all__ = ["OnePass", "mode_losses", "one_pass", "one_pass_applies", "running_statistics", "self_normalizing_copy", "training_loss_and_grad"]
