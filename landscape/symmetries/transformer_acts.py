"""Activation matching of the built-in transformer: each group matched on what it computes over the data.

Weight matching (:func:`.orthogonal.orthogonal_matching`) makes two transformers' *weights* alike; between two
narrow memorizing seeds that raises the linear barrier (the midpoint keeps its size but computes neither network).
Activation matching asks instead which element g of the symmetry group makes b's hidden values equal a's on the
training data (Ainsworth, Hayase & Srinivasa, ICLR 2023, Section 3.1; for transformers Verma & Elbayad, 2024, and
Imfeld et al., ICLR 2024, match the residual stream and the heads on activations):

- ``resid``: the residual stream at every position, after the embedding and after each block, stacked over the
  samples: max Σ ⟨x_a, T x_b⟩ over orthogonal T (Procrustes) without LayerNorm; with LayerNorm, where only
  permutations are exact, the permutation pairing the most correlated dimensions;
- each block's heads: per slot s of a and head h of b, the rotation R maximising Σ ⟨q_a,s, R q_b,h⟩ + ⟨k_a,s, R k_b,h⟩
  (queries and keys turn together) and the one of the values; heads are assigned by the sum of the two optima;
- each block's MLP units: the permutation pairing the most correlated hidden values (after the activation).

A group's element does not change the other groups' activations (b's function, and so every hidden value up to the
element acting on it, is kept), so the groups are matched independently, each exactly. The continuous groups are
used where :attr:`TransformerSymmetry.matching` says ``"orthogonal"`` (the default); with ``"permutation"`` the
rotations are replaced by assignments of dimensions.
"""

from __future__ import annotations

import torch
from ..problems.fcall import functional_call

from .._errors import LandscapeError
from .orthogonal import _heads_matrix, _lap, orthogonal_groups, procrustes


def transformer_activations(problem, theta: torch.Tensor, *, samples: int | None = None,
                            split: str = "train") -> dict[str, torch.Tensor]:
    """The hidden values of one transformer θ on ``split`` (float64), each with its units last.

    Returns
    -------
    dict of str to Tensor
        ``"resid"`` [M·(layers + 1)·T, d_model]: the stream at every position after the embedding and after each
        block; per block i ``"blocks.i.q"``, ``".k"``, ``".v"`` [M·T, heads, d_head] and ``"blocks.i.mlp"``
        [M·T, d_mlp] (after the activation).
    """
    module = problem.module_
    x = problem.data(split)[0]
    if samples is not None:
        if samples < 1:
            raise LandscapeError(f"samples must be >= 1, got {samples}")
        x = x[:samples]
    cfg = module.config
    heads, d_head = cfg["heads"], cfg["d_head"]
    taps, hooks = {"resid": []}, []

    def keep(name, value):
        taps.setdefault(name, []).append(value.detach())

    def on(mod, name, pre=False):
        if pre:
            hooks.append(mod.register_forward_pre_hook(lambda m, args: keep(name, args[0])))
        else:
            hooks.append(mod.register_forward_hook(lambda m, args, out: keep(name, out)))

    for i, block in enumerate(module.blocks):
        on(block, "resid", pre=True)
        for part in "qkv":
            on(getattr(block.attn, part), f"blocks.{i}.{part}")
        on(block.act, f"blocks.{i}.mlp")
    on(module.ln_f, "resid", pre=True)  # the stream after the last block (ln_f is an Identity without LayerNorm)
    params = problem.layout.unflatten(theta.detach().to(torch.float64))
    buffers = {n: b.to(torch.float64) if b.is_floating_point() else b for n, b in module.named_buffers()}
    try:
        with torch.no_grad():
            functional_call(module, (params, buffers), (x.to(theta.device),))
    finally:
        for h in hooks:
            h.remove()
    out = {}
    for name, values in taps.items():
        v = torch.cat([t.reshape(-1, t.shape[-1]) for t in values])
        out[name] = v.reshape(-1, heads, d_head) if name[-2:] in (".q", ".k", ".v") else v
    return out


def activation_matching(sym, problem, theta_a: torch.Tensor, theta_b: torch.Tensor, *, samples: int | None = None,
                        split: str = "train"):
    """Activation matching over every group of a :class:`~.transformer.TransformerSymmetry` (module docstring).

    Parameters
    ----------
    theta_a : Tensor, shape (D,)
    theta_b : Tensor, shape (K, D)

    Returns
    -------
    maps : dict of str to Tensor
        Per group, matrices (K, n, n) of the continuous groups or permutations (K, n), as weight matching returns.
    info : dict
        ``groups`` (the group each was matched over), ``samples``, and per group the mean correlation of a's units
        with b's before and after (``correlation``).
    """
    orthogonal = sym.matching == "orthogonal"
    acts_a = transformer_activations(problem, theta_a, samples=samples, split=split)
    rows, width = acts_a["resid"].shape
    if rows < (width if orthogonal else 2):  # fewer values than the fit has freedom: any match would look perfect
        raise LandscapeError(f"activation matching over {'O' if orthogonal else 'S'}({width}) needs at least "
                             f"{width if orthogonal else 2} values of each unit; samples={samples} gives {rows}: "
                             "give more samples (--samples) or use the weight method")
    per_b = [transformer_activations(problem, t, samples=samples, split=split) for t in theta_b]
    maps, corr = {}, {}
    for acts_b in per_b:
        found = _match_one(sym, acts_a, acts_b, orthogonal)
        for name, element in found.items():
            maps.setdefault(name, []).append(element)
            before, after = _agreement(sym, name, acts_a, acts_b, element)
            entry = corr.setdefault(name, {"before": [], "after": []})
            entry["before"].append(before)
            entry["after"].append(after)
    maps = {name: torch.stack(m).to(theta_b.device) for name, m in maps.items()}
    groups = orthogonal_groups(sym) if orthogonal else {
        g.name: f"permutation S({g.size})" + (" with positive rescaling" if g.rescalable else "") for g in sym.groups}
    n = problem.n_samples(split) if samples is None else min(samples, problem.n_samples(split))
    return maps, {"groups": groups, "samples": n, "correlation": corr}


def _match_one(sym, acts_a, acts_b, orthogonal: bool) -> dict[str, torch.Tensor]:
    """The element of every group taking b's hidden values nearest a's (one b)."""
    out = {}
    xa, xb = acts_a["resid"], acts_b["resid"]
    if orthogonal and not sym.layer_norm:
        out["resid"] = procrustes(xa.T @ xb)[1]
    else:
        out["resid"] = _lap(_correlation(xa, xb))[1]
    h = sym.heads
    for i in range(sym.blocks):
        pre = f"blocks.{i}."
        qa, ka, va = (acts_a[pre + p] for p in "qkv")
        qb, kb, vb = (acts_b[pre + p] for p in "qkv")
        solve = procrustes if orthogonal else _inner_assignment
        qk = [[solve(qa[:, s].T @ qb[:, t] + ka[:, s].T @ kb[:, t]) for t in range(h)] for s in range(h)]
        vo = [[solve(va[:, s].T @ vb[:, t]) for t in range(h)] for s in range(h)]
        value = torch.tensor([[qk[s][t][0] + vo[s][t][0] for t in range(h)] for s in range(h)], dtype=torch.float64)
        sigma = _lap(value)[1]
        for part, solved in (("qk", qk), ("vo", vo)):
            matrix = _heads_matrix(sigma, [solved[s][int(sigma[s])][1] for s in range(h)])
            out[pre + "attn." + part] = matrix if orthogonal else matrix.argmax(-1)
        out[pre + "mlp"] = _lap(_correlation(acts_a[pre + "mlp"], acts_b[pre + "mlp"]))[1]
    return {g.name: out[g.name] for g in sym.groups}


def _inner_assignment(cost: torch.Tensor):
    """max ⟨C, P⟩ over permutation matrices P: (the maximum, P as a float matrix)."""
    value, cols = _lap(cost)
    return value, torch.nn.functional.one_hot(cols, cost.shape[-1]).to(torch.float64)


def _correlation(xa: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
    """Pearson correlations [n, n] between a's units (columns of xa [M, n]) and b's; silent units correlate 0."""
    za, zb = (z - z.mean(0) for z in (xa, xb))
    za = za / za.norm(dim=0).clamp_min(1e-300)
    zb = zb / zb.norm(dim=0).clamp_min(1e-300)
    return za.T @ zb


def _agreement(sym, name, acts_a, acts_b, element) -> tuple[float, float]:
    """Mean correlation of a's unit j with b's unit j, before and after b's values are moved by ``element``."""
    if name == "resid":
        xa, xb = acts_a["resid"], acts_b["resid"]
    elif name.endswith(".mlp"):
        xa, xb = acts_a[name], acts_b[name]
    else:
        pre, part = name.rsplit(".attn.", 1)
        keys = "qk" if part == "qk" else "v"
        xa = torch.cat([acts_a[f"{pre}.{p}"].flatten(1) for p in keys])
        xb = torch.cat([acts_b[f"{pre}.{p}"].flatten(1) for p in keys])
    matrix = element if element.is_floating_point() else torch.nn.functional.one_hot(element, xb.shape[1]).double()
    before = _correlation(xa, xb).diagonal().mean()
    after = _correlation(xa, xb @ matrix.T).diagonal().mean()
    return float(before), float(after)
