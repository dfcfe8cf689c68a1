"""The continuous (orthogonal) symmetries of the built-in transformer and weight matching over them.

Without LayerNorm every read and write of the residual stream is linear, so any orthogonal map O of its d_model
dimensions keeps the function: the columns of the embedding, the positions, the inputs of ``q``, ``k``, ``v``,
``fc1`` and the unembedding's input turn by O, and so do the outputs of ``out`` and ``fc2`` with their biases. Per
head, one orthogonal R on its query and key dimensions together keeps q·kᵀ, and one on its value dimensions and
the matching columns of ``out`` keeps attention·v·W_out: true with or without LayerNorm. With LayerNorm (a gain
and a bias per dimension) only permutations of the stream are exact; the MLP's hidden units, behind an
elementwise activation, only permute (and rescale with ReLU). Permutations are a finite subgroup of these
continuous groups, which is why permutation matching moves two seeds little closer.

A group element is given per group either as a permutation (LongTensor (n,) or (K, n), as in :mod:`.groups`)
or as an invertible matrix T (float (n, n) or (K, n, n)), acting on the group's unit slices U (n × m): the
*head* entries become T·U, the *tail* entries T⁻ᵀ·U (= T·U when T is orthogonal), the passive ones (LayerNorm gain
and bias, only ever permuted) T·U.

Weight matching (:func:`orthogonal_matching`) maximises ⟨θ_a, g·θ_b⟩ by coordinate ascent over the groups, as
for permutations (Ainsworth et al., ICLR 2023, Alg. 1); the step of an orthogonal group given the others is the
orthogonal Procrustes problem max ⟨C, T⟩ over T ∈ O(n), solved by the SVD C = U S Vᵀ, T = U Vᵀ (Schönemann 1966),
and the step of a block's attention assigns heads as wholes (a linear assignment whose costs are the nuclear
norms of the head-to-head blocks of the query/key and value/output costs) and turns each matched head by the
Procrustes solution of its block. Every step solves its subproblem exactly, so the objective never decreases.
"""

from __future__ import annotations

import torch

from .._random import resolve_generator
from .groups import Symmetry, _blocks, units


def orthogonal_groups(sym) -> dict[str, str]:
    """Per group, the symmetry group the transformer's weight matching uses on it, in words."""
    out = {}
    for g in sym.groups:
        if g.name == "resid":
            out[g.name] = (f"permutation S({g.size}) (LayerNorm: only permutations of the stream are exact)"
                           if sym.layer_norm else f"orthogonal O({g.size})")
        elif ".attn." in g.name:
            out[g.name] = f"{sym.heads} heads permuted, orthogonal O({sym.d_head}) inside each"
        else:
            out[g.name] = f"permutation S({g.size})" + (" with positive rescaling" if g.rescalable else "")
    return out


def is_matrix(value: torch.Tensor) -> bool:
    """Whether a group element is a matrix (float) rather than a permutation (integer)."""
    return value.is_floating_point()


def act_linear(sym, theta: torch.Tensor, maps: dict) -> torch.Tensor:
    """θ with each group's unit slices mapped by its matrix T (heads T·U, tails T⁻ᵀ·U, passive T·U).

    Parameters
    ----------
    theta : Tensor, shape (D,) or (K, D)
    maps : dict of str to float Tensor, shape (n, n) or (K, n, n)
    """
    nb = theta.dim() - 1
    out = theta.clone()
    views, source, new = sym.layout.unflatten(out), sym.layout.unflatten(theta), {}
    for name, t_map in maps.items():
        group = sym._group(name)
        t_map = t_map.to(theta.device, torch.float64)
        tails = torch.linalg.inv(t_map).transpose(-1, -2)
        for ax in group.axes:
            if ax.role == "buffer":
                continue
            t = new.get(ax.name, source[ax.name])
            new[ax.name] = _apply(t, ax.axis, ax.block, nb, tails if ax.role == "tail" else t_map)
    for name, t in new.items():
        views[name].copy_(t)
    return out


def _apply(t, axis, block, nb, matrix):
    v, ax = _blocks(t, axis, block, nb)
    moved = v.movedim(ax, nb)
    flat = moved.reshape(*moved.shape[:nb + 1], -1)
    res = (matrix.to(torch.float64) @ flat.to(torch.float64)).to(t.dtype)
    return res.reshape(moved.shape).movedim(nb, ax).reshape(t.shape)


def moved_rows(element: torch.Tensor) -> torch.Tensor:
    """How many units an element moves: of a permutation, entries off the identity; of a matrix, rows off it."""
    if not is_matrix(element):
        return (element != torch.arange(element.shape[-1], device=element.device)).sum(-1)
    eye = torch.eye(element.shape[-1], dtype=element.dtype, device=element.device)
    return ((element - eye).abs().amax(-1) > 1e-12).sum(-1)


def as_matrix(perm: torch.Tensor) -> torch.Tensor:
    """The matrix P of a permutation (row j picks unit perm[j]): P·U == U[perm]."""
    n = perm.shape[-1]
    return torch.nn.functional.one_hot(perm, n).to(torch.float64)


def random_orthogonal(n: int, generator: torch.Generator) -> torch.Tensor:
    """A Haar-random orthogonal (n, n) matrix (QR of a Gaussian matrix, signs fixed by R's diagonal)."""
    q, r = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))[None, :]


def random_element(sym, *, generator: torch.Generator | None = None) -> dict:
    """A random element of the continuous group: a Haar-random orthogonal map of the stream (a permutation with
    LayerNorm), per block a permutation of the heads and Haar-random rotations inside each head (query/key and
    value/output apart), and permutations of the MLP units."""
    generator = resolve_generator(generator)
    out = {}
    for g in sym.groups:
        if g.name == "resid":
            out[g.name] = (torch.randperm(g.size, generator=generator) if sym.layer_norm
                           else random_orthogonal(g.size, generator))
        elif g.name.endswith(".attn.qk"):  # one permutation of the heads for queries/keys and values/outputs
            sigma = torch.randperm(sym.heads, generator=generator)
            for part in ("qk", "vo"):
                out[g.name[:-2] + part] = _heads_matrix(sigma, [random_orthogonal(sym.d_head, generator)
                                                                for _ in sigma])
        elif ".attn." in g.name:
            continue
        else:
            out[g.name] = torch.randperm(g.size, generator=generator)
    return out


def _heads_matrix(sigma, rotations):
    """The (H·d, H·d) map that moves b's head σ(s) into slot s, turned by rotations[s]."""
    d = rotations[0].shape[0]
    t = torch.zeros(len(sigma) * d, len(sigma) * d, dtype=torch.float64)
    for s, h in enumerate(sigma.tolist()):
        t[s * d:(s + 1) * d, h * d:(h + 1) * d] = rotations[s]
    return t


def procrustes(cost: torch.Tensor):
    """max ⟨C, T⟩ over orthogonal T for C (n, n): (the maximum, the nuclear norm of C; T = U Vᵀ)."""
    u, s, vh = torch.linalg.svd(cost.to(torch.float64))
    return float(s.sum()), u @ vh


def orthogonal_matching(sym, theta_a, theta_b, *, generator=None, max_iter=100, tol=1e-12):
    """Weight matching over the continuous groups (see the module docstring): coordinate ascent on ⟨θ_a, g·θ_b⟩.

    Parameters
    ----------
    sym : TransformerSymmetry
    theta_a : Tensor, shape (D,)
    theta_b : Tensor, shape (K, D)
    max_iter : int
        Most sweeps; the search ends after a sweep that changes no entry of any map by more than ``tol``.

    Returns
    -------
    maps : dict of str to Tensor
        Orthogonal matrices (K, n, n) for the stream (without LayerNorm) and the attention groups, permutations
        (K, n) for the MLPs (and the stream with LayerNorm).
    info : dict
        ``groups`` (which symmetry group each was matched over), ``sweeps``, ``objective`` before and after.
    """
    generator = resolve_generator(generator)
    a = theta_a.detach().to("cpu", torch.float64)  # small assignments and SVDs: on the CPU
    b = theta_b.detach().to("cpu", torch.float64)
    steps = getattr(sym, "matching_steps", None) or [["resid"]] + [
        [f"blocks.{i}.{g}" for g in parts] for i in range(sym.blocks) for parts in (("attn.qk", "attn.vo"), ("mlp",))]
    order = [torch.randperm(len(steps), generator=generator).tolist() for _ in range(max_iter)]
    pa = sym.layout.unflatten(a)
    all_maps, sweeps_done, before, after = {}, [], [], []
    for k in range(b.shape[0]):
        maps = {g.name: torch.arange(g.size) for g in sym.groups}
        value = before_k = float(_objective(sym, pa, b[k], maps))
        sweeps = 0
        for sweeps in range(1, max_iter + 1):
            change = 0.0
            for i in order[sweeps - 1]:
                names = steps[i]
                others = {n: m for n, m in maps.items() if n not in names}
                pb = sym.layout.unflatten(sym.transform(b[k], others))
                costs = [sym._cost(pa, {x: t[None] for x, t in pb.items()}, sym._group(n))[0] for n in names]
                if len(names) == 2:
                    new = _heads(costs, sym.heads, sym.d_head)
                elif names[0] == "resid" and not sym.layer_norm:
                    new = (procrustes(costs[0])[1],)
                else:
                    new = (_lap(costs[0])[1],)
                change = max(change, *(_change(maps[n], m) for n, m in zip(names, new)))
                maps.update(zip(names, new))
            value = float(_objective(sym, pa, b[k], maps))
            if change <= tol:
                break
        for name, m in maps.items():
            all_maps.setdefault(name, []).append(m)
        sweeps_done.append(sweeps)
        before.append(before_k)
        after.append(value)
    maps = {n: torch.stack(ms).to(theta_b.device) for n, ms in all_maps.items()}
    return maps, {"groups": orthogonal_groups(sym), "sweeps": sweeps_done,
                  "objective": {"before": before, "after": after}}


def _heads(costs, heads, d):
    """The best (qk, vo) maps for costs (n, n): per pair of slot s and head h the Procrustes solutions of their
    blocks, then the assignment of heads maximising the sum of the blocks' nuclear norms."""
    blocks = [c.reshape(heads, d, heads, d).permute(0, 2, 1, 3) for c in costs]  # [slot, head, d, d]
    solved = [[[procrustes(c[s, h]) for h in range(heads)] for s in range(heads)] for c in blocks]
    value = torch.tensor([[solved[0][s][h][0] + solved[1][s][h][0] for h in range(heads)] for s in range(heads)],
                         dtype=torch.float64)
    sigma = _lap(value)[1]
    return tuple(_heads_matrix(sigma, [part[s][int(sigma[s])][1] for s in range(heads)]) for part in solved)


def _change(old, new):
    """Largest change of an element's entries (a permutation counts as its matrix)."""
    if not is_matrix(old) and not is_matrix(new):
        return float((old != new).any())
    old, new = (m if is_matrix(m) else as_matrix(m) for m in (old, new))
    return float((old - new).abs().max())


def _objective(sym, pa, b, maps):
    names = sorted({ax.name for g in sym.groups for ax in g.axes if ax.role != "buffer"})
    pb = sym.layout.unflatten(sym.transform(b, maps))
    return sum((pa[n] * pb[n]).sum() for n in names)


def transform(sym, theta, perms=None, scales=None):
    """``rescale(linear(permute(θ)))``: the permutations (integer elements), then the matrices, then the scales."""
    perms = perms or {}
    ints = {n: p for n, p in perms.items() if not is_matrix(p)}
    mats = {n: p for n, p in perms.items() if is_matrix(p)}
    out = Symmetry.permute(sym, theta, ints) if ints else theta
    out = act_linear(sym, out, mats) if mats else out
    return Symmetry.rescale(sym, out, scales) if scales else out



def _lap(cost: torch.Tensor):
    """Maximising assignment of an (n, n) cost: (its value, the column of each row as a LongTensor)."""
    from scipy.optimize import linear_sum_assignment

    c = cost.detach().to("cpu", torch.float64)
    rows, cols = linear_sum_assignment(c.numpy(), maximize=True)
    return float(c[rows, cols].sum()), torch.as_tensor(cols, dtype=torch.long)


# ------------------------------------------------------------------ the balanced gauge of the linear groups
def gl_balance(sym, theta: torch.Tensor, *, tol: float = 1e-12, max_iter: int = 1000):
    """The least-norm point of θ's orbit under the invertible maps that keep the function without weight decay.

    Per group, given the others, min ‖A·U_head‖² + ‖A⁻ᵀ·U_tail‖² over A has the closed form A = M^½ with
    M P M = Q, P = U_head U_headᵀ, Q = U_tail U_tailᵀ (M = P^-½ (P^½ Q P^½)^½ P^-½): any A ∈ GL(d_model) on the
    stream without LayerNorm, one A ∈ GL(d_head) per head on queries/keys and on values/outputs, a positive
    diagonal on ReLU MLP units (the balance of :meth:`Symmetry.balance`). Groups are swept until no map moves by
    more than ``tol``. The balanced point is unique up to the orthogonal maps (and permutations) matched after.

    Returns
    -------
    balanced : Tensor, same shape as ``theta``
    maps : dict of str to Tensor (float64), shape (n, n) or (K, n, n): ``balanced == act_linear(θ, maps)``
    sweeps : int
    """
    if theta.dim() == 2:
        rows = [gl_balance(sym, t, tol=tol, max_iter=max_iter) for t in theta]
        maps = {n: torch.stack([r[1][n] for r in rows]) for n in rows[0][1]}
        return torch.stack([r[0] for r in rows]), maps, max(r[2] for r in rows)
    work = theta.detach().to(torch.float64)
    kinds = {}
    for g in sym.groups:
        if ".attn." in g.name:
            kinds[g.name] = sym.d_head
        elif g.name == "resid" and not sym.layer_norm:
            kinds[g.name] = g.size
        elif g.rescalable and g.name != "resid":
            kinds[g.name] = 1
    total = {n: torch.eye(sym._group(n).size, dtype=torch.float64, device=theta.device) for n in kinds}
    sweeps = 0
    for sweeps in range(1, max_iter + 1):
        worst = 0.0
        for name, block in kinds.items():
            group, params = sym._group(name), sym.layout.unflatten(work)
            p = sum(_gram(params[x.name], x) for x in group.axes if x.role == "head")
            q = sum(_gram(params[x.name], x) for x in group.axes if x.role == "tail")
            a = torch.block_diag(*[_balancing(p[i:i + block, i:i + block], q[i:i + block, i:i + block])
                                   for i in range(0, group.size, block)])
            worst = max(worst, float((a - torch.eye(group.size, dtype=a.dtype, device=a.device)).abs().max()))
            work = act_linear(sym, work, {name: a})
            total[name] = a @ total[name]
        if worst <= tol:
            break
    return work.to(theta.dtype), total, sweeps


def _gram(t, ax):
    u = units(t.to(torch.float64), ax.axis, ax.block, 0)
    return u @ u.T


def _sqrtm(m, inverse=False):
    w, v = torch.linalg.eigh(m)
    w = w.clamp_min(1e-300).sqrt()
    return (v / w if inverse else v * w) @ v.T


def _balancing(p, q):
    """A = M^½ with M P M = Q (the identity where P or Q is singular: units with no head or no tail weights)."""
    scale = float(max(p.abs().max(), q.abs().max()))
    if scale == 0 or min(float(torch.linalg.eigvalsh(p)[0]), float(torch.linalg.eigvalsh(q)[0])) <= 1e-12 * scale:
        return torch.eye(p.shape[0], dtype=p.dtype, device=p.device)
    ph, pih = _sqrtm(p), _sqrtm(p, inverse=True)
    m = pih @ _sqrtm(ph @ q @ ph) @ pih
    return _sqrtm((m + m.T) / 2)


def compose(perms: dict, before_a: dict, before_b: dict) -> tuple[dict, dict]:
    """The map from b to the aligned b when both were balanced first (``balanced = A·θ``): A_a⁻¹ · T · A_b per
    group, as matrices (no separate scales)."""
    out = dict(perms)
    for name, a_b in before_b.items():
        t = perms[name] if is_matrix(perms[name]) else as_matrix(perms[name])
        out[name] = torch.linalg.solve(before_a[name].to(t), t @ a_b.to(t))
    return out, {}
