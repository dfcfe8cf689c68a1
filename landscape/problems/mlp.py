"""Plain MLPs: built by :func:`mlp`, recognised in any ``nn.Sequential`` by :func:`mlp_plan`, and run K
networks at a time by :func:`mlp_forward` (one ``baddbmm`` a layer), the fast path of
:class:`~landscape.problems.NetworkProblem` and the network that :mod:`.bounds` can bound.
"""

from __future__ import annotations

import torch
from torch import nn

from .._registry import Registry
from . import bounds


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
    """``[(weight_name, bias_name or None, [activations])]`` if ``module`` is a plain MLP, else None."""
    if not isinstance(module, nn.Sequential) or len(module) == 0:
        return None
    plan = []
    for idx, layer in module.named_children():
        if isinstance(layer, nn.Linear):
            plan.append((f"{idx}.weight", f"{idx}.bias" if layer.bias is not None else None, []))
        elif type(layer) in FUNCTIONS and plan:
            act = FUNCTIONS[type(layer)]
            if act is not None:
                plan[-1][2].append(act)
        else:
            return None
    return plan


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


def mlp_loss_on_plane(plan, layout, batched_loss, x, y, origin, directions, coords, size: int, decay=None):
    """Losses at ``origin + coords @ directions`` (K points of a plane), ``size`` points a chunk.

    The first layer is affine in the parameters along the family: x·W(c)ᵀ + b(c) = H_0 + Σ_j c_j H_j,
    with H_0 and each H_j computed once for all K points; a point's first layer then costs k + 1
    scaled additions instead of a matrix product, and the other layers run batched (:func:`mlp_forward`).
    ``decay``: (weight decay, mask of the decayed parameters), or None.
    """
    (w0, b0, acts0), rest = plan[0], plan[1:]
    basis = layout.unflatten(torch.cat([origin[None], directions]))  # [1 + k, ...]
    # narrow networks run feature-major (see mlp_forward): their first layer is built that way too
    feature = bool(rest) and max(max(layout.shapes[layout.names.index(w)]) for w, _, _ in rest) <= NARROW
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
        for act in acts0:
            h = act(h)
        thetas = origin + c @ directions
        h = h.transpose(1, 2) if feature else h  # [m, N, h1], a view of the feature-major values
        value = batched_loss(mlp_forward(rest, layout.unflatten(thetas), h), y.expand(m, *y.shape))
        if decay is not None:
            value = value + 0.5 * decay[0] * thetas[:, decay[1]].pow(2).sum(-1)
        out.append(value)
    return torch.cat(out)
