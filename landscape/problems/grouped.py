"""K networks in one forward pass of the module's own ``forward``: the wide evaluator of conv nets and other modules
whose parameters all sit in convolutions, linear layers and BatchNorm layers.

A copy of the module has each such layer replaced by a :class:`_Wide` layer that holds no parameters: it reads the
K networks' weights from the :class:`WidePlan` (views of the flat θ, shape [K, ...]) and runs on values of K·N rows,
network k's N samples at rows k·N … k·N + N − 1 (the layout of :mod:`.traced`). Everything in between — ReLU,
pooling, flatten, residual additions, ``view(x.size(0), -1)`` — runs unchanged on the K·N rows. The input (N rows,
shared by the K networks) meets its first layer as it is: a layer of K·C outputs, no copy of the data per network.

- Convolutions of per-network values: one call per network on its rows on the CPU (faster there than one grouped
  convolution, ``groups = K``, of the networks' channels stacked); on CUDA the grouped one.
- BatchNorm: per network over its N rows. Recomputed statistics (``bn="recompute"``) as torch defines them — one
  training-mode pass over the training split (normalizing with the biased variance, recording the mean and the
  unbiased variance), then evaluation mode: the statistics pass stops at the last BatchNorm layer, and the layers
  it ran on the very same input (the first convolution of the training split) are not run again by the loss pass,
  unless their BatchNorm folds into them (then they run again with the recorded statistics in their weights).
  Frozen statistics (``bn="frozen"``): the module's buffers, one multiply-add. It is not one pass: the loss pass
  normalizes with the unbiased variance, so from the second BatchNorm layer on its inputs differ from the
  statistics pass's (relative 2.5e-7 in the loss of digits_cnn and digits_resnet, measured in float64).
- A 2D convolution of the data and the per-channel layers that alone follow it (BatchNorm, ReLU, pooling) run
  with the K networks' channels stacked, one product for all K (:mod:`.wide_conv`).

The differential check (:mod:`.capture`) compares it with the module's own call in float64 when the problem is built;
a difference, or a forward it cannot run (N and K·N rows mixed), drops it for ``functional_call`` under ``vmap``.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .mlp import hooked
from .operations import CONVS, NORMS
from .wide_conv import (Chained, alias_paths, chains, folds, graph_of, rearrange, same_tensor as _same, shared_conv,
                        stacked_conv, unstack, views)
from .wide_conv import replace as _replace
from .wide_ops import BatchNorm, DataProduct

#: Layer types whose parameters the wide evaluator takes from θ (exactly these types: a subclass may compute
#: something else).
WIDE_LAYERS = (*CONVS, nn.Linear, *NORMS)


#: Activation bytes a chunk of points may produce per layer on the CPU (:meth:`Problem.chunk_size`): measured on
#: digits_cnn, K = 16, one thread, 4 points a call ran 1.2-2x faster than 1 and as fast as 16.
CHUNK_BYTES = 12 << 20
#: The wide evaluator takes a split in blocks of samples whose largest layer holds at most this many bytes a
#: point (no BatchNorm, a named loss: a mean over samples, so the blocks' weighted sum is the loss): glibc serves
#: blocks up to its largest mmap threshold (32 MiB) from the heap again once freed (``keep_freed_memory``), larger
#: ones are mapped anew and faulted in at every call. Measured on the 1M-parameter CNN (``real_cnn``, 5,000
#: images, one thread): 330,016 minor faults and 1.92 CPU s a gradient whole; 0 faults and 1.38 s in blocks of
#: 1,024 samples (1.50 s at 512, 1.57 s at 256).
SAMPLE_BLOCK_BYTES = 32 << 20
#: Largest patches of the data (the first convolution's input, im2col) kept between evaluations.
KEEP_PATCHES = 256 << 20


class _Done(Exception):
    """Raised by the last BatchNorm layer of a statistics pass: nothing after it is needed."""


class WidePlan:
    """The wide copy of a module and the state of one evaluation (see the module's docstring).

    Build with :func:`wide_plan`; evaluate with :meth:`loss`.
    """

    def __init__(self, module: nn.Module, layers: dict[str, nn.Module], grouped_convs: bool | None = None):
        self.module, self.layers = module, layers
        self.norms = [name for name, m in layers.items() if isinstance(m, NORMS)]
        self.copies: dict[tuple, nn.Module] = {}
        #: None: grouped convolutions on CUDA, a call per network on the CPU; True / False force one.
        self.grouped_convs = grouped_convs
        self.k = self.n = 0
        self.params: dict[str, torch.Tensor] = {}
        self.mode = "frozen"  # "frozen", "collect" (statistics pass) or "apply" (recorded statistics)
        self.stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.memo: dict[str, tuple] = {}
        self.buffers: dict[str, torch.Tensor] = {}  # the problem's module's buffers, read at every evaluation
        self.inputs: tuple = ()  # the data of the evaluation under way (its patches are kept)
        #: Convolution or linear layer -> the BatchNorm layer that alone takes its output (found by torch.fx):
        #: outside the statistics pass, the BatchNorm is taken into the layer's weights.
        self.folds: dict[str, str] = {}
        self.folded: dict[str, torch.Tensor] = {}
        self._layers: dict[str, nn.Module] = {}
        self.kept: dict[tuple, tuple] = {}  # patches of the data (:meth:`patches`)
        #: Convolution -> the per-channel layers after it run on stacked channels (:mod:`.wide_conv`); the
        #: stacked values of the chain under way and the names of its layers still to run.
        self.chains: dict[str, list[str]] = {}
        self.stacked, self.chain_left = None, []
        self.channels_last = True  # K·N rows channels last where they come so (not where forward calls view)
        #: Layers run in another order or way (:func:`.wide_conv.rearrange`): activation -> the max pooling run
        #: before it; average pooling of blocks -> the ReLU it took in (or None).
        self.pool_first, self.block_means = {}, {}

    def chained(self, name: str, x: torch.Tensor, run) -> torch.Tensor:
        """``run(x)`` for the layer ``name`` of a chain (:class:`.wide_conv.Chained`): on the chain's stacked values,
        stacked values out (K·N rows after its last layer); on other values the layer as the module runs it."""
        if self.stacked is None or x is not self.stacked:
            return run(x)
        if not self.chain_left or self.chain_left[0] != name:
            raise RuntimeError(f"layer {name} ran out of its chain's order")
        out, self.chain_left = run(x), self.chain_left[1:]
        self.stacked = out if self.chain_left else None
        return out if self.chain_left else unstack(out, self.k, self.channels_last)

    def patches(self, layer: "_Wide", x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """The patches of a 2D convolution ``layer`` of the input ``x`` shared by the K networks, as rows
        [N·H'·W', C·kh·kw] (channels last): made once for each input (each block of samples) and kept, up to
        :data:`KEEP_PATCHES` bytes in all."""
        key = (layer.name, x.data_ptr(), tuple(x.shape), x.stride(), x.dtype, str(x.device))
        kept = self.kept.get(key)
        if kept is not None:
            return kept[1], kept[2]
        s, kernel = layer.settings, layer.kernel_size
        cols = F.unfold(x, kernel, s["dilation"], s["padding"], s["stride"])  # [N, C·kh·kw, L]
        height = (x.shape[2] + 2 * s["padding"][0] - s["dilation"][0] * (kernel[0] - 1) - 1) // s["stride"][0] + 1
        shape = (height, cols.shape[2] // height)
        cols = cols.transpose(1, 2).reshape(-1, cols.shape[1])
        size = cols.numel() * cols.element_size()
        if sum(c.numel() * c.element_size() for _, c, _ in self.kept.values()) + size > KEEP_PATCHES:
            self.kept.clear()  # other data (a subset, another dtype) took the room: start again
        if size <= KEEP_PATCHES:
            self.kept[key] = (x, cols, shape)  # x kept alive with its patches: its address is not reused meanwhile
        return cols, shape

    def layer(self, name: str) -> "_Wide":
        """The wide layer ``name`` of the copy being evaluated."""
        return self._layers[name]

    def _copy(self, device, dtype) -> nn.Module:
        key = (str(device), dtype)
        if key not in self.copies:
            self.copies[key] = copy.deepcopy(self.module).to(device=device, dtype=dtype)
            for m in self.copies[key].modules():
                if isinstance(m, (_Wide, Chained)):
                    m.plan = self
        self._layers = {m.name: m for m in self.copies[key].modules() if isinstance(m, _Wide)}
        return self.copies[key]

    def loss(self, thetas, x, y, loss_fn, *, recompute: bool, stats_x=None):
        """The loss of K networks θ [K, D] on (x [N, ...], y [N, ...]) shared by all, ``loss_fn(out [K, N, ...],
        y [K, N, ...]) -> [K]``; with ``recompute``, BatchNorm statistics of each θ from ``stats_x``."""
        module = self._copy(thetas.device, thetas.dtype)
        with torch.no_grad():  # the problem's buffers now (a state_dict's statistics are copied into them)
            for name, buf in module.named_buffers():
                if name in self.buffers:
                    buf.copy_(self.buffers[name])
        self.k, self.memo, self.stats = thetas.shape[0], {}, {}
        self.inputs = (x,) if stats_x is None else (x, stats_x)
        self.params = self._unflatten(thetas)
        rng = torch.get_rng_state()
        try:
            if recompute:
                self.mode, self.n, self.stacked = "collect", stats_x.shape[0], None
                try:
                    module(stats_x)
                except _Done:
                    pass
                missing = [name for name in self.norms if name not in self.stats]
                if missing:
                    raise RuntimeError(f"BatchNorm layers {missing} did not run on the training data")
                self.mode = "apply"
            else:
                self.mode = "frozen"
            self.n, self.stacked = x.shape[0], None
            out = module(x)
            if not isinstance(out, torch.Tensor) or out.shape[0] != self.k * self.n:
                raise RuntimeError("the module's output is not one tensor of K·N rows")
            if not torch.equal(rng, torch.get_rng_state()):
                raise RuntimeError("forward draws random numbers")
            out = out.reshape(self.k, self.n, *out.shape[1:])
            return loss_fn(out, y.expand(self.k, *y.shape))
        finally:
            self.params, self.memo, self.stats, self.folded, self.inputs = {}, {}, {}, {}, ()
            self.stacked, self.chain_left = None, []

    _unflatten = None  # set by wide_plan: the problem's Layout.unflatten


class _Wide(nn.Module):
    """A layer of K networks (see :class:`WidePlan`): the original layer's settings, no parameters of its own."""

    def __init__(self, name: str, layer: nn.Module):
        super().__init__()
        self.name, self.kind, self.plan = name, type(layer), None
        self.settings = {k: getattr(layer, k) for k in ("stride", "padding", "dilation", "groups", "eps")
                         if hasattr(layer, k)}
        self.kernel_size = getattr(layer, "kernel_size", None)
        self.has_bias = getattr(layer, "bias", None) is not None
        self.affine = getattr(layer, "weight", None) is not None
        if isinstance(layer, NORMS):
            self.register_buffer("running_mean", layer.running_mean.detach().clone())
            self.register_buffer("running_var", layer.running_var.detach().clone())

    def forward(self, x):
        plan = self.plan
        weight, bias = plan.params.get(f"{self.name}.weight"), plan.params.get(f"{self.name}.bias")
        if self.kind in NORMS:
            return plan.chained(self.name, x, lambda v: v if plan.folded.get(self.name) is v else
                                self._norm(v, weight, bias, stacked=v is plan.stacked))
        k, n = plan.k, plan.n
        shared = x.shape[0] == n and (k == 1 or x.shape[0] != k * n)
        # a stacked layer whose BatchNorm is taken into its weights runs again with them (one product instead of the
        # normalization of its output and that normalization's gradient; per network, K = 1, the product is slower)
        again = plan.mode != "collect" and self.name in plan.folds and self.name in plan.chains and k > 1
        memo = plan.memo.get(self.name) if shared and not again else None
        if memo is not None and _same(memo[0], x) and memo[1]._version == memo[3]:  # the statistics pass ran it
            return self._stack(memo[1], memo[2])  # on this input, and nothing changed its output in place since
        if x.shape[0] != k * n and not shared:
            raise RuntimeError(f"layer {self.name} got {x.shape[0]} rows, expected {n} or {k * n}")
        fold = plan.folds.get(self.name) if plan.mode != "collect" else None
        if fold is not None:  # the BatchNorm layer after it, one multiply-add, taken into its weights
            weight, bias = plan.layer(fold).folded(weight, bias)
        out, stacked = self._shared(x, weight, bias) if shared else (self._each(x, weight, bias), False)
        if fold is not None:
            plan.folded[fold] = out
        elif shared:
            plan.memo[self.name] = (x, out, stacked, out._version)
        return self._stack(out, stacked)

    def _stack(self, out, stacked):
        """``out``; stacked values (:mod:`.wide_conv`) start this layer's chain."""
        if stacked:
            self.plan.stacked, self.plan.chain_left = out, list(self.plan.chains[self.name])
        return out

    def folded(self, weight, bias):
        """This BatchNorm layer (frozen or recorded statistics) taken into the weights and bias of the layer before."""
        plan = self.plan
        mean, var = self._statistics()
        scale = torch.rsqrt(var + self.settings["eps"])
        w, b = plan.params.get(f"{self.name}.weight"), plan.params.get(f"{self.name}.bias")
        if w is not None:
            scale = scale * w
        shift = -mean * scale if b is None else b - mean * scale
        if bias is not None:
            shift = shift + bias * scale
        return weight * scale.reshape(*scale.shape, *[1] * (weight.dim() - 2)), shift

    def _statistics(self):
        plan = self.plan
        if plan.mode == "apply":
            return plan.stats[self.name]
        return self.running_mean.expand(plan.k, -1), self.running_var.expand(plan.k, -1)

    def _each(self, x, weight, bias):
        """The K networks' layer on their own rows (K·N)."""
        plan = self.plan
        k, n = plan.k, plan.n
        if self.kind is nn.Linear:
            xs = x.reshape(k, -1, x.shape[-1])
            out = torch.bmm(xs, weight.transpose(1, 2)) if bias is None else \
                torch.baddbmm(bias.unsqueeze(1), xs, weight.transpose(1, 2))
            return out.reshape(*x.shape[:-1], weight.shape[1])
        conv, s = CONVS[self.kind], self.settings
        grouped = plan.grouped_convs if plan.grouped_convs is not None else x.is_cuda
        if grouped and k > 1:
            xs = x.reshape(k, n, *x.shape[1:]).transpose(0, 1).reshape(n, k * x.shape[1], *x.shape[2:])
            out = conv(xs, weight.reshape(-1, *weight.shape[2:]), None if bias is None else bias.reshape(-1),
                       s["stride"], s["padding"], s["dilation"], s["groups"] * k)
            return out.reshape(n, k, -1, *out.shape[2:]).transpose(0, 1).reshape(k * n, -1, *out.shape[2:])
        # split: its backward is one concatenation (slices would each make a zero gradient of all K·N rows)
        return torch.cat([conv(part, weight[i], None if bias is None else bias[i], s["stride"], s["padding"],
                               s["dilation"], s["groups"]) for i, part in enumerate(x.split(n))])

    def _shared(self, x, weight, bias):
        """The K networks' layer on one input shared by all (N rows): one call with K times the outputs; and whether
        they are stacked values [N, K·C, ...] (a convolution of the data followed by a chain: :mod:`.wide_conv`)."""
        k, n = self.plan.k, x.shape[0]
        if self.kind is nn.Linear:
            out = F.linear(x, weight.reshape(-1, weight.shape[2]), None if bias is None else bias.reshape(-1))
            out = out.reshape(*x.shape[:-1], k, weight.shape[1]).movedim(-2, 0)
            return out.reshape(k * n, *out.shape[2:]), False
        s = self.settings
        # the data's patches (kept) times the K networks' weights
        if self.kind is nn.Conv2d and s["groups"] == 1 and not isinstance(s["padding"], str) \
                and any(_same(x, data) for data in self.plan.inputs):
            cols, size = self.plan.patches(self, x)  # [N·H'·W', C·kh·kw], (H', W')
            if self.name in self.plan.chains and k > 1:  # one network: its rows are its stacked values
                return stacked_conv(cols, size, weight, bias), True
            out = DataProduct.apply(cols, weight.reshape(k, weight.shape[1], -1).transpose(1, 2), bias)
            out = out.reshape(k * n, *size, -1).movedim(-1, 1)  # [K, N·H'·W', C'] as K·N rows, channels last
            return out if self.plan.channels_last else out.contiguous(), False
        out = shared_conv(CONVS[self.kind], x, weight, bias, s)  # [N, K, C', ...]
        return out.transpose(0, 1).reshape(k * n, *out.shape[2:]), False

    def _norm(self, x, weight, bias, stacked=False):
        plan = self.plan
        k, n, c = plan.k, plan.n, x.shape[1] // (plan.k if stacked else 1)
        if x.shape[0] != (n if stacked else k * n):
            raise RuntimeError(f"BatchNorm layer {self.name} got {x.shape[0]} rows, expected {k * n}")
        last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        # per network, positions × channels: [K, N·H·W, C] (channels last) or [K, N, C, H·W]; stacked: [N·H·W, K, C]
        if stacked:
            v, dims, shape = x.permute(0, 2, 3, 1).reshape(-1, k, c), (0,), (1, k, c)
        else:
            v = x.permute(0, 2, 3, 1).reshape(k, -1, c) if last else x.reshape(k, n, c, -1)
            dims, shape = ((1,), (k, 1, c)) if last else ((1, 3), (k, 1, c, 1))
        eps = self.settings["eps"]
        if plan.mode == "collect":  # batch statistics, their gradient written out (:class:`.wide_ops.BatchNorm`)
            count = v.numel() // (k * c)
            last_layer = self.name not in plan.stats and len(plan.stats) + 1 == len(plan.norms)
            out, mean, var = BatchNorm.apply(v, weight, bias, dims, shape, eps, not last_layer)
            plan.stats[self.name] = (mean, var * count / max(count - 1, 1))
            if last_layer:  # nothing after it is needed
                raise _Done
        else:
            mean, var = self._statistics()
            scale = torch.rsqrt(var + eps)
            if self.affine:
                scale = scale * weight
            shift = -mean * scale if bias is None else bias - mean * scale
            out = torch.addcmul(shift.reshape(shape), v, scale.reshape(shape))
        if stacked:
            out = out.reshape(n, *x.shape[2:], k * c).movedim(-1, 1)
        else:
            out = out.reshape(k * n, *x.shape[2:], c).movedim(-1, 1) if last else out.reshape(x.shape)
        return out


def wide_plan(module: nn.Module, layout) -> tuple[WidePlan | None, str | None]:
    """The wide evaluator of ``module`` (see the module's docstring), or None and the reason it does not apply."""
    names = set(layout.names)
    layers, owned = {}, set()
    for name, m in module.named_modules():
        if hooked(m):
            return None, f"a forward hook on {name or 'the module'}"
        direct = [p for p, _ in m.named_parameters(recurse=False)]
        if type(m) in WIDE_LAYERS:
            if isinstance(m, tuple(CONVS)) and m.padding_mode != "zeros":
                return None, f"{name} pads with {m.padding_mode!r}"
            if isinstance(m, NORMS) and m.running_mean is None:
                return None, f"{name} keeps no running statistics"
            full = [f"{name}.{p}" for p in direct]
            if not all(p in names for p in full):
                return None, f"{name} shares a parameter with another layer"
            layers[name] = m
            owned.update(full)
        elif direct:
            return None, f"{name or 'the module'} ({type(m).__name__}) holds parameters of its own"
    if not layers or owned != names:
        return None, "parameters outside convolutions, linear and BatchNorm layers"
    if "" in layers:
        return None, "the module is a single layer"
    aliases = alias_paths(module, layers)  # a layer at two places (weights shared): each place runs the wide layer
    if any(isinstance(layers[name], NORMS) for name in aliases.values()):
        return None, f"a BatchNorm layer is reached by two names ({', '.join(aliases)})"
    graph = graph_of(module)
    linked = chains(graph, module, layers)
    wide = copy.deepcopy(module)
    for name, m in layers.items():
        _replace(wide, name, _Wide(name, m))
    for path, name in aliases.items():
        _replace(wide, path, wide.get_submodule(name))
    swapped, means = rearrange(wide, graph, module)
    for name in {n for chain in linked.values() for n in chain} - set(layers):
        _replace(wide, name, Chained(name, wide.get_submodule(name)))
    plan = WidePlan(wide, layers)
    plan._unflatten, plan.buffers = layout.unflatten, dict(module.named_buffers())
    plan.folds, plan.chains, plan.pool_first, plan.block_means = folds(graph, layers), linked, swapped, means
    plan.channels_last = not views(graph)
    return plan, None


def sample_blocks(problem, split: str, batch) -> list | None:
    """``(rows, weight)`` of the blocks of samples the wide evaluator takes ``split`` in (see
    :data:`SAMPLE_BLOCK_BYTES`), or None: the split whole, or the problem's own :attr:`sample_chunk`."""
    if problem._wide is None or batch is not None or problem.sample_chunk is not None or problem._bn_layers \
            or not isinstance(problem._loss_ref, str) or not problem._splits:
        return None
    n, rows = problem.n_samples(split), max(1, SAMPLE_BLOCK_BYTES // (4 * problem._act_numel))
    if rows >= n:
        return None
    return [(slice(a, min(n, a + rows)), (min(n, a + rows) - a) / n) for a in range(0, n, rows)]


def wide_loss(problem, thetas: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
    """The loss of a chunk of K points by ``problem._wide`` (:meth:`NetworkProblem._evaluate`'s data: x [K, N, ...]),
    or None where it does not apply: data differing between points (a minibatch per point), or a forward it cannot
    run, which drops it for good with a note in ``problem.capture``."""
    plan = problem._wide
    if plan is None or not (x.shape[0] == 1 or x.stride(0) == 0):
        return None
    recompute = problem.bn == "recompute"
    stats_x = problem._device_data("train", thetas.device, thetas.dtype)[0] if recompute else None
    try:
        return plan.loss(thetas, x[0], y[0], problem._batched_loss, recompute=recompute, stats_x=stats_x)
    except (RuntimeError, ValueError, TypeError, IndexError, AttributeError, KeyError) as err:
        if plan.channels_last and "view size is not compatible" in str(err):  # a view fx did not see: rows contiguous
            plan.channels_last = False
            return wide_loss(problem, thetas, x, y)
        problem._wide = None
        first = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        problem.capture.setdefault("notes", []).append(
            f"the wide evaluator cannot run the module ({first}); functional_call runs instead")
        return None
