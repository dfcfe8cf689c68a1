"""The wide evaluator's first layers in the stacked layout (:mod:`.grouped`): a 2D convolution of the data shared
by the K networks, and the chain of per-channel layers that alone follow it, run with the K networks' channels
stacked — values [N, K·C, H, W], channels last in memory — and turned into K·N rows once, after the chain.

The K·N-row layout needs one product per network for such a convolution (the data's patches [N·H·W, F] times
[F, C], thin and slow) and runs the layers after it on images of C channels; stacked, the convolution is one
product [N·H·W, F] × [F, K·C] and ReLU, pooling and BatchNorm run on K·C channels. Only layers that act on each
channel of each sample alone are taken into a chain (:data:`PER_CHANNEL`, and BatchNorm: its statistics are per
channel), called as the module calls them (:class:`Chained`): the same function, element by element.
Measured on digits_cnn (one thread, K = 16, loss and gradient): see ``docs/benchmarks.md`` (bench-conv).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .operations import NORMS
from .wide_ops import BlockMean, ReluOfInput, StackedProduct, Unstack

#: Layers run on the stacked channels as they are: each acts on every channel of every sample alone.
PER_CHANNEL = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Identity,
               nn.MaxPool2d, nn.AvgPool2d)


def graph_of(module: nn.Module):
    """The ``torch.fx`` graph of ``module``, or None where it does not trace (control flow on values)."""
    try:
        return torch.fx.symbolic_trace(module).graph
    except Exception:  # noqa: BLE001 - a forward fx cannot trace: nothing fused, the same function
        return None


def folds(graph, layers: dict[str, nn.Module]) -> dict[str, str]:
    """Convolution or linear layer -> the BatchNorm layer that is the only user of its output."""
    found, calls = {}, {} if graph is None else _calls(graph)
    for node in [] if graph is None else graph.nodes:
        user = _only_user(node)
        if node.op != "call_module" or node.target not in layers or isinstance(layers[node.target], NORMS) \
                or user is None or calls[node.target] != 1:  # a layer called twice: one call may feed its BatchNorm
            continue
        if user.op == "call_module" and isinstance(layers.get(user.target), NORMS) and user.args == (node,) \
                and calls[user.target] == 1 \
                and not user.kwargs and layers[user.target].num_features == getattr(
                    layers[node.target], "out_channels", getattr(layers[node.target], "out_features", None)):
            found[node.target] = user.target
    return found


def chains(graph, module: nn.Module, layers: dict[str, nn.Module]) -> dict[str, list[str]]:
    """2D convolution (groups 1, numeric padding) -> the names of the per-channel layers (BatchNorm2d, or
    :data:`PER_CHANNEL`) that follow it one after the other, each the only user of the one before, each called
    once in the forward."""
    if graph is None:
        return {}
    calls = _calls(graph)
    found = {}
    for node in graph.nodes:
        conv = layers.get(node.target) if node.op == "call_module" else None
        if type(conv) is not nn.Conv2d or conv.groups != 1 or isinstance(conv.padding, str) \
                or calls[node.target] != 1:
            continue
        chain, here = [], node
        while True:
            user = _only_user(here)
            if user is None or user.op != "call_module" or user.args != (here,) or user.kwargs \
                    or calls.get(user.target) != 1:
                break
            m = module.get_submodule(user.target)
            if not (type(m) in PER_CHANNEL or type(m) is nn.BatchNorm2d and user.target in layers) \
                    or getattr(m, "return_indices", False):  # a pooling that returns its indices: a pair
                break
            chain.append(user.target)
            here = user
        if chain:
            found[node.target] = chain
    return found


#: Activations that commute with max pooling exactly, gradient included: max(f(a), f(b)) = f(max(a, b)) for a
#: nondecreasing f, and where f flattens ties (ReLU below 0, ReLU6/Hardtanh at their ends) its gradient is 0 there, so
#: which tied input the pooling picks does not matter. Not LeakyReLU: rounding its products can tie two inputs that
#: differ, and then the gradient goes to another one.
POOL_COMMUTES = (nn.ReLU, nn.ReLU6, nn.Hardtanh)
MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)


def pool_first(graph, module: nn.Module) -> dict[str, str]:
    """Activation layer -> the max pooling layer that alone takes its output, to be run in the other order (the
    activation on the pooled values: a quarter of the elements for 2×2 pooling, forward and backward; the same
    values and gradient, :data:`POOL_COMMUTES`). Each called once in the forward, the activation the only user of its
    input (an in-place one changes it)."""
    if graph is None:
        return {}
    calls = _calls(graph)
    found = {}
    for node in graph.nodes:
        if node.op != "call_module" or calls[node.target] != 1 or node.kwargs or len(node.args) != 1 \
                or type(module.get_submodule(node.target)) not in POOL_COMMUTES:
            continue
        source, user = node.args[0], _only_user(node)
        if not isinstance(source, torch.fx.Node) or _only_user(source) is not node or user is None \
                or user.op != "call_module" or user.args != (node,) or user.kwargs or calls[user.target] != 1:
            continue
        pool = module.get_submodule(user.target)
        if type(pool) in MAX_POOLS and not pool.return_indices:
            found[node.target] = user.target
    return found


class PoolThenActivation(nn.Module):
    """A max pooling layer followed by the activation that preceded it in the module (:func:`pool_first`), out of
    place, its gradient reading its input: the module may change the pooling's output in place (legal there: max
    pooling's gradient does not read its output)."""

    def __init__(self, pool: nn.Module, activation: nn.Module):
        super().__init__()
        self.pool, self.activation = pool, activation

    def forward(self, x):
        x, act = self.pool(x), self.activation
        if type(act) is nn.ReLU:
            return ReluOfInput.apply(x)
        return F.hardtanh(x, act.min_val, act.max_val)  # ReLU6 and Hardtanh: their gradient reads the input


def block_means(graph, module: nn.Module) -> dict[str, str | None]:
    """Average pooling layer over blocks that tile its input (kernel = stride, no padding, no divisor, no ceil mode)
    -> the ReLU layer that alone feeds it, taken into it, or None (:class:`BlockMeanPool`). Each called once, the ReLU
    the only user of its input (an in-place one changes it)."""
    if graph is None:
        return {}
    calls = _calls(graph)
    found = {}
    for node in graph.nodes:
        pool = module.get_submodule(node.target) if node.op == "call_module" else None
        if type(pool) is not nn.AvgPool2d or calls[node.target] != 1 or node.kwargs or len(node.args) != 1 \
                or pool.padding not in (0, (0, 0)) or pool.ceil_mode or pool.divisor_override is not None \
                or _pair(pool.stride or pool.kernel_size) != _pair(pool.kernel_size):
            continue
        act = node.args[0]
        fused = isinstance(act, torch.fx.Node) and act.op == "call_module" and calls[act.target] == 1 \
            and type(module.get_submodule(act.target)) is nn.ReLU and len(act.args) == 1 and not act.kwargs \
            and _only_user(act) is node and isinstance(act.args[0], torch.fx.Node) and _only_user(act.args[0]) is act
        found[node.target] = act.target if fused else None
    return found


class BlockMeanPool(nn.Module):
    """An average pooling layer of :func:`block_means` (after its ReLU, if it took one in) by
    :class:`.wide_ops.BlockMean` where the input's sizes are multiples of the kernel, else as the module runs it."""

    def __init__(self, pool: nn.AvgPool2d, relu: bool):
        super().__init__()
        self.pool, self.relu, self.kernel = pool, relu, _pair(pool.kernel_size)

    def forward(self, x):
        if x.dim() == 4 and x.shape[2] % self.kernel[0] == 0 and x.shape[3] % self.kernel[1] == 0:
            return BlockMean.apply(x, self.kernel, self.relu)
        return self.pool(torch.relu(x) if self.relu else x)


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _calls(graph) -> dict[str, int]:
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    return calls


def rearrange(wide: nn.Module, graph, module: nn.Module) -> tuple[dict, dict]:
    """In the wide copy ``wide`` of ``module``: max pooling before the activation that feeds it (:func:`pool_first`),
    average pooling of blocks with its ReLU taken in (:func:`block_means`). Returns both maps."""
    swapped = pool_first(graph, module)
    for act, pool in swapped.items():  # max pooling before ReLU: the same values, fewer of them
        replace(wide, pool, PoolThenActivation(wide.get_submodule(pool), wide.get_submodule(act)))
        replace(wide, act, nn.Identity())
    means = block_means(graph, module)
    for pool, relu in means.items():  # average pooling of blocks (and its ReLU): its gradient in one pass
        replace(wide, pool, BlockMeanPool(wide.get_submodule(pool), relu is not None))
        if relu is not None:
            replace(wide, relu, nn.Identity())
    return swapped, means


def alias_paths(module: nn.Module, layers: dict[str, nn.Module]) -> dict[str, str]:
    """The other names by which a layer of ``layers`` is reached (one module at two places): path -> its name."""
    name_of = {id(m): n for n, m in layers.items()}
    return {path: name_of[id(m)] for path, m in module.named_modules(remove_duplicate=False)
            if id(m) in name_of and path != name_of[id(m)]}


def same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a`` and ``b`` are the same values in memory (the same data, shape, strides, dtype and device)."""
    return a is b or (a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()
                      and a.dtype == b.dtype and a.device == b.device)


def replace(module: nn.Module, name: str, layer: nn.Module) -> None:
    """Put ``layer`` in place of ``module``'s submodule ``name``."""
    parent, _, child = name.rpartition(".")
    setattr(module.get_submodule(parent), child, layer)


def _only_user(node):
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def stacked_conv(cols: torch.Tensor, size: tuple[int, int], weight: torch.Tensor, bias) -> torch.Tensor:
    """The K networks' convolution of the shared data from its patches ``cols`` [N·H'·W', F] (made by
    :meth:`.grouped.WidePlan.patches`), ``weight`` [K, C', ...], ``bias`` [K, C'] or None: [N, K·C', H', W'],
    channels last (one product for all K)."""
    k, c = weight.shape[:2]
    w = weight.reshape(k * c, -1).t()  # [F, K·C']
    out = StackedProduct.apply(cols, w, None if bias is None else bias.reshape(-1))
    return out.reshape(-1, *size, k * c).permute(0, 3, 1, 2)


def shared_conv(conv, x: torch.Tensor, weight: torch.Tensor, bias, settings: dict) -> torch.Tensor:
    """The K networks' convolution (``weight`` [K, C', C/g, ...], ``bias`` [K, C'] or None) of an input ``x`` [N, C, ...]
    they share, one call: [N, K, C', ...]. With g groups the output channels are ordered (group, network, unit), so
    that each group of the call holds one group of every network, and put back per network after."""
    k, c, g = weight.shape[0], weight.shape[1], settings["groups"]
    w = weight.reshape(k, g, c // g, *weight.shape[2:]).transpose(0, 1).reshape(k * c, *weight.shape[2:])
    b = None if bias is None else bias.reshape(k, g, c // g).transpose(0, 1).reshape(-1)
    out = conv(x, w, b, settings["stride"], settings["padding"], settings["dilation"], g)
    out = out.reshape(x.shape[0], g, k, c // g, *out.shape[2:]).transpose(1, 2)
    return out.reshape(x.shape[0], k, c, *out.shape[4:])


def unstack(x: torch.Tensor, k: int, rows_last: bool = True) -> torch.Tensor:
    """Stacked values [N, K·C, ...] as K·N rows [K·N, C, ...]: channels last where the stacked values are and
    ``rows_last``, else contiguous."""
    return Unstack.apply(x, k, rows_last)


def views(graph) -> bool:
    """Whether the forward calls ``Tensor.view`` (``x.view(x.size(0), -1)``) on anything but its input, which needs
    contiguous values: the wide evaluator then keeps K·N rows channels first."""
    return graph is not None and any(node.op == "call_method" and node.target == "view" and not (
        isinstance(node.args[0], torch.fx.Node) and node.args[0].op == "placeholder") for node in graph.nodes)


class Chained(nn.Module):
    """A per-channel layer of a chain (:func:`chains`) in the wide copy: on the stacked values of the chain under way
    it runs the layer on them as they are (and turns them into K·N rows if it is the chain's last); on anything else
    it runs the layer as the module would."""

    def __init__(self, name: str, layer: nn.Module):
        super().__init__()
        self.name, self.layer, self.plan = name, layer, None

    def forward(self, x):
        return self.plan.chained(self.name, x, self.layer)
