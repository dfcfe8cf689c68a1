"""Alignment of two minima modulo the network's symmetries: weight and activation matching.

``align(problem, a, b)`` returns b moved, by a hidden-unit permutation (and, where it is a
symmetry, a positive rescaling of each unit), as close to a as the method can: the same function
as b, expressed in a's coordinates. The straight path between a and the aligned b is the one whose
barrier says something about the landscape (Ainsworth, Hayase & Srinivasa, "Git Re-Basin: Merging
Models modulo Permutation Symmetries", ICLR 2023; Entezari et al., ICLR 2022).

``ALIGNERS`` maps each method name to a function of one signature, named as its key::

    aligner(problem, symmetry, theta_a[D], theta_b[K, D], *, generator, max_iter, samples, split)
        -> (perms: {layer: LongTensor[K, n]}, info: dict)

where unit j of the aligned b is unit ``perms[layer][k, j]`` of b.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from .._errors import LandscapeError
from .._random import resolve_generator
from .._registry import Registry
from .groups import Symmetry, units
from .derive import symmetry
from .orthogonal import moved_rows


def weight(problem, sym: Symmetry, theta_a, theta_b, *, generator=None, max_iter=100, samples=None, split="train"):
    """Weight matching: maximise ⟨θ_a, π(θ_b)⟩ over permutations π, by coordinate descent over layers.

    Each step fixes the permutations of every layer but one; the best permutation of that one is a
    linear assignment problem (``scipy.optimize.linear_sum_assignment``) whose cost sums, over
    every tensor the layer's units run through, the inner products of a's and b's unit slices.
    Layers are visited in a random order drawn from ``generator`` each sweep; sweeps stop when
    none improves the objective (at most ``max_iter`` sweeps). Ainsworth et al., ICLR 2023, Alg. 1.

    Returns
    -------
    perms : dict of str to LongTensor, shape (K, n)
    info : dict
        ``sweeps``, ``objective`` before and after (⟨θ_a, π(θ_b)⟩ over the permuted tensors).
    """
    if hasattr(sym, "weight_matching"):  # groups that move together (a transformer's heads) are matched jointly
        return sym.weight_matching(theta_a, theta_b, generator=generator, max_iter=max_iter)
    generator = resolve_generator(generator)
    k = theta_b.shape[0]
    a = theta_a.detach().to(torch.float64)
    b = theta_b.detach().to(torch.float64)
    perms = sym.identity(k, device=b.device)
    groups = sym.groups
    if not groups:
        return perms, {"sweeps": 0, "objective": {"before": [0.0] * k, "after": [0.0] * k}}
    pa = sym.layout.unflatten(a)
    masks = {g.name: sym.exchangeable(g.name) for g in groups}
    before = _objective(sym, a, b, perms)
    sweeps = 0
    for sweeps in range(1, max_iter + 1):
        improved = False
        for i in torch.randperm(len(groups), generator=generator).tolist():
            g = groups[i]
            others = dict(perms)
            others[g.name] = torch.arange(g.size, device=b.device).expand(k, g.size)
            pb = sym.layout.unflatten(sym.permute(b, others))
            cost = 0
            for ax in g.axes:
                if ax.role != "buffer":
                    ua = units(pa[ax.name], ax.axis, ax.block, 0)  # [n, m]
                    ub = units(pb[ax.name], ax.axis, ax.block, 1)  # [K, n, m]
                    cost = cost + ua @ ub.transpose(1, 2)
            new = _assign(cost, masks[g.name])
            old = perms[g.name]
            gain = cost.gather(2, new[..., None]).sum((1, 2)) - cost.gather(2, old[..., None]).sum((1, 2))
            better = gain > 1e-12 * cost.abs().amax((1, 2)).clamp_min(1.0) * g.size
            if bool(better.any()):
                improved = True
                perms[g.name] = torch.where(better[:, None], new, old)
        if not improved:
            break
    after = _objective(sym, a, b, perms)
    return perms, {"sweeps": sweeps, "objective": {"before": before.tolist(), "after": after.tolist()}}


def activation(problem, sym: Symmetry, theta_a, theta_b, *, generator=None, max_iter=100, samples=None, split="train"):
    """Activation matching: pair the units of each layer whose activations on the data correlate most.

    For every hidden layer, the Pearson correlations between a's and b's unit activations over the samples of
    ``split`` (and the spatial positions of a channel) form an (n, n) matrix; the permutation maximising their sum
    is a linear assignment problem, one per layer, independent of the others (a permutation of b does not change
    its activations, only their order). Ainsworth et al., ICLR 2023, Section 3.1. Correlations ignore positive
    rescalings. Units silent on the data (dead ReLUs) correlate with nothing; ties are broken by the cosine
    similarity of the units' incoming weights, weighted by :data:`TIE_BREAK`, layers in forward order. A symmetry
    with its own ``activation_matching`` (the transformer's, :mod:`.transformer_acts`) matches itself.

    Returns
    -------
    perms : dict of str to LongTensor, shape (K, n)
    info : dict
        ``samples`` used and the mean correlation of matched units before and after, per layer.
    """
    if hasattr(sym, "activation_matching"):  # a transformer: its own taps and continuous groups
        return sym.activation_matching(problem, theta_a, theta_b, samples=samples, split=split)
    acts = activations(problem, sym, torch.cat([theta_a[None], theta_b]), samples=samples, split=split)
    pa, b, perms, corr = sym.layout.unflatten(theta_a.to(torch.float64)), theta_b.to(torch.float64), {}, {}
    for g in sym.groups:  # forward order: earlier layers' permutations are applied to b before a tie-break
        z = acts[g.name].to(torch.float64)  # [1 + K, M, n]
        if z.shape[1] < 2:  # no correlation: every unit would match by the tie-break alone
            raise LandscapeError(f"activation matching needs 2 values of each unit to correlate; layer {g.name} has "
                                 f"{z.shape[1]} (samples={samples}): give more --samples or use the weight method")
        z = z - z.mean(1, keepdim=True)
        z = z / z.pow(2).mean(1, keepdim=True).sqrt().clamp_min(1e-12)
        c = z[:1].transpose(1, 2) @ z[1:] / z.shape[1]  # [K, n, n]
        p = _assign(c + TIE_BREAK * _head_cosines(sym, g, pa, sym.layout.unflatten(b)), sym.exchangeable(g.name))
        b = sym.permute(b, {g.name: p})
        perms[g.name] = p
        corr[g.name] = {"before": c.diagonal(dim1=1, dim2=2).mean(1).tolist(),
                        "after": c.gather(2, p[..., None]).mean((1, 2)).tolist()}
    n = problem.n_samples(split) if samples is None else min(samples, problem.n_samples(split))
    return perms, {"samples": n, "correlation": corr}


def none(problem, sym: Symmetry, theta_a, theta_b, *, generator=None, max_iter=100, samples=None, split="train"):
    """No permutation: the baseline (b as it is; rescaled into a's gauge only if asked)."""
    return sym.identity(theta_b.shape[0], device=theta_b.device), {}


#: Weight of the incoming-weight cosine similarity that breaks ties between equally correlated units
#: in activation matching: small enough never to overturn a difference in correlation that matters.
TIE_BREAK = 1e-6

#: Alignment methods by name; each key is the name of its function (see the module docstring).
ALIGNERS = Registry("alignment method", (weight, activation, none),
                    shared=("problem", "sym", "theta_a", "theta_b", "generator", "max_iter", "samples", "split"))


@dataclass
class Alignment:
    """The result of :func:`align`: b moved onto a by a symmetry of the network.

    Attributes
    ----------
    theta : Tensor, shape (D,) or (K, D)
        The aligned b: ``symmetry.transform(theta_b, permutations, scales)``.
    permutations : dict of str to LongTensor, shape (n,) or (K, n)
        Per hidden layer: unit j of the aligned b is unit ``permutations[layer][j]`` of b.
    scales : dict of str to Tensor (float64), shape (n,) or (K, n)
        Per rescaled layer: the factor c_j applied to aligned unit j (heads × c, tails × c^-k).
    method : str
    rescaled : bool
    distance_before, distance_after : float or list of float
        ‖θ_a − θ_b‖ and ‖θ_a − aligned θ_b‖.
    info : dict
        Figures of the method (sweeps, objective or correlations) and of the rescaling.
    symmetry : Symmetry
    seconds : float
    """

    theta: torch.Tensor
    permutations: dict
    scales: dict
    method: str
    rescaled: bool
    distance_before: float | list
    distance_after: float | list
    info: dict = field(default_factory=dict)
    symmetry: Symmetry | None = None
    seconds: float = 0.0

    def apply(self, thetas: torch.Tensor) -> torch.Tensor:
        """The same transformation applied to other points of b's network (θ [D] or [T, D]), e.g. its trajectory."""
        if self.theta.dim() != 1:
            raise LandscapeError("apply() moves points of one aligned network; this alignment holds "
                                 f"{self.theta.shape[0]}")
        return self.symmetry.transform(thetas, self.permutations, self.scales)

    @property
    def moved_units(self) -> dict[str, int | list[int]]:
        """Per layer, how many units the permutation moves (0: the identity)."""
        return {name: moved_rows(p).tolist() for name, p in self.permutations.items()}

    def summary(self, *, permutations: bool = True) -> dict:
        """JSON-able figures (what ``landscape align --json`` prints and checkpoints record)."""
        out = {"method": self.method, "rescaled": self.rescaled, "layers": self.symmetry.summary(),
               "moved_units": self.moved_units, "distance_before": self.distance_before,
               "distance_after": self.distance_after, "seconds": self.seconds, "info": self.info}
        if permutations:
            out["permutations"] = {k: v.tolist() for k, v in self.permutations.items()}
            out["scales"] = {k: v.tolist() for k, v in self.scales.items()}
        return out


def align(problem, theta_a: torch.Tensor, theta_b: torch.Tensor, *, method: str = "weight",
          rescale: bool | None = None, generator: torch.Generator | None = None, max_iter: int = 100,
          samples: int | None = None, split: str = "train") -> Alignment:
    """Move θ_b onto θ_a by a hidden-unit permutation (and rescaling) that keeps b's function.

    Parameters
    ----------
    problem : NetworkProblem
        Its module's symmetry is derived by :func:`landscape.symmetry`.
    theta_a : Tensor, shape (D,)
        The reference.
    theta_b : Tensor, shape (D,) or (K, D)
        The point(s) to align; K points are aligned to a at once.
    method : str
        A key of :data:`ALIGNERS`: ``"weight"`` (default), ``"activation"`` or ``"none"``.
    rescale : bool, optional
        Divide out the positive rescaling of units followed by positively homogeneous operations
        (ReLU, leaky ReLU, identity, pooling; the square): both points are first brought to their
        least-norm (balanced) representative (:meth:`Symmetry.balance`), matched there, and b's
        result is carried into a's gauge — so that a permuted and rescaled copy of a comes back as
        a exactly. Default (None): on when some layer has this symmetry, the problem has no weight
        decay (which rescaling changes) and the method is not ``"none"``.
    generator : torch.Generator, optional
        Order of the layers in weight matching (different orders can end in different local
        optima). Seeded 0 when None (``landscape._random``).
    max_iter : int
        Most sweeps of weight matching.
    samples : int, optional
        Activation matching uses the first ``samples`` samples of ``split`` (all by default).

    Returns
    -------
    Alignment
        ``.theta`` is the aligned b, the same shape as ``theta_b``: the same network function as b
        (outputs equal up to rounding), hence the same loss.

    Raises
    ------
    LandscapeError
        An unknown method, mismatched shapes, a module whose symmetry cannot be derived, or
        ``rescale=True`` where rescaling is not a symmetry of the loss.

    Examples
    --------
    >>> problem = landscape.make_problem("digits_mlp", width=16)
    >>> result = landscape.train(problem, seeds=[0, 1], steps=300, lr=0.01)
    >>> aligned = landscape.align(problem, result.thetas[0], result.thetas[1])
    >>> landscape.barrier(problem, result.thetas[0], aligned.theta)  # the linear barrier left after alignment
    """
    aligner = ALIGNERS.lookup(method)
    if max_iter < 1:
        raise LandscapeError(f"max_iter must be >= 1, got {max_iter}")
    start = time.perf_counter()
    a, b = _check(problem, theta_a, theta_b)
    single = theta_b.dim() == 1
    sym = symmetry(problem)
    decay = float(getattr(problem, "weight_decay", 0.0) or 0.0)
    if rescale is None:
        rescale = sym.rescalable and decay == 0.0 and method != "none"
    elif rescale and not sym.rescalable:
        raise LandscapeError(f"problem {problem.name!r} has no rescaling symmetry (no hidden layer is followed by a "
                             "positively homogeneous activation); use rescale=False")
    elif rescale and decay:
        raise LandscapeError(f"problem {problem.name!r} has weight decay {decay:g}: rescaling units changes the "
                             "loss, so it is not a symmetry; use rescale=False")
    info = {}
    if rescale:
        ca, sa, sweeps_a = sym.balance(a)
        cb, sb, sweeps_b = sym.balance(b)
        info["balance_sweeps"] = [sweeps_a, sweeps_b]
    else:
        ca, cb, sa, sb = a, b, {}, {}
    perms, info["method"] = aligner(problem, sym, ca, cb, generator=generator, max_iter=max_iter,
                                             samples=samples, split=split)
    # b's balanced unit perm[j], moved to slot j, then un-balanced with a's factor of slot j
    if hasattr(sym, "compose"):  # the transformer's balancing maps may be matrices
        perms, scales = sym.compose(perms, sa, sb)
    else:
        scales = {g: sb[g].gather(-1, perms[g]) / sa[g] for g in sb}
    aligned = sym.transform(b, perms, scales)
    if hasattr(problem, "module_") and method != "none":  # a symmetry is a claim: the module's outputs must agree
        from ..problems.capture import same_function

        changed = same_function(problem, b, aligned)
        if changed is not None:
            raise LandscapeError(f"aligning changed the network's function ({changed}): the symmetry derived from "
                                 f"{type(problem.module_).__name__}'s forward is not one of it; connect without "
                                 "alignment (--align none)")
    before = (b - a).norm(dim=1)
    after = (aligned - a).norm(dim=1)
    if single:
        aligned = aligned[0]
        perms = {g: p[0] for g, p in perms.items()}
        scales = {g: s[0] for g, s in scales.items()}
    dist = (lambda t: float(t[0])) if single else (lambda t: t.tolist())
    return Alignment(aligned, perms, scales, method, bool(rescale), dist(before), dist(after), info, sym,
                     time.perf_counter() - start)


def activations(problem, sym: Symmetry, thetas: torch.Tensor, *, samples: int | None = None,
                split: str = "train") -> dict[str, torch.Tensor]:
    """The hidden activations of K networks on the data, one batched (vmapped) call per chunk.

    Parameters
    ----------
    thetas : Tensor, shape (K, D)

    Returns
    -------
    dict of str to Tensor, shape (K, M, n)
        Per hidden layer, its n units' values over M = samples × spatial positions.
    """
    import torch.fx
    from torch.func import vmap

    from ..problems.fcall import functional_call

    if not sym.groups:
        return {}
    graph = torch.fx.Graph()
    env, taps = {}, {g.tap: g for g in sym.groups}
    for node in sym.graph.graph.nodes:
        if node.op == "output":
            graph.output(tuple(env[name] for name in taps))
            break
        env[node.name] = graph.node_copy(node, lambda n: env[n.name])
    tapped = torch.fx.GraphModule(sym.graph, graph)
    tapped.graph.eliminate_dead_code()
    tapped.recompile()
    x = problem.data(split)[0]
    if samples is not None:
        if samples < 1:
            raise LandscapeError(f"samples must be >= 1, got {samples}")
        x = x[:samples]
    x = x.to(device=thetas.device, dtype=thetas.dtype if x.is_floating_point() else x.dtype)
    names = {n for n, _ in tapped.named_parameters()}
    buffers = {n: t.to(thetas.device, thetas.dtype) if t.is_floating_point() else t.to(thetas.device)
               for n, t in tapped.named_buffers()}

    def one(theta):
        params = {n: t for n, t in sym.layout.unflatten(theta).items() if n in names}
        return functional_call(tapped, (params, buffers), (x,))

    per_point = x.shape[0] * thetas.element_size() * sum(
        math.prod(n.meta["shape"][1:]) for n in sym.graph.graph.nodes if "shape" in n.meta)
    chunk = max(1, (256 << 20) // max(per_point, 1))
    outs = {g.name: [] for g in sym.groups}
    with torch.no_grad():
        for i in range(0, thetas.shape[0], chunk):
            values = vmap(one)(thetas[i:i + chunk])
            for (tap, g), v in zip(taps.items(), values):
                outs[g.name].append(_unit_columns(v, g))
    return {name: torch.cat(v) for name, v in outs.items()}


# ------------------------------------------------------------------ helpers
def _unit_columns(v, g):
    """Activations [K, N, ...] at a tap -> [K, M, n] with the units last."""
    ax = 1 + g.tap_dim
    n = g.size
    v = v.reshape(*v.shape[:ax], n, g.tap_block, *v.shape[ax + 1:]).movedim(ax, -1)
    return v.reshape(v.shape[0], -1, n)


def _assign(cost: torch.Tensor, mask) -> torch.Tensor:
    """Row-wise maximising assignment of each (n, n) slice of cost [K, n, n]; forbidden pairs excluded."""
    from scipy.optimize import linear_sum_assignment

    c = cost.detach().to("cpu", torch.float64)
    if mask is not None:
        c = c.masked_fill(~mask.cpu(), float("-inf"))
    out = [torch.as_tensor(linear_sum_assignment(m.numpy(), maximize=True)[1]) for m in c]
    return torch.stack(out).to(cost.device)


def _head_cosines(sym, g, pa, pb):
    """Cosine similarity of a's and b's units' incoming entries (head and passive axes), shape (K, n, n)."""
    ua = torch.cat([units(pa[x.name], x.axis, x.block, 0) for x in g.axes if x.role in ("head", "passive")], 1)
    ub = torch.cat([units(pb[x.name], x.axis, x.block, 1) for x in g.axes if x.role in ("head", "passive")], 2)
    ua = ua / ua.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    ub = ub / ub.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    return ua @ ub.transpose(1, 2)


def _objective(sym, a, b, perms):
    """⟨θ_a, π(θ_b)⟩ over the tensors the symmetry moves, shape (K,)."""
    names = sorted({ax.name for g in sym.groups for ax in g.axes if ax.role != "buffer"})
    pa, pb = sym.layout.unflatten(a), sym.layout.unflatten(sym.permute(b, perms))
    return sum((pa[n] * pb[n]).flatten(1).sum(1) for n in names)


def _check(problem, theta_a, theta_b):
    for label, t in (("theta_a", theta_a), ("theta_b", theta_b)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise LandscapeError(f"{label} must be a floating-point torch.Tensor")
    if theta_a.shape != (problem.dim,):
        raise LandscapeError(f"theta_a has shape {tuple(theta_a.shape)}, expected ({problem.dim},) for {problem.name}")
    b = theta_b[None] if theta_b.dim() == 1 else theta_b
    if b.dim() != 2 or b.shape[1] != problem.dim:
        raise LandscapeError(f"theta_b has shape {tuple(theta_b.shape)}, expected ({problem.dim},) or "
                             f"(K, {problem.dim}) for {problem.name}")
    if not (torch.isfinite(theta_a).all() and torch.isfinite(b).all()):
        raise LandscapeError("the parameters to align hold NaN or infinite values")
    return theta_a.detach(), b.detach().to(device=theta_a.device, dtype=theta_a.dtype)
