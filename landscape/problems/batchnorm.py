"""BatchNorm with statistics recomputed at every point θ (Garipov et al. 2018, "Loss Surfaces, Mode
Connectivity, and Fast Ensembling of DNNs", NeurIPS 2018: a point on a curve between two minima needs
its own normalization statistics, computed from the training data).

:class:`landscape.NetworkProblem` swaps each BatchNorm layer of a copy of the module for a
:class:`RecomputedNorm`; one forward pass over the training split records the statistics of
every layer on a :class:`Tape`, a second pass normalizes the evaluated split with them. Both
passes run inside ``torch.func.vmap``, so K points take one batched call.

With ``problem.sample_chunk`` the statistics are taken a chunk of samples at a time, exactly
(:func:`chunked_loss`): sums of chunk means and of squared deviations, one pass per BatchNorm layer
(layer l's input depends on the statistics of the layers before it), and gradients through the
statistics by the adjoint of those passes.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.func import vmap

from .fcall import functional_call

from .._errors import LandscapeError


def norm_calls(module: nn.Module, names: list[str], x: torch.Tensor) -> dict[str, int]:
    """How many times one forward pass of ``module`` on ``x`` calls each BatchNorm layer ``names``; a layer that
    keeps no running statistics (it normalizes every batch by its own) is a one-line error."""
    counts = dict.fromkeys(names, 0)
    for name in names:
        if module.get_submodule(name).running_mean is None:
            raise LandscapeError(f"BatchNorm layer {name} keeps no running statistics (track_running_stats=False): "
                                 "its output depends on the batch it is given; build it with track_running_stats=True")
    if not names:
        return counts

    def hook(name):
        def count(*_):
            counts[name] += 1
        return count

    handles = [module.get_submodule(name).register_forward_pre_hook(hook(name)) for name in names]
    try:
        with torch.no_grad():
            module(x)
    except Exception as err:  # noqa: BLE001 - the user's model and data do not fit: said in one line
        raise LandscapeError(f"the model cannot run on the data (input shape {tuple(x.shape[1:])}): {err}") from None
    finally:
        for h in handles:
            h.remove()
    return counts


class Tape:
    """Statistics of a forward pass: recorded per layer while ``collecting``, read back afterwards."""

    def __init__(self, collecting: bool, given: dict | None = None):
        self.collecting = collecting
        self.stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        #: A chunk's pass (:func:`chunked_statistics`): normalize with these (mean, biased variance) and
        #: record each layer's chunk mean and mean squared deviation from the given mean in ``sums``.
        self.given = given
        self.sums: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.counts: dict[str, int] = {}

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
        self.num_features = bn.num_features

    def forward(self, x):
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        if self.tape.given is not None:
            mean, scale = self.tape.given[self.name]
            deviation = (x - mean.detach().reshape(shape)).pow(2).mean(dims)  # d/dmean is 0 at the exact mean
            self.tape.sums[self.name] = (x.mean(dims), deviation)
            self.tape.counts[self.name] = x.numel() // x.shape[1]
        elif self.tape.collecting:
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


def recomputed_loss(problem, thetas, x, y):
    """Two passes per point: statistics over the training split, then the loss with them (vmapped over
    ``thetas`` [K, D] and the data x [K, N, ...], y [K, N, ...])."""
    module = problem._recompute_module()
    stats_x = problem._device_data("train", thetas.device, thetas.dtype)[0]

    def one(theta, xi, yi):
        params = problem.layout.unflatten(theta)
        tape = Tape(collecting=True)
        with tape.active(module):
            functional_call(module, params, (stats_x,))
            tape.collecting = False
            out = functional_call(module, params, (xi,))
        return problem._one_loss(out, yi)

    return vmap(one)(thetas, x, y)


def recomputing_copy(module: nn.Module, layers: list[str]) -> nn.Module:
    """A deep copy of ``module`` whose BatchNorm layers (named ``layers``) are :class:`RecomputedNorm`."""
    import copy

    m = copy.deepcopy(module)
    for name in layers:
        parent, _, child = name.rpartition(".")
        owner = m.get_submodule(parent) if parent else m
        setattr(owner, child, RecomputedNorm(owner.get_submodule(child), name))
    return m


def chunked_statistics(module: nn.Module, unflatten, thetas: torch.Tensor, x: torch.Tensor, chunk: int, given=None):
    """Per BatchNorm layer, the (mean, biased variance) of its input over all of ``x`` at each θ, ``chunk`` samples a call.

    A pass over the chunks normalizes every layer with the current statistics and sums each layer's
    chunk means and squared deviations; after one pass per layer (in the order they run) every layer's
    statistics are those of one pass over all of ``x`` (up to rounding).

    Parameters
    ----------
    module : nn.Module
        With :class:`RecomputedNorm` layers.
    unflatten : callable
        Flat θ (D,) to the module's named parameters.
    thetas : Tensor, shape (K, D)
    x : Tensor, shape (N, ...)
    chunk : int

    Returns
    -------
    stats : dict of str to (Tensor (K, C), Tensor (K, C))
    counts : dict of str to int
        Values per channel over all of ``x`` (N × positions), for the unbiased variance.
    """
    layers = [m for m in module.modules() if isinstance(m, RecomputedNorm)]
    k = thetas.shape[0]
    if given is None:
        given = {m.name: (thetas.new_zeros(k, m.num_features), thetas.new_ones(k, m.num_features)) for m in layers}
    for _ in layers:
        sums, counts = {}, {}
        for means, deviations, count, w in _chunk_passes(module, unflatten, thetas, given, x, chunk):
            for name in means:
                m, q = sums.get(name, (0.0, 0.0))
                sums[name] = (m + w * means[name], q + w * deviations[name])
                counts[name] = counts.get(name, 0) + count[name]
        given = {name: (m, q - (m - given[name][0]).pow(2)) for name, (m, q) in sums.items()}
    return given, counts


def _chunk_passes(module, unflatten, thetas, given, x, chunk):
    """For each chunk of ``x``: every layer's chunk means and squared deviations [K, C], its counts, its weight."""
    n = x.shape[0]
    for start in range(0, n, chunk):
        xc = x[start:start + chunk]
        counts = {}

        def one(theta, g):
            tape = Tape(collecting=True, given=g)
            with tape.active(module):
                functional_call(module, unflatten(theta), (xc,))
            counts.update(tape.counts)
            return {k: v[0] for k, v in tape.sums.items()}, {k: v[1] for k, v in tape.sums.items()}

        means, deviations = vmap(one)(thetas, given)
        yield means, deviations, counts, xc.shape[0] / n


def chunked_loss(problem, thetas: torch.Tensor, split: str, grad: bool):
    """Loss (and gradient) of K points with BatchNorm statistics recomputed a chunk of samples at a time, exactly.

    The statistics s(θ) are the fixed point of one pass per layer (:func:`chunked_statistics`); the
    loss ℓ(θ, s(θ)) is summed over chunks of ``split``. Its gradient is ∂ℓ/∂θ plus the statistics'
    part: with v₀ = ∂ℓ/∂s, each pass over the chunks maps v_i to its vector-Jacobian products with
    the statistics map Φ(θ, s), θ-part added to the gradient, s-part v_{i+1}; Φ's s-Jacobian is
    strictly lower block-triangular (a layer's statistics depend on earlier layers' only), so after
    one pass per layer the sum is exact. Memory: one chunk of samples at a time throughout.

    Parameters
    ----------
    problem : NetworkProblem
        With ``bn == "recompute"`` and ``sample_chunk`` set.
    thetas : Tensor, shape (K, D)
    split : str
    grad : bool

    Returns
    -------
    loss : Tensor, shape (K,)
    grad : Tensor, shape (K, D), or None
    """
    module, unflatten, chunk = problem._recompute_module(), problem.layout.unflatten, problem.sample_chunk
    train_x = problem._device_data("train", thetas.device, thetas.dtype)[0]
    x, y = problem._device_data(split, thetas.device, thetas.dtype)
    with torch.no_grad():
        stats, counts = chunked_statistics(module, unflatten, thetas, train_x, chunk)
    with torch.set_grad_enabled(grad):
        theta = thetas.detach().requires_grad_(grad)
        leaves = {name: tuple(t.detach().requires_grad_(grad) for t in pair) for name, pair in stats.items()}
        loss, g_theta, g_stats = thetas.new_zeros(thetas.shape[0]), torch.zeros_like(thetas), None
        for start in range(0, x.shape[0], chunk):
            xc, yc = x[start:start + chunk], y[start:start + chunk]
            value = xc.shape[0] / x.shape[0] * _given_loss(problem, module, theta, leaves, counts, xc, yc)
            loss += value.detach()
            if grad:
                flat = [t for pair in leaves.values() for t in pair]
                got = torch.autograd.grad(value.sum(), [theta, *flat])
                g_theta += got[0]
                g_stats = got[1:] if g_stats is None else [a + b for a, b in zip(g_stats, got[1:])]
        if grad:
            g_theta += _statistics_adjoint(module, unflatten, theta, leaves, train_x, chunk, g_stats)
    return loss, (g_theta if grad else None)


def _given_loss(problem, module, theta, stats, counts, x, y):
    """The loss of K points on (x, y) normalizing with the given (mean, biased variance), unbiased as torch stores it."""

    def one(t, s):
        tape = Tape(collecting=False)
        tape.stats = {name: (m, v * counts[name] / max(counts[name] - 1, 1)) for name, (m, v) in s.items()}
        with tape.active(module):
            out = functional_call(module, unflatten(t), (x,))
        return problem._one_loss(out, y)

    unflatten = problem.layout.unflatten
    return vmap(one)(theta, stats)


def _statistics_adjoint(module, unflatten, theta, leaves, x, chunk, cotangent):
    """Σ_i θ-part of the vector-Jacobian products of the statistics map, v_{i+1} its s-part (see :func:`chunked_loss`)."""
    names = list(leaves)
    flat = [t for name in names for t in leaves[name]]
    v = list(cotangent)
    total = torch.zeros_like(theta)
    for _ in names:
        if all(not bool(c.abs().max() > 0) for c in v):
            break
        acc = [torch.zeros_like(t) for t in flat]
        for means, deviations, _, w in _chunk_passes(module, unflatten, theta, leaves, x, chunk):
            outs = [part[name] for name in names for part in (means, deviations)]
            pairs = [(o, c) for o, c in zip(outs, v) if o.requires_grad]
            if not pairs:
                continue
            objective = w * sum((o * c).sum() for o, c in pairs)
            got = torch.autograd.grad(objective, [theta, *flat], allow_unused=True)
            total += got[0] if got[0] is not None else 0
            acc = [a + (g if g is not None else 0) for a, g in zip(acc, got[1:])]
        v = acc
    return total
