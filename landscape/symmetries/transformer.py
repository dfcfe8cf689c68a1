"""The permutation (and rescaling) symmetry of the built-in transformer
(:class:`~landscape.problems.transformer.Transformer`), and weight matching over all of it.

What keeps the function, per block i (``blocks.i.``):

- ``mlp``: the d_mlp hidden units (rows of ``fc1``, its bias, columns of ``fc2``); rescalable (degree 1) with ReLU;
- ``attn.qk``: the H·d_head query/key dimensions (rows of ``q`` and ``k``, their biases), q·c and k/c (degree 1);
- ``attn.vo``: the H·d_head value dimensions (rows of ``v``, its bias, columns of ``out``), v·c and out/c;
- whole heads: a permutation σ of the H heads moves head h's query, key and value rows and its output columns to
  slot σ⁻¹(h) together. The ``qk`` and ``vo`` permutations are therefore *coupled*: each maps the head blocks onto
  head blocks by the same σ, and inside each block permutes freely (one permutation of the query and key
  columns of a head, another of its value and output columns);

and ``resid``, the d_model dimensions of the residual stream shared by every block (the embedding and position
columns, the rows of every ``out`` and ``fc2`` and their biases, the columns of every ``q``, ``k``, ``v``, ``fc1`` and
of the unembedding, every LayerNorm's gain and bias); rescalable without LayerNorm (which normalizes across it).
A permutation inside a head and a permutation of heads do not commute, so the heads are not a group of their own:
``qk`` and ``vo`` are flat permutations of H·d_head entries restricted to the coupled form, and weight matching
(:meth:`TransformerSymmetry.weight_matching`) solves the heads and the dimensions inside them together (an outer
assignment of heads whose costs are the inner assignments of their dimensions), exactly, given the other groups
(Ainsworth, Hayase & Srinivasa, ICLR 2023, Alg. 1, with the residual stream of their transformer appendix;
Verma & Elbayad 2024 match heads as wholes).

These permutations are a finite subgroup of the transformer's continuous symmetries (an orthogonal map of the
stream without LayerNorm, a rotation inside each head); weight matching runs over those by default
(:attr:`TransformerSymmetry.matching`, :mod:`.orthogonal`), the result's ``info["method"]["groups"]`` says which
group each was matched over.
"""

from __future__ import annotations

import torch

from .._errors import LandscapeError
from .._random import resolve_generator
from . import orthogonal
from .orthogonal import _lap
from .groups import Axis, Symmetry, UnitGroup, units


class TransformerSymmetry(Symmetry):
    """:class:`Symmetry` of a :class:`~landscape.problems.transformer.Transformer`: coupled ``qk``/``vo`` groups
    (see the module docstring), weight and activation matching of its own."""

    #: What weight matching aligns over: ``"orthogonal"`` (default: the continuous groups where they are exact,
    #: :mod:`.orthogonal`) or ``"permutation"`` (permutations and rescalings only).
    matching = "orthogonal"

    def __init__(self, layout, groups, heads: int, d_head: int, blocks: int, layer_norm: bool = False):
        super().__init__(layout, groups, None, {})
        self.heads, self.d_head, self.blocks, self.layer_norm = heads, d_head, blocks, layer_norm

    def transform(self, theta, perms=None, scales=None):
        """As :meth:`Symmetry.transform`; an element may also be a matrix (float (n, n) or (K, n, n)) of the
        continuous group (:func:`.orthogonal.transform`)."""
        return orthogonal.transform(self, theta, perms, scales)

    def inverse(self, perms: dict, scales: dict | None = None):
        """The inverse element; with matrices the scales are folded into them (diag(s)·T, inverted)."""
        if not any(orthogonal.is_matrix(p) for p in perms.values()):
            return super().inverse(perms, scales)
        scales = scales or {}
        maps = {n: orthogonal.as_matrix(p) if not orthogonal.is_matrix(p) else p for n, p in perms.items()}
        maps = {n: (scales[n][..., :, None] * m if n in scales else m) for n, m in maps.items()}
        return {n: torch.linalg.inv(m) for n, m in maps.items()}, {}

    def balance(self, theta, **kwargs):
        """:meth:`Symmetry.balance`; with orthogonal matching, the least-norm point under the invertible maps
        (:func:`.orthogonal.gl_balance`), whose "scales" are matrices, composed by :meth:`compose`."""
        if self.matching != "orthogonal":
            return super().balance(theta, **kwargs)
        return orthogonal.gl_balance(self, theta, **kwargs)

    def compose(self, perms, scales_a, scales_b):
        """The elements taking b to the aligned b, given b's and a's balancing (see :func:`align`)."""
        if self.matching != "orthogonal":
            return perms, {g: scales_b[g].gather(-1, perms[g]) / scales_a[g] for g in scales_b}
        return orthogonal.compose(perms, scales_a, scales_b)

    def activation_matching(self, problem, theta_a, theta_b, *, samples=None, split="train"):
        """Activation matching (the ``"activation"`` aligner) over every group: :mod:`.transformer_acts`."""
        from .transformer_acts import activation_matching

        return activation_matching(self, problem, theta_a, theta_b, samples=samples, split=split)

    @property
    def graph(self):
        raise LandscapeError("the built-in transformer's symmetry has no traced graph: its activation matching reads "
                             "its own taps (landscape.symmetries.transformer_acts)")

    @graph.setter
    def graph(self, value):
        pass

    def random(self, *, generator: torch.Generator | None = None, rescale: bool = False, spread: float = 2.0):
        """A random element (see :meth:`Symmetry.random`) of the coupled form: per block one permutation of the
        heads, and inside each head independent permutations of its query/key and of its value/output dims."""
        generator = resolve_generator(generator)
        perms, scales = super().random(generator=generator, rescale=rescale, spread=spread)
        h, dh = self.heads, self.d_head
        for i in range(self.blocks):
            sigma = torch.randperm(h, generator=generator)
            for part in ("qk", "vo"):
                inner = torch.stack([torch.randperm(dh, generator=generator) for _ in range(h)])
                perms[f"blocks.{i}.attn.{part}"] = (sigma[:, None] * dh + inner[sigma]).reshape(-1)
        return perms, scales

    def head_permutation(self, perm: torch.Tensor) -> torch.Tensor | None:
        """The heads a flat ``qk``/``vo`` permutation (n,) moves, σ (H,), or None if it is not of the coupled form
        (a head's dimensions sent to several heads)."""
        blocks = perm.reshape(self.heads, self.d_head) // self.d_head
        if not bool((blocks == blocks[:, :1]).all()):
            return None
        return blocks[:, 0]

    def weight_matching(self, theta_a, theta_b, *, generator=None, max_iter=100):
        """Weight matching (the ``"weight"`` aligner) over every group. With :attr:`matching` ``"orthogonal"``
        (the default) over the continuous groups where they are exact (:func:`.orthogonal.orthogonal_matching`);
        with ``"permutation"``, over permutations only, as follows: coordinate descent maximising
        ⟨θ_a, π(θ_b)⟩, one step per ``resid``, per block's ``mlp`` and per block's attention (its heads and the
        dimensions inside them jointly).

        Parameters
        ----------
        theta_a : Tensor, shape (D,)
        theta_b : Tensor, shape (K, D)

        Returns
        -------
        perms : dict of str to LongTensor, shape (K, n)
        info : dict
            ``sweeps``, ``objective`` before and after.
        """
        if self.matching == "orthogonal":
            return orthogonal.orthogonal_matching(self, theta_a, theta_b, generator=generator, max_iter=max_iter)
        generator = resolve_generator(generator)
        k = theta_b.shape[0]
        a = theta_a.detach().to(torch.float64)
        b = theta_b.detach().to(torch.float64)
        perms = self.identity(k, device=b.device)
        steps = getattr(self, "matching_steps", None) or [["resid"]] + [
            [f"blocks.{i}.{g}" for g in parts] for i in range(self.blocks) for parts in (("attn.qk", "attn.vo"), ("mlp",))]
        pa = self.layout.unflatten(a)
        before = self._objective(a, b, perms)
        sweeps = 0
        for sweeps in range(1, max_iter + 1):
            improved = False
            for i in torch.randperm(len(steps), generator=generator).tolist():
                names = steps[i]
                others = dict(perms)
                for name in names:
                    others[name] = torch.arange(self._group(name).size, device=b.device).expand(k, -1)
                pb = self.layout.unflatten(self.permute(b, others))
                costs = [self._cost(pa, pb, self._group(name)) for name in names]
                new = (_assign(costs[0]),) if len(names) == 1 else self._assign_heads(*costs)
                gain = sum(c.gather(2, n[..., None]).sum((1, 2)) - c.gather(2, perms[name][..., None]).sum((1, 2))
                           for c, n, name in zip(costs, new, names))
                scale = max(float(c.abs().amax()) for c in costs)
                better = gain > 1e-12 * max(scale, 1.0) * sum(c.shape[-1] for c in costs)
                if bool(better.any()):
                    improved = True
                    for name, n in zip(names, new):
                        perms[name] = torch.where(better[:, None], n, perms[name])
            if not improved:
                break
        after = self._objective(a, b, perms)
        return perms, {"groups": {g.name: "permutation" + (" with rescaling" if g.rescalable else "")
                                  for g in self.groups}, "sweeps": sweeps, "objective": {"before": before.tolist(), "after": after.tolist()}}

    # -------------------------------------------------------------- helpers
    @staticmethod
    def _cost(pa, pb, group):
        """[K, n, n]: inner products of a's unit j and b's unit l over every tensor the group's units run through."""
        cost = 0
        for ax in group.axes:
            ua = units(pa[ax.name], ax.axis, ax.block, 0)  # [n, m]
            ub = units(pb[ax.name], ax.axis, ax.block, 1)  # [K, n, m]
            cost = cost + ua @ ub.transpose(1, 2)
        return cost

    def _assign_heads(self, cost_qk, cost_vo):
        """The best coupled (qk, vo) permutations for costs [K, n, n]: per pair of head slots (s, h), the best inner
        assignments of their query/key and value/output dimensions; then the best assignment of heads."""
        h, dh = self.heads, self.d_head
        out_qk, out_vo = [], []
        for cq, cv in zip(cost_qk.cpu(), cost_vo.cpu()):
            blocks = [c.reshape(h, dh, h, dh).permute(0, 2, 1, 3) for c in (cq, cv)]  # [slot, head, dh, dh]
            inner = [[[_lap(c[s, t]) for t in range(h)] for s in range(h)] for c in blocks]
            heads = torch.tensor([[sum(v for v, _ in (inner[0][s][t], inner[1][s][t])) for t in range(h)]
                                  for s in range(h)], dtype=torch.float64)
            sigma = _lap(heads)[1]
            for part, out in zip(inner, (out_qk, out_vo)):
                out.append(torch.cat([sigma[s] * dh + part[s][int(sigma[s])][1] for s in range(h)]))
        return torch.stack(out_qk).to(cost_qk.device), torch.stack(out_vo).to(cost_vo.device)

    def _objective(self, a, b, perms):
        names = sorted({ax.name for g in self.groups for ax in g.axes})
        pa, pb = self.layout.unflatten(a), self.layout.unflatten(self.permute(b, perms))
        return sum((pa[n] * pb[n]).flatten(1).sum(1) for n in names)


def _assign(cost: torch.Tensor) -> torch.Tensor:
    return torch.stack([_lap(c)[1] for c in cost]).to(cost.device)


def transformer_symmetry(problem, module) -> TransformerSymmetry | None:
    """The symmetry of ``problem`` if its module is the built-in :class:`Transformer`, else None.

    Returns
    -------
    TransformerSymmetry
        Groups ``resid``, then per block ``blocks.i.attn.qk``, ``blocks.i.attn.vo``, ``blocks.i.mlp``.
    """
    from ..problems.transformer import Transformer

    if type(module) is not Transformer:
        return None
    cfg = module.config
    norm, relu = cfg["layer_norm"], cfg["activation"] == "relu"
    names = set(problem.layout.names)

    def axes(*spec):
        return tuple(Axis(name, axis, 1, role) for name, axis, role in spec if name in names)

    resid = [("embed.weight", 1, "head"), ("pos", 1, "head")]
    groups = []
    for i in range(cfg["layers"]):
        pre = f"blocks.{i}."
        resid += [(pre + "ln1.weight", 0, "passive"), (pre + "ln1.bias", 0, "passive")]
        resid += [(pre + f"attn.{x}.weight", 1, "tail") for x in "qkv"]
        resid += [(pre + "attn.out.weight", 0, "head"), (pre + "attn.out.bias", 0, "head")]
        resid += [(pre + "ln2.weight", 0, "passive"), (pre + "ln2.bias", 0, "passive"), (pre + "fc1.weight", 1, "tail")]
        resid += [(pre + "fc2.weight", 0, "head"), (pre + "fc2.bias", 0, "head")]
        n = cfg["heads"] * cfg["d_head"]
        groups.append(UnitGroup(pre + "attn.qk", n, axes(
            (pre + "attn.q.weight", 0, "head"), (pre + "attn.q.bias", 0, "head"),
            (pre + "attn.k.weight", 0, "tail"), (pre + "attn.k.bias", 0, "tail")), 1.0, "", -1))
        groups.append(UnitGroup(pre + "attn.vo", n, axes(
            (pre + "attn.v.weight", 0, "head"), (pre + "attn.v.bias", 0, "head"),
            (pre + "attn.out.weight", 1, "tail")), 1.0, "", -1))
        groups.append(UnitGroup(pre + "mlp", module.blocks[i].fc1.out_features, axes(
            (pre + "fc1.weight", 0, "head"), (pre + "fc1.bias", 0, "head"), (pre + "fc2.weight", 1, "tail")),
            1.0 if relu else None, "", -1))
    resid += [("ln_f.weight", 0, "passive"), ("ln_f.bias", 0, "passive"), ("unembed.weight", 1, "tail")]
    d_model = module.unembed.in_features
    groups.insert(0, UnitGroup("resid", d_model, axes(*resid), None if norm else 1.0, "", -1))
    return TransformerSymmetry(problem.layout, groups, cfg["heads"], cfg["d_head"], cfg["layers"], bool(norm))
