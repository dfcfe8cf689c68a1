"""Plain MLPs: built by :func:`mlp`, recognised in any ``nn.Sequential`` by :func:`mlp_plan`, and run K
networks at a time: :func:`mlp_loss_and_grad` (loss and gradient written out by hand, feature-major; the
fast path of :class:`~landscape.problems.NetworkProblem`), :func:`mlp_forward` (one ``baddbmm`` a layer, what
autograd differentiates for other losses and for Hessian-vector products), :func:`mlp_loss_on_plane`; and the
network that :mod:`.bounds` can bound.
"""

from __future__ import annotations

import torch
from torch import nn

from .._registry import Registry
from . import bounds
from .losses import LOSS_GRADS


class Square(nn.Module):
    """The quadratic activation σ(z) = z² (Venturi et al. 2019; Du & Lee 2018)."""

    def forward(self, x):
        return x * x


#: Activations of :func:`mlp` by name (module classes).
ACTIVATIONS = Registry("activation", {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "quadratic": Square,
                                      "linear": nn.Identity})


#: The function each activation module applies, as the hand-batched evaluator calls it (None: nothing).
FUNCTIONS = {nn.ReLU: torch.relu, nn.Sigmoid: torch.sigmoid, nn.Tanh: torch.tanh, Square: bounds.square,
             nn.Identity: None}


def mlp(sizes, activation: str = "relu", bias: bool = True) -> nn.Sequential:
    """``nn.Sequential`` of Linear layers of the given sizes with an activation between them."""
    act = ACTIVATIONS.lookup(activation)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b, bias=bias))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


def mlp_plan(module: nn.Module):
    """``[(weight_name, bias_name or None, [activations])]`` if ``module`` computes a plain MLP, else None.

    What ``forward`` computes, not what the children list: an ``nn.Sequential`` of exactly that type (a
    subclass may have its own ``forward``) run over every entry in order, a module used twice counted twice
    (``act = nn.ReLU(); nn.Sequential(l1, act, l2, act, l3)``: ``named_children()`` would list ``act`` once);
    layers of exactly the types ``nn.Linear`` and :data:`FUNCTIONS` (a subclass of ``nn.Linear`` may scale its
    output); parameter names as the flat layout has them (the first name of a shared parameter). Refused
    (None): hooks anywhere (``functional_call`` runs them, this evaluator would not), a parameter used by two
    layers (tied weights: the gradient written out by hand would keep one of its two terms), anything else.
    """
    if type(module) is not nn.Sequential or len(module) == 0 or hooked(module):
        return None
    names = {id(p): name for name, p in module.named_parameters()}
    plan, used = [], set()
    for layer in module:  # every entry, in the order forward runs them (a repeated module included)
        kind = type(layer)
        if hooked(layer):
            return None
        if kind is nn.Linear:
            w = names.get(id(layer.weight))
            b = None if layer.bias is None else names.get(id(layer.bias))
            if w is None or (layer.bias is not None and b is None) or {w, b} & used:
                return None
            used |= {w, b} - {None}
            plan.append((w, b, []))
        elif kind in FUNCTIONS and plan:
            act = FUNCTIONS[kind]
            if act is not None:
                plan[-1][2].append(act)
        else:
            return None
    return plan


def hooked(module: nn.Module) -> bool:
    """Whether ``module`` (itself, not its children) has forward hooks or a ``forward`` set on it or on its torch
    class (the layer's type then no longer says what it computes), or any module has global hooks."""
    from torch.nn.modules import module as base

    return bool(module._forward_hooks or module._forward_pre_hooks or base._global_forward_hooks
                or base._global_forward_pre_hooks or "forward" in vars(module) or _patched(type(module)))


def _patched(cls: type) -> bool:
    """Whether a torch layer class's ``forward`` is not the one torch defines for it (``nn.ReLU.forward = ...``
    assigned by a user's code, or another class's forward): the first class of the MRO that defines ``forward``
    must hold a function of its own, from torch."""
    if not cls.__module__.startswith("torch."):
        return False
    for klass in cls.__mro__:
        if "forward" in vars(klass):
            f = vars(klass)["forward"]
            return not (getattr(f, "__module__", "").startswith("torch.")
                        and getattr(f, "__qualname__", "") in (f"{klass.__qualname__}.forward", "_forward_unimplemented"))
    return False


#: Networks whose layers are all at most this wide run feature-major (units × samples): their products are
#: then a few long rows per unit rather than many rows of a few numbers, ~8× faster on a CPU for width 4.
NARROW = 16


def mlp_forward(plan, params, x):
    """K MLPs on inputs ``x[k, N, in]``: one ``baddbmm`` per layer. Returns ``[k, N, out]``.

    A chunk of one network runs as plain ``addmm`` (measured ~10% faster than a batch-of-one bmm).
    Narrow networks (every layer ≤ :data:`NARROW` units) carry their activations as ``[k, units, N]``.
    """
    if plan and max(max(params[w].shape[-2:]) for w, _, _ in plan) <= NARROW:
        return _feature_major(plan, params, x)
    if x.shape[0] == 1:
        h = x[0]
        for wname, bname, acts in plan:
            w = params[wname][0].T
            h = h @ w if bname is None else torch.addmm(params[bname][0], h, w)
            for act in acts:
                h = act(h)
        return h.unsqueeze(0)
    h = x
    for wname, bname, acts in plan:
        w = params[wname].transpose(1, 2)
        h = torch.bmm(h, w) if bname is None else torch.baddbmm(params[bname].unsqueeze(1), h, w)
        for act in acts:
            h = act(h)
    return h


def _feature_major(plan, params, x):
    h = x.transpose(1, 2)  # [k, in, N]
    for wname, bname, acts in plan:
        w = params[wname]  # [k, out, in]
        h = torch.bmm(w, h) if bname is None else torch.baddbmm(params[bname].unsqueeze(2), w, h)
        for act in acts:
            h = act(h)
    return h.transpose(1, 2)


def mlp_loss_on_plane(plan, layout, loss, x, y, origin, directions, coords, size: int, decay=None):
    """Losses at ``origin + coords @ directions`` (K points of a plane), ``size`` points a chunk.

    The first layer is affine in the parameters along the family: W(c)·xᵀ + b(c) = H_0 + Σ_j c_j H_j,
    with H_0 and each H_j computed once for all K points; a point's first layer then costs k + 1
    scaled additions instead of a matrix product. The other layers run feature-major by hand
    (:func:`mlp_loss_and_grad`) when ``loss`` is the name of a loss in :data:`LOSS_GRADS`, else batched
    through :func:`mlp_forward` and ``loss`` (a batched loss function).
    ``decay``: (weight decay, mask of the decayed parameters), or None.
    """
    (w0, b0, acts0), rest = plan[0], plan[1:]
    basis = layout.unflatten(torch.cat([origin[None], directions]))  # [1 + k, ...]
    hand = isinstance(loss, str)
    # narrow networks run feature-major (see mlp_forward), and so does the hand-written forward
    feature = hand or (bool(rest) and max(max(layout.shapes[layout.names.index(w)]) for w, _, _ in rest) <= NARROW)
    if feature:
        h_basis = torch.matmul(basis[w0], x.T)  # [1 + k, h1, N]
        if b0 is not None:
            h_basis = h_basis + basis[b0].unsqueeze(2)
    else:
        h_basis = torch.matmul(x, basis[w0].transpose(1, 2))  # [1 + k, N, h1]
        if b0 is not None:
            h_basis = h_basis + basis[b0].unsqueeze(1)
    flat_basis = h_basis.reshape(h_basis.shape[0], -1)
    out = []
    for start in range(0, coords.shape[0], size):
        c = coords[start:start + size]
        m = c.shape[0]
        h = (torch.cat([c.new_ones(m, 1), c], 1) @ flat_basis).view(m, *h_basis.shape[1:])
        thetas = origin + c @ directions
        if hand:
            value = mlp_loss_and_grad(plan, layout, loss, thetas, x.expand(m, *x.shape), y.expand(m, *y.shape),
                                      grad=False, first=h)[0]
        else:
            for act in acts0:
                h = act(h)
            h = h.transpose(1, 2) if feature else h  # [m, N, h1], a view of the feature-major values
            value = loss(mlp_forward(rest, layout.unflatten(thetas), h), y.expand(m, *y.shape))
        if decay is not None:
            value = value + 0.5 * decay[0] * thetas[:, decay[1]].pow(2).sum(-1)
        out.append(value)
    return torch.cat(out)


# ---------------------------------------------------------------- loss and gradient by hand
# Autograd through the batched forward pays for what it does not need here: the views that unflatten θ, a
# zero-filled gradient per parameter, the bias broadcast, sample-major copies. An MLP's backward pass is
# three products a layer, so it is written out: every layer runs feature-major ([k, units, N]: the
# samples are the long axis of every product and every elementwise pass), the first layer of K networks
# that share their inputs is one matrix product [k·h₁, in] × [in, N] (and its weight gradient one more),
# and the gradient is written once into the [k, D] result.

def _relu_grad(g, h):
    return torch.ops.aten.threshold_backward(g, h, 0)  # one pass; masked_fill_ with a mask is ~20× slower


def _sigmoid_grad(g, h):
    return torch.ops.aten.sigmoid_backward(g, h)  # g·h·(1 − h) in one pass, from the output


def _tanh_grad(g, h):
    return torch.ops.aten.tanh_backward(g, h)  # g·(1 − h²)


def _square_grad(g, z):
    return g.mul_(2 * z)


def _apply(act, z, inplace: bool):
    """``act(z)``, in place when allowed (and possible)."""
    if not inplace or act is bounds.square:
        return act(z)
    return z.clamp_min_(0) if act is torch.relu else getattr(z, act.__name__ + "_")()  # sigmoid_, tanh_


#: Per activation: (derivative(grad, saved) applied in place where it can be, what it needs: "input" or "output").
_BACKWARD = {torch.relu: (_relu_grad, "output"), torch.sigmoid: (_sigmoid_grad, "output"),
             torch.tanh: (_tanh_grad, "output"), bounds.square: (_square_grad, "input")}


def by_hand(plan, loss_name: str) -> bool:
    """Whether :func:`mlp_loss_and_grad` computes this MLP's loss and gradient (its activations and loss)."""
    return loss_name in LOSS_GRADS and all(act in _BACKWARD for _, _, acts in plan for act in acts)


def mlp_loss_and_grad(plan, layout, loss_name: str, thetas, x, y, grad: bool = True, first=None):
    """Loss and gradient of K MLPs with parameters ``thetas[k, D]`` on inputs ``x[k, N, in]``, targets ``y[k, N, ...]``.

    The same values as autograd through :func:`mlp_forward` and the loss of :data:`LOSS_GRADS` (to rounding),
    computed by the backward pass written out (see the comment above). Inputs whose leading axis is a
    broadcast (``expand``) are shared by the K networks. Builds no autograd graph.

    Returns ``(loss [k], grad [k, D])``; with ``grad=False``, ``(loss, None)`` from the forward pass alone.
    ``first``: the first layer's output before its activation, feature-major [k, h₁, N], when the caller has
    it (a plane: :func:`mlp_loss_on_plane`); only with ``grad=False``.
    """
    k, n = thetas.shape[0], x.shape[1]
    params = layout.unflatten(thetas)
    x0 = x[0] if k == 1 or x.stride(0) == 0 else None  # shared inputs: the K first layers are one product
    inputs, kept = [], []  # per layer: its input (None: the shared x0), and what each activation keeps
    h = x.transpose(1, 2) if x0 is None else None  # [k, in, N]
    for i, (wname, bname, acts) in enumerate(plan):
        w, b = params[wname], params[bname] if bname is not None else None
        if i == 0 and first is not None:
            z = first
        elif i == 0 and x0 is not None:
            flat = w.reshape(-1, w.shape[2])  # [k·out, in]
            z = (flat @ x0.T if b is None else torch.addmm(b.reshape(-1, 1), flat, x0.T)).view(k, -1, n)
        else:
            z = torch.bmm(w, h) if b is None else torch.baddbmm(b.unsqueeze(2), w, h)
        inputs.append(h if grad else None)
        saves = []
        for j, act in enumerate(acts):
            what = _BACKWARD[act][1]
            if grad and what == "input":
                saves.append(z)
            # in place, except over a value an earlier activation of this layer keeps for the backward pass
            z = _apply(act, z, inplace=not (grad and j > 0))
            if grad and what == "output":
                saves.append(z)
        kept.append(saves)
        h = z
    target = y.long() if loss_name == "cross_entropy" else y.reshape(k, n, -1).transpose(1, 2).to(h.dtype)
    loss, g = LOSS_GRADS[loss_name](h, target, grad)
    if not grad:
        return loss, None
    grads = {}
    for i in reversed(range(len(plan))):
        wname, bname, acts = plan[i]
        for act, saved in zip(reversed(acts), reversed(kept[i])):
            g = _BACKWARD[act][0](g, saved)
        if bname is not None:
            grads[bname] = g.sum(2)
        h = inputs[i]
        grads[wname] = (g.reshape(-1, n) @ x0).view(k, g.shape[1], -1) if h is None else torch.bmm(g, h.transpose(1, 2))
        if i > 0:
            g = torch.bmm(params[wname].transpose(1, 2), g)
    grad = thetas.new_empty(thetas.shape)
    for name, view in layout.unflatten(grad).items():
        view.copy_(grads[name])
    return loss, grad
