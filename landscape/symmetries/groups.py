"""Symmetries of a network's flat parameters: hidden-unit permutations and positive rescalings.

Permuting the hidden units of a layer (the rows of the weight and bias that produce them, the
columns of the weight that reads them, and every per-unit parameter in between) leaves the
network's function unchanged; so does scaling a unit's incoming weights by c > 0 and its outgoing
weights by c^-k when every operation between them is positively homogeneous of degree k
(ReLU, leaky ReLU, identity, max/avg pooling: k = 1; the square: k = 2). Two minima that differ by
such a transformation are the same function, yet the straight path between them can cross a high
barrier (Freeman & Bruna, ICLR 2017): these symmetries must be divided out before paths and
valleys mean anything (Ainsworth, Hayase & Srinivasa, "Git Re-Basin", ICLR 2023).

This module holds the symmetry and its action on flat parameter vectors; :func:`landscape.symmetry`
(in ``_trace``) derives it from the module itself, never from per-model tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .._errors import LandscapeError
from .._random import resolve_generator
from ..problems.layout import Layout

#: What a unit's transformation does to an axis. ``head``: permuted and multiplied by c (the
#: weight rows and bias producing the unit, or the affine normalization after them); ``tail``:
#: permuted and multiplied by c^-k (the columns of the next layer); ``passive``: permuted only;
#: ``buffer``: a module buffer outside θ (BatchNorm running statistics) — units may be exchanged
#: only where it agrees, since θ cannot carry it along.
ROLES = ("head", "tail", "passive", "buffer")


@dataclass(frozen=True)
class Axis:
    """One axis of one named tensor that a hidden layer's units run along.

    Attributes
    ----------
    name : str
        Parameter name in the problem's layout (or a buffer name, for role ``"buffer"``).
    axis : int
        Tensor axis, without batch dimensions.
    block : int
        Consecutive entries per unit along the axis (a convolution channel flattened into a
        Linear layer's input spans H·W columns).
    role : str
        One of :data:`ROLES`.
    """

    name: str
    axis: int
    block: int = 1
    role: str = "passive"


@dataclass(frozen=True)
class UnitGroup:
    """The units of one hidden layer: what a permutation of them (and a rescaling) acts on.

    Attributes
    ----------
    name : str
        Qualified name of the module producing the units (``"0"``, ``"features.3"``).
    size : int
        Number of units n.
    axes : tuple of Axis
    degree : float or None
        k such that the operations between the head and the tail are positively homogeneous of
        degree k, σ(cz) = c^k σ(z) for c > 0; None when the units have no rescaling symmetry.
    tap : str
        The traced node whose output holds the units' activations (the input of the next layer).
    tap_dim : int
        Axis of the units in that output (1 for channels, the last axis for features).
    tap_block : int
        Consecutive entries per unit along that axis (H·W for channels flattened into features).
    """

    name: str
    size: int
    axes: tuple[Axis, ...]
    degree: float | None
    tap: str
    tap_dim: int
    tap_block: int = 1

    @property
    def rescalable(self) -> bool:
        return self.degree is not None

    def summary(self) -> dict:
        return {"name": self.name, "size": self.size, "degree": self.degree,
                "axes": [f"{a.name}[{a.axis}]" + (f"x{a.block}" if a.block > 1 else "") + f":{a.role}"
                         for a in self.axes]}


class Symmetry:
    """The hidden-unit permutations and rescalings of a network problem, acting on flat θ.

    Build it with :func:`symmetry`. Permutations are given per group as index tensors ``perm`` of
    shape (n,) — or (K, n), one per row of a (K, D) batch — meaning "unit j of the result is unit
    ``perm[j]`` of the input"; scales as positive tensors of the same shapes.
    """

    def __init__(self, layout: Layout, groups, graph, buffers: dict, skipped=()):
        self.layout = layout
        self.groups: tuple[UnitGroup, ...] = tuple(groups)
        self.graph = graph
        self.buffers = buffers
        self.skipped = tuple(skipped)

    def __repr__(self):
        return f"<Symmetry {[(g.name, g.size) for g in self.groups]}>"

    @property
    def rescalable(self) -> bool:
        """Whether any hidden layer has a positive-rescaling symmetry."""
        return any(g.rescalable for g in self.groups)

    def summary(self) -> list[dict]:
        return [g.summary() for g in self.groups]

    # -------------------------------------------------------------- group elements
    def identity(self, k: int | None = None, device=None) -> dict[str, torch.Tensor]:
        """The identity permutation of every group, shape (n,) or (k, n)."""
        out = {}
        for g in self.groups:
            p = torch.arange(g.size, device=device)
            out[g.name] = p if k is None else p.expand(k, g.size).clone()
        return out

    def random(self, *, generator: torch.Generator | None = None, rescale: bool = False, spread: float = 2.0):
        """A random element: uniform permutations and, where a rescaling is a symmetry, log-uniform
        scales in [1/spread, spread], drawn from ``generator``. Seeded 0 when None (``landscape._random``).

        Returns
        -------
        perms, scales : dict of str to Tensor, shape (n,)
        """
        generator = resolve_generator(generator)
        perms, scales = {}, {}
        for g in self.groups:
            perms[g.name] = torch.randperm(g.size, generator=generator)
            if rescale and g.rescalable:
                u = torch.rand(g.size, generator=generator, dtype=torch.float64) * 2 - 1
                scales[g.name] = torch.exp(u * math.log(spread))
        return perms, scales

    def inverse(self, perms: dict, scales: dict | None = None):
        """The inverse element: ``transform(transform(θ, p, s), *inverse(p, s)) == θ``."""
        inv = {k: torch.argsort(p, dim=-1) for k, p in perms.items()}
        inv_scales = {k: 1.0 / (s.gather(-1, inv[k].to(s.device)) if k in inv else s)
                      for k, s in (scales or {}).items()}
        return inv, inv_scales

    # -------------------------------------------------------------- actions on θ
    def permute(self, theta: torch.Tensor, perms: dict) -> torch.Tensor:
        """θ with the units of each group reordered: unit j of the result is unit ``perms[g][j]``.

        Parameters
        ----------
        theta : Tensor, shape (D,) or (K, D)
        perms : dict of str to LongTensor, shape (n,) or (K, n)

        Returns
        -------
        Tensor, same shape as ``theta``
        """
        return self._act(theta, perms, "permute")

    def rescale(self, theta: torch.Tensor, scales: dict) -> torch.Tensor:
        """θ with unit j of each group scaled: heads by c_j, tails by c_j^-k (a function-preserving map).

        Parameters
        ----------
        theta : Tensor, shape (D,) or (K, D)
        scales : dict of str to Tensor, shape (n,) or (K, n), positive; groups left out keep c = 1
        """
        for name in scales:
            group = self._group(name)
            if not group.rescalable:
                raise LandscapeError(f"the units of layer {name!r} have no rescaling symmetry (the operations after "
                                     "them are not positively homogeneous); do not rescale them")
        return self._act(theta, scales, "scale")

    def transform(self, theta: torch.Tensor, perms: dict | None = None, scales: dict | None = None) -> torch.Tensor:
        """``rescale(permute(θ, perms), scales)``: one element of the symmetry group applied to θ."""
        out = self.permute(theta, perms) if perms else theta
        return self.rescale(out, scales) if scales else out

    def _group(self, name) -> UnitGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise LandscapeError(f"no hidden layer {name!r}; the layers are {[g.name for g in self.groups]}")

    def _act(self, theta, elements, kind):
        if theta.shape[-1] != self.layout.dim or theta.dim() not in (1, 2):
            raise LandscapeError(f"parameters have shape {tuple(theta.shape)}, expected (D,) or (K, D) with "
                                 f"D = {self.layout.dim}")
        nb = theta.dim() - 1
        out = theta.clone()
        views = self.layout.unflatten(out)
        source = self.layout.unflatten(theta)
        new = {}
        for name, value in elements.items():
            group = self._group(name)
            value = value.to(theta.device)
            if value.shape[-1] != group.size or value.dim() > 1 + nb:
                raise LandscapeError(f"layer {name!r} has {group.size} units; got an element of shape "
                                     f"{tuple(value.shape)}")
            for ax in group.axes:
                if ax.role == "buffer" or (kind == "scale" and ax.role == "passive"):
                    continue
                t = new.get(ax.name, source[ax.name])
                if kind == "permute":
                    new[ax.name] = _take(t, ax.axis, ax.block, nb, value)
                else:
                    power = 1.0 if ax.role == "head" else -float(group.degree)
                    new[ax.name] = _multiply(t, ax.axis, ax.block, nb, value.to(torch.float64).pow(power))
        for name, t in new.items():
            views[name].copy_(t)
        return out

    # -------------------------------------------------------------- canonical rescaling
    def balance(self, theta: torch.Tensor, *, tol: float = 1e-10, max_iter: int = 10_000):
        """The canonical representative of θ's rescaling orbit: the one of least squared norm.

        Minimises Σ‖P‖² over the per-unit rescalings of every rescalable layer. In log-scales
        the objective is a sum of exponentials of linear forms (convex), and the optimum of one
        layer given the others is in closed form: with A_j and B_j the squared norms of unit j's
        head and tail entries and k the degree, c_j = (k B_j / A_j)^(1/(2k+2)). For k = 1 the
        optimum balances every unit, ‖incoming‖ = ‖outgoing‖ (the ENorm of Stock et al., ICLR 2019;
        gradient flow preserves ‖in‖² − ‖out‖², Du, Hu & Lee, NeurIPS 2018). Layers are swept
        until no scale moves by more than ``tol`` (relative). Units with no incoming or no outgoing
        weight are left as they are.

        Parameters
        ----------
        theta : Tensor, shape (D,) or (K, D)

        Returns
        -------
        balanced : Tensor, same shape and dtype as ``theta``
        scales : dict of str to Tensor (float64), shape (n,) or (K, n)
            ``balanced == rescale(theta, scales)``.
        sweeps : int
        """
        work = theta.detach().to(torch.float64)
        groups = [g for g in self.groups if g.rescalable]
        batch = tuple(theta.shape[:-1])
        total = {g.name: torch.ones(*batch, g.size, dtype=torch.float64, device=theta.device) for g in groups}
        sweeps = 0
        for sweeps in range(1, max_iter + 1):
            worst = 0.0
            for g in groups:
                params = self.layout.unflatten(work)
                nb = work.dim() - 1
                a = sum(_unit_sq(params[x.name], x.axis, x.block, nb) for x in g.axes if x.role == "head")
                b = sum(_unit_sq(params[x.name], x.axis, x.block, nb) for x in g.axes if x.role == "tail")
                k = float(g.degree)
                ok = (a > 0) & (b > 0)
                c = torch.where(ok, (k * b / torch.where(ok, a, 1.0)).pow(1.0 / (2 * k + 2)), torch.ones_like(a))
                worst = max(worst, float(c.log().abs().max()) if c.numel() else 0.0)
                work = self._act(work, {g.name: c}, "scale")
                total[g.name] = total[g.name] * c
            if worst <= tol:
                break
        return work.to(theta.dtype), total, sweeps

    # -------------------------------------------------------------- constraints
    def exchangeable(self, name: str) -> torch.Tensor | None:
        """Bool (n, n): which units of a layer may trade places. None when all may.

        Units whose buffers (BatchNorm running statistics, outside θ) differ cannot: a permuted θ
        would meet the other unit's statistics and compute another function.
        """
        group = self._group(name)
        keys = []
        for ax in group.axes:
            if ax.role == "buffer":
                t = self.buffers[ax.name].detach().to(torch.float64)
                keys.append(t.movedim(ax.axis, 0).reshape(group.size, -1))
        if not keys:
            return None
        rows = torch.cat(keys, dim=1)
        ids = torch.unique(rows, dim=0, return_inverse=True)[1]
        if bool((ids == ids[0]).all()):
            return None
        return ids[:, None] == ids[None, :]


# ------------------------------------------------------------------ tensor helpers
def _blocks(t, axis, block, nb):
    """View of t with its unit axis split into (n, block); returns the view and the unit axis index."""
    ax = nb + axis
    n = t.shape[ax] // block
    return t.reshape(*t.shape[:ax], n, block, *t.shape[ax + 1:]), ax


def _take(t, axis, block, nb, perm):
    v, ax = _blocks(t, axis, block, nb)
    if perm.dim() == 1 or perm.shape[0] == 1:  # one permutation for every row: a plain index_select
        out = v.index_select(ax, perm.reshape(-1))
    else:
        shape = [perm.shape[0]] + [1] * (ax - 1) + [perm.shape[1]] + [1] * (v.dim() - ax - 1)
        out = v.gather(ax, perm.reshape(shape).expand(*v.shape[:ax], perm.shape[1], *v.shape[ax + 1:]))
    return out.reshape(t.shape)


def _multiply(t, axis, block, nb, factor):
    v, ax = _blocks(t, axis, block, nb)
    lead = factor.shape[:-1]
    shape = [*lead] + [1] * (ax - len(lead)) + [factor.shape[-1]] + [1] * (v.dim() - ax - 1)
    return (v * factor.reshape(shape).to(t.dtype)).reshape(t.shape)


def _unit_sq(t, axis, block, nb):
    """Squared norm of each unit's entries, shape (*batch, n)."""
    v, ax = _blocks(t, axis, block, nb)
    return v.pow(2).movedim(ax, -1).flatten(nb, -2).sum(nb)


def units(t: torch.Tensor, axis: int, block: int, nb: int) -> torch.Tensor:
    """The entries of each unit as rows: shape (*batch, n, m)."""
    v, ax = _blocks(t, axis, block, nb)
    return v.movedim(ax, nb).flatten(nb + 1)


