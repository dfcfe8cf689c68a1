"""The symmetry of a user's own transformer (or any module torch.fx cannot trace): its units found by running its
forward on one real sample (:mod:`.coords`), arranged into the groups of :class:`.transformer.TransformerSymmetry`
(the residual stream ``resid``, per attention layer the coupled ``….attn.qk`` / ``….attn.vo`` groups, per MLP its
hidden units), then checked: random elements of every group, and of the continuous groups weight matching uses,
must keep the module's outputs in float64 at a random θ, or the group is left out.

How the units become groups (:func:`user_symmetry`): every class of the union-find is one unit, made of the
entries of some parameter axes (a stream dimension: an embedding column, a LayerNorm gain, a column of every
projection reading the stream, a row of every one writing it; a query/key dimension: a row of q and the row of k
summed with it, their biases). Units made of the same parameter axes form a group; their entries must lie in one
contiguous range of each axis (fused ``qkv`` weights: three row ranges of one tensor, shown to the rest of the
package as three tensors of a *split layout*: rows of a row-major tensor are contiguous in θ). A unit that
something tells apart from the others (:mod:`.coords`: pinned), or that no parameter both writes and reads, is
no unit. Units of attention heads form the ``qk`` group (queries and keys) and the ``vo`` group (values and the
output projection's columns) of their layer, each head a contiguous block, the same heads in both. Where the heads
are an axis of the weights (TransformerLens' ``W_Q`` of shape [H, d, d_head]) a head's dimension is not one row of
one axis: the heads then form a group of their own (permuted only) and the dimensions inside them another (the
same permutation and rescaling in every head), a subgroup of the full symmetry. The stream is the group of the
dimensions the attention layers read (else of an embedding's columns); the other groups are named after their
module.

What each group admits: permutations always; rescaling (degree 1) and, for the stream and the heads, the
invertible maps gl-balancing uses, only where nothing but linear operations touch the units (ReLU: rescaling of
the MLP units); a LayerNorm or RMSNorm on the stream leaves its permutations only.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from .._errors import LandscapeError
from .._random import resolve_generator
from ..problems.layout import Layout
from . import orthogonal
from .coords import trace_units
from .groups import Axis, UnitGroup
from .transformer import TransformerSymmetry


class UserTransformerSymmetry(TransformerSymmetry):
    """:class:`TransformerSymmetry` derived from a user's module: any number of attention layers and MLPs, matched
    in :attr:`matching_steps` (the stream, each attention layer's two groups together, each other group)."""

    def __init__(self, layout, groups, heads, d_head, layer_norm, skipped=()):
        attn = [g.name[:-8] for g in groups if g.name.endswith(".attn.qk")]
        super().__init__(layout, groups, heads, d_head, len(attn), layer_norm)
        self.skipped = tuple(skipped)
        self.attention = attn
        self.scores = 0  # products of two activations (attention) seen in the forward
        self.matching_steps = ([["resid"]] if any(g.name == "resid" for g in groups) else []) + [
            [a + ".attn.qk", a + ".attn.vo"] for a in attn] + [
            [g.name] for g in groups if g.name != "resid" and ".attn." not in g.name[-8:]]

    def random(self, *, generator=None, rescale=False, spread=2.0):
        """A random element of the coupled form (see :meth:`TransformerSymmetry.random`)."""
        generator = resolve_generator(generator)
        perms, scales = super(TransformerSymmetry, self).random(generator=generator, rescale=rescale, spread=spread)
        h, dh = self.heads, self.d_head
        for a in self.attention:
            sigma = torch.randperm(h, generator=generator)
            for part in ("qk", "vo"):
                inner = torch.stack([torch.randperm(dh, generator=generator) for _ in range(h)])
                perms[f"{a}.attn.{part}"] = (sigma[:, None] * dh + inner[sigma]).reshape(-1)
        return perms, scales

    #: Weight matching runs this many times (layer orders drawn from the generator) and keeps, per point, the best
    #: objective: a user's stream couples every layer, and one order can end in a local optimum.
    restarts = 4

    def weight_matching(self, theta_a, theta_b, *, generator=None, max_iter=100):
        """:meth:`TransformerSymmetry.weight_matching` over :attr:`matching_steps`, best of :attr:`restarts` runs."""
        generator = resolve_generator(generator)
        best = None
        for _ in range(self.restarts):
            maps, info = super().weight_matching(theta_a, theta_b, generator=generator, max_iter=max_iter)
            after = torch.tensor(info["objective"]["after"], dtype=torch.float64)
            if best is None:
                best, best_after = (maps, info), after
                continue
            better = after > best_after + 1e-12 * after.abs().clamp_min(1)
            for name, m in maps.items():
                mask = better.reshape(-1, *[1] * (m.dim() - 1)).to(m.device)
                best[0][name] = torch.where(mask, m, best[0][name])
            best_after = torch.where(better, after, best_after)
        maps, info = best
        info["objective"]["after"] = best_after.tolist()
        info["restarts"] = self.restarts
        return maps, info

    def activation_matching(self, problem, theta_a, theta_b, *, samples=None, split="train"):
        raise LandscapeError("activation matching reads the built-in transformer's own taps; for a user's transformer "
                             "use weight matching (--method weight)")


def user_symmetry(problem, module) -> UserTransformerSymmetry:
    """The symmetry of ``problem``'s module, found by running it (see the module docstring) and checked.

    Raises
    ------
    LandscapeError
        If no group is found (the message says what kept the units fixed).
    """
    sample = problem.data("train")[0][:1]
    params = dict(zip(problem.layout.names, (module.get_parameter(n) for n in problem.layout.names)))
    units = trace_units(module, params, sample)
    raw, skipped = _groups(units, problem.layout)
    split, groups, heads, d_head, layer_norm = _assemble(*_build(problem.layout, raw, skipped), units.embedded)
    if units.unknown:
        skipped.append("units through " + ", ".join(sorted(set(units.unknown))[:4]) + " are kept fixed")
    sym = _checked(problem, module, UserTransformerSymmetry(split, groups, heads, d_head, layer_norm, skipped))
    sym.scores = units.scores
    if sym.scores and not any(g.name == "resid" for g in sym.groups) and not any("resid" in s for s in sym.skipped):
        sym.skipped += ("resid: the dimensions attention reads are told apart in the forward (a fixed table added to "
                        "or multiplying them, as sinusoidal positions are): kept fixed",)
    if not sym.groups:
        why = "; ".join(sym.skipped[:3]) or "every unit is pinned by what the forward does with it"
        raise LandscapeError(f"found no symmetry of {type(module).__name__} to align over ({why}); connect without "
                             "alignment (--align none)")
    return sym


# ------------------------------------------------------------------ classes of the union-find into groups
def _classes(u, layout):
    owners = []
    for (name, axis), start in u.base.items():
        n = dict(zip(layout.names, layout.shapes))[name][axis]
        owners += [(name, axis, i) for i in range(n)]
    classes = {}
    for i, owner in enumerate(owners):
        classes.setdefault(u.uf.find(i), []).append((owner, i))
    return classes


def _groups(u, layout):
    """Per group: dict(name, kind, marks, members: [per class, sorted (name, axis, index, role)], heads)."""
    by_signature, skipped = {}, []
    for root, members in _classes(u, layout).items():
        ids = [i for _, i in members]
        if any(i in u.pinned for i in ids) or len(ids) < 2:
            continue
        parity = [u.uf.parity_of(i) for i in ids]
        if len(set(parity)) < 2 and not any(i in u.conflict for i in ids):
            continue  # written or read, not both
        marks = set().union(*(u.marks.get(i, set()) for i in ids))
        if any(i in u.conflict for i in ids):
            marks.add("conflict")
        heads = set().union(*(u.head_of.get(i, set()) for i in ids))
        entry = sorted((o, p, i in u.passive) for (o, i), p in zip(members, parity))
        signature = tuple((n, a) for (n, a, _), _, _ in entry)
        by_signature.setdefault(signature, []).append((entry, marks, heads))
    return list(by_signature.values()), skipped


def _ranges(classes):
    """Classes in order; per position of a class's sorted members: (name, axis, start, n, head?, passive?); or None
    if some position's indices are not one increasing contiguous range."""
    classes = sorted(classes, key=lambda c: c[0][0][0][2])
    first = classes[0][0]
    head_parity = next((p for (n, a, i), p, pas in first if a == 0 and not pas), first[0][1])
    out = []
    for k, ((name, axis, _), parity, passive) in enumerate(first):
        idx = [c[0][k][0][2] for c in classes]
        if idx != list(range(idx[0], idx[0] + len(idx))):
            return classes, None
        out.append((name, axis, idx[0], len(idx), parity == head_parity, passive))
    return classes, out


def _build(layout, raw, skipped):
    shapes = dict(zip(layout.names, layout.shapes))
    plans = []
    for classes in raw:
        classes, ranges = _ranges(classes)
        what = f"units of {ranges[0][0] if ranges else classes[0][0][0][0][0]}"
        if ranges is None or any(a > 0 and n != shapes[name][a] for name, a, _, n, _, _ in ranges):
            skipped.append(f"{what}: not contiguous ranges of the parameters' first axes")
            continue
        plans.append((classes, ranges))
    cuts = {}
    for _, ranges in plans:
        for name, axis, start, n, _, _ in ranges:
            if axis == 0 and n != shapes[name][0]:
                cuts.setdefault(name, {0, shapes[name][0]}).update((start, start + n))
    pieces = {n: sorted(c) for n, c in cuts.items()}
    names, new_shapes = [], []
    for name in layout.names:
        if name in pieces:
            for a, b in zip(pieces[name], pieces[name][1:]):
                names.append(f"{name}[{a}:{b}]")
                new_shapes.append((b - a, *shapes[name][1:]))
        else:
            names.append(name)
            new_shapes.append(shapes[name])
    split = Layout(tuple(names), tuple(new_shapes))

    def axes(ranges, rescaled):
        out = []
        for name, axis, start, n, head, passive in ranges:
            role = "passive" if passive or not rescaled else ("head" if head else "tail")
            if name not in pieces:
                out.append(Axis(name, axis, 1, role))
            elif axis == 0:
                out.append(Axis(f"{name}[{start}:{start + n}]", 0, 1, role))
            else:
                out += [Axis(f"{name}[{a}:{b}]", axis, 1, role) for a, b in zip(pieces[name], pieces[name][1:])]
        return tuple(out)

    return split, plans, axes, skipped


def _base(name):
    return name.rsplit("[", 1)[0]


def _module(name):
    return name.rsplit("[", 1)[0].rsplit(".", 1)[0] or name


def _prefix(names):
    """The longest common dotted module prefix of parameter names ('' when they share none)."""
    parts = [_module(n).split(".") for n in names]
    common = []
    for level in zip(*parts):
        if len(set(level)) > 1:
            break
        common.append(level[0])
    return ".".join(common) if all(len(p) > len(common) or _module(n) != n for p, n in zip(parts, names)) else ""


def _linear(marks):
    return not marks


def _assemble(split, plans, axes, skipped, embedded=()):
    """The groups: the stream (the dimensions q, k and v read, else an embedding's columns), attention layers, the
    rest (named after their module)."""
    groups, attn = [], {}
    for classes, ranges in plans:
        marks = set().union(*(c[1] for c in classes))
        heads = [c[2] for c in classes]
        if all(heads) and all(len(h) == 1 for h in heads):
            kinds = {next(iter(h))[1] for h in heads}
            if len(kinds) == 1:
                attn.setdefault(frozenset(next(iter(h))[0] for h in heads), {})[kinds.pop()] = (classes, ranges, marks)
                continue
        if any(heads):
            skipped.append(f"units of {ranges[0][0]}: in several heads")
            continue
        groups.append((classes, ranges, marks))
    out, own = [], []  # own: per attention layer, (heads, query/key and value dimensions of a head)
    layers = []
    for tokens, parts in attn.items():
        if set(parts) != {"qk", "vo"} or parts["qk"][2] or parts["vo"][2]:
            skipped.append(f"attention of {parts[next(iter(parts))][1][0][0]}: not matched queries/keys and values, "
                           "or not linear up to the scores")
            continue
        order = []
        for kind in ("qk", "vo"):
            classes = parts[kind][0]
            seq = [next(iter(c[2]))[0] for c in classes]
            dh = len(classes) // len(tokens)
            blocks = [seq[i:i + dh] for i in range(0, len(seq), dh)]
            order.append([b[0] for b in blocks] if all(len(set(b)) == 1 for b in blocks) else None)
        if order[0] is None or order[0] != order[1]:
            skipped.append(f"attention of {parts['qk'][1][0][0]}: heads are not contiguous blocks")
            continue
        own.append((len(tokens), len(parts["qk"][0]) // len(tokens), len(parts["vo"][0]) // len(tokens)))
        layers.append(parts)
    read = {r[0] for parts in layers for _, ranges, _ in parts.values() for r in ranges if r[1] == 0}
    stream = next((g for g in groups if any(r[0] in read and r[1] > 0 for r in g[1])), None)  # what q, k, v read
    stream = stream or next((g for g in groups if any(r[0] in embedded and r[1] > 0 for r in g[1])), None)
    layer_norm = True
    for classes, ranges, marks in groups:
        if stream is not None and classes is stream[0]:  # the dimensions the attention layers read
            layer_norm = not _linear(marks)
            out.insert(0, UnitGroup("resid", len(classes), axes(ranges, not layer_norm), None if layer_norm else 1.0,
                                    "", -1))
            continue
        degree = 1.0 if marks <= {"relu"} else None
        name = _module(ranges[0][0]).replace(".attn.", ".attention.")
        if name == "resid" or any(g.name == name for g in out):  # two unit spaces of one module (W_Q: heads, dims)
            name = f"{name}.axis{ranges[0][1]}"
        out.append(UnitGroup(name, len(classes), axes(ranges, degree is not None), degree, "", -1))
    shape = max(own, key=own.count, default=(1, 1, 1))  # the most common heads (4 of 2 dims are not 2 of 4)
    for parts, mine in zip(layers, own):
        qk, vo = parts["qk"], parts["vo"]
        if mine != shape or shape[1] != shape[2]:
            skipped.append(f"attention of {qk[1][0][0]}: heads of another size than the other layers'")
            continue
        prefix = _prefix([r[0] for r in qk[1] + vo[1]]) or "+".join(sorted({_module(r[0]) for r in qk[1]}))
        prefix = prefix[:-5] if prefix.endswith(".attn") else prefix  # blocks.0.attn.qk, not blocks.0.attn.attn.qk
        for kind, (classes, ranges, _) in (("qk", qk), ("vo", vo)):
            out.append(UnitGroup(f"{prefix}.attn.{kind}", len(classes), axes(ranges, True), 1.0, "", -1))
    return split, out, shape[0], shape[1], layer_norm


# ------------------------------------------------------------------ the check
def _checked(problem, module, sym, trials=2):
    """``sym`` less every group whose random elements change the module's outputs (float64, a random θ with every
    entry drawn from N(0, 1/4), up to 16 training samples; every tensor of a tuple or dict of outputs, infinite
    entries equal, the rest to 1e-9 of their size, or to 1e-5 where the forward casts float64 values to float32:
    LLaMA-style ``x.float()`` norms): each matching step alone, by permutations (and rescalings), then by the
    invertible maps the stream (without norms) and the heads admit. Raises if the groups left fail together."""
    import copy

    m = copy.deepcopy(module).double().eval()
    x = problem.data("train")[0][:16]
    x = x.double() if x.is_floating_point() else x
    gen = torch.Generator().manual_seed(0)
    theta = torch.randn(problem.layout.dim, generator=gen, dtype=torch.float64) / 2  # generic: no zero parameter

    def outputs(t):
        with torch.no_grad():
            for name, value in problem.layout.unflatten(t).items():
                m.get_parameter(name).copy_(value)
            leaves = [t.reshape(-1) for t in tree_leaves(m(x)) if isinstance(t, torch.Tensor) and t.is_floating_point()]
        if not leaves:
            raise LandscapeError(f"{type(module).__name__} returns no floating-point tensor; nothing to align")
        return torch.cat(leaves)

    with _Downcast() as cast:
        base = outputs(theta)
    tol = min(max(1e-9, 100 * cast.eps), 1e-5)  # the rounding of float32 where the forward computes in it

    def keeps(elements, scales=None, within=sym):
        return _agree(outputs(within.transform(theta, elements, scales or {})), base, tol)

    drop = set()
    for step in sym.matching_steps:
        for _ in range(trials):
            perms, scales = sym.random(generator=gen, rescale=True)
            perms = {n: perms[n] for n in step}
            scales = {n: s for n, s in scales.items() if n in step}
            if not keeps(perms):
                drop.update(step)
                sym.skipped += (f"{', '.join(step)}: a permutation changed the outputs",)
                break
            if scales and not keeps(perms, scales):
                _no_rescaling(sym, step)
            if step == ["resid"] and not sym.layer_norm and not keeps({"resid": _invertible(sym, "resid", gen)}):
                _no_rescaling(sym, step)
                sym.layer_norm = True
            if len(step) == 2 and not keeps(dict(zip(step, _head_maps(sym, gen)))):
                drop.update(step)
                sym.skipped += (f"{step[0][:-3]}: a rotation inside a head changed the outputs",)
                break
    kept = [g for g in sym.groups if g.name not in drop]
    out = UserTransformerSymmetry(sym.layout, kept, sym.heads, sym.d_head, sym.layer_norm, sym.skipped)
    perms, scales = out.random(generator=gen, rescale=True)
    if kept and not keeps(perms, scales, out):
        raise LandscapeError(f"the symmetry found for {type(module).__name__} does not keep its outputs together; "
                             "connect without alignment (--align none)")
    return out


class _Downcast(TorchDispatchMode):
    """The coarsest machine epsilon an operation of a float64 forward casts float64 values to (``x.float()``)."""

    eps = torch.finfo(torch.float64).eps

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if any(isinstance(a, torch.Tensor) and a.dtype in (torch.float64, torch.complex128)
               for a in tree_leaves((args, kwargs))):
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()):
                    self.eps = max(self.eps, torch.finfo(t.dtype).eps)
        return out


def _agree(out, base, tol) -> bool:
    """The same outputs: no NaN, the same infinite entries (a masked logit), the finite ones within ``tol``."""
    inf = base.isinf()
    if bool(out.isnan().any() | base.isnan().any()) or not torch.equal(out.isinf(), inf) or not torch.equal(
            out[inf], base[inf]):
        return False
    gap = (out - base)[~inf].abs()
    return not gap.numel() or float(gap.max()) <= tol * (1 + float(base[~inf].abs().max()))


def _no_rescaling(sym, step):
    sym.groups = tuple(UnitGroup(g.name, g.size, tuple(Axis(a.name, a.axis, a.block, "passive") for a in g.axes),
                                 None, g.tap, g.tap_dim) if g.name in step else g for g in sym.groups)


def _invertible(sym, name, gen):
    n = sym._group(name).size
    return torch.eye(n, dtype=torch.float64) + 0.3 * torch.randn(n, n, generator=gen, dtype=torch.float64)


def _head_maps(sym, gen):
    sigma = torch.randperm(sym.heads, generator=gen)
    eye = torch.eye(sym.d_head, dtype=torch.float64)
    return [orthogonal._heads_matrix(sigma, [eye + 0.3 * torch.randn(sym.d_head, sym.d_head, generator=gen,
                                                                      dtype=torch.float64) for _ in sigma])
            for _ in ("qk", "vo")]
