"""Upper bounds of a network's loss over whole segments of parameter space.

Along a segment θ(s) = c + s·h, s ∈ [−1, 1] (c its midpoint, h half its difference), every weight and
bias is affine in s. Every value inside the network is carried, elementwise and for every sample at
once, as a first-order model in the one variable s (a linear relaxation in s, in the spirit of CROWN,
Zhang et al. 2018, where the perturbed quantity is the parameters, not the input)::

    v(s) = v_c + s·v_s + e,    |e| ≤ v_r.

- ``Linear``: (W_c + s W_h)(h_c + s h_s + e) + b_c + s b_h keeps its constant and linear parts exactly;
  s²·W_h h_s ∈ [0, 1]·W_h h_s goes half to the centre, half to the remainder; the remainders pass
  through |W_c| + |W_h|.
- ReLU: exact where a unit's sign is fixed on the piece; where it can change, the parallel chord
  relaxation relu(z) = λz + μ/2 ± μ/2 on [l, u] (λ = u/(u − l), μ = −lu/(u − l)).
- leaky ReLU (0 ≤ α ≤ 1): α·z + (1 − α)·relu(z), the same chord.
- tanh, sigmoid, GELU (z·Φ(z)): the mean-value form σ(z) = σ(z_c) + σ'(z_c)(z − z_c) ± D·|z − z_c|, with
  D the largest change of σ' over [l, u], exact: σ' takes its extremes on [l, u] at l, u or a zero of
  σ'' inside (0 for tanh and sigmoid, ±√2 for GELU, whose σ'' = φ(z)(2 − z²)).
- softplus: the same form (σ' = sigmoid(βz) is monotone); exact where the piece lies past torch's switch
  to the identity (βz > threshold), and widened by twice the switch's jump where it straddles it.
- square: z² = z_c² + 2 z_c (z − z_c) + (z − z_c)², the last term in [0, ρ²].

Networks beyond plain MLPs (convolutions, pooling, residual additions, frozen BatchNorm) are traced and
propagated with these relaxations by :mod:`.traced`.

The losses (cross-entropy, MSE, L1, exponential) are convex in the network's output, so with the
remainders added in the direction that increases them, each sample's bound is a convex function of
s and so is their mean; its maximum over [−1, 1] is at an end. The weight-decay term is convex in s
too. The bound of a piece is therefore the larger of two evaluations of the relaxed loss, at s = −1
and s = +1, and it tends to the larger endpoint loss as the piece shrinks (the remainders are
second order in its length, except at ReLU units whose sign changes inside it).

Everything is computed in float64, and the result is inflated by a relative 1e-9 (plus 1e-12) to
cover rounding: a bound ≤ u is a proof that the loss of the exact network on the data is ≤ u on the
whole piece, up to that margin.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .layout import Layout

#: Bytes of float64 intermediates one batch of pieces may take: all samples of a piece go together. On the
#: CPU about one digits-MLP piece: a proof of the main job's path ran 1.48 s with 64 MiB, 1.30 s with 16 (cache).
BOUND_BYTES = {"cpu": 16 << 20, "cuda": 1 << 30}
#: Relative and absolute inflation of every bound, for float64 rounding.
ROUNDING = (1e-9, 1e-12)


def square(z: torch.Tensor) -> torch.Tensor:
    """The quadratic activation z ↦ z², as a named function the relaxations can recognise."""
    return z * z


def leaky_relu(alpha: float = 0.0):
    """Relaxation of z ↦ max(z, αz), 0 ≤ α ≤ 1 (ReLU for α = 0): exact where a unit's sign is fixed on the
    piece; where it can change, α·z + (1 − α)·relu(z) with relu's parallel chord relaxation.

    On [l, u] relu has slope λ = clamp(u/(u − l), 0, 1) (1 where l ≥ 0, 0 where u ≤ 0, the chord's slope
    where it crosses) and offset μ = relu(−l)·relu(u)/(u − l) (0 unless it crosses), in one pass of a few
    in-place operations over every unit of every sample of every piece: this is most of a proof's time.
    """
    def relax(zc, zs, zr):
        rho = zs.abs() + zr
        hi, lo = zc + rho, zc - rho
        width = (hi - lo).clamp_min_(torch.finfo(zc.dtype).tiny)
        lam = torch.div(hi, width).clamp_(0, 1)
        half_mu = lo.neg_().clamp_min_(0).mul_(hi.clamp_min_(0)).div_(width).mul_((1 - alpha) / 2)
        if alpha:
            lam.mul_(1 - alpha).add_(alpha)
        return torch.mul(lam, zc).add_(half_mu), lam * zs, torch.mul(lam, zr).add_(half_mu)
    return relax


def mean_value(fn, slope, critical=(), slack: float = 0.0):
    """Relaxation of a smooth activation in mean-value form: σ(z) = σ(z_c) + σ'(z_c)(z − z_c) + R with
    |R| ≤ D·|z − z_c| + slack, where D = max |σ'(ξ) − σ'(z_c)| over ξ ∈ [l, u]. The extremes of σ' on [l, u]
    lie at l, u or at a ``critical`` point of σ' inside (clamped into [l, u]), so D is exact, not sampled.
    ``slack`` covers a gap between ``fn`` as torch computes it and the smooth σ whose slope is given."""
    def relax(zc, zs, zr):
        rho = zs.abs() + zr
        lo, hi = zc - rho, zc + rho
        dc = slope(zc)
        seen = torch.stack([slope(lo), slope(hi)] + [slope(torch.clamp(torch.full_like(zc, p), lo, hi))
                                                     for p in critical])
        change = torch.maximum(seen.max(0).values - dc, dc - seen.min(0).values)
        return fn(zc), dc * zs, dc.abs() * zr + change * rho + slack  # GELU's slope can be negative
    return relax


def _square(zc, zs, zr):
    rho = zs.abs() + zr
    return zc * zc + rho * rho / 2, 2 * zc * zs, 2 * zc.abs() * zr + rho * rho / 2


def _sigmoid_slope(z):
    s = torch.sigmoid(z)
    return s * (1 - s)


def _gelu_slope(z):
    """d/dz z·Φ(z) = Φ(z) + z·φ(z); its own derivative φ(z)(2 − z²) vanishes at ±√2 only."""
    return 0.5 * (1 + torch.erf(z / math.sqrt(2))) + z * torch.exp(-z * z / 2) / math.sqrt(2 * math.pi)


def softplus(beta: float = 1.0, threshold: float = 20.0):
    """Relaxation of torch's softplus: g(z) = (1/β)·log(1 + e^{βz}), replaced by z where βz > threshold.

    Where the piece stays below the switch, g's mean-value form (its slope σ(βz) is increasing: no
    critical point); where it stays above, the identity, exactly; where it straddles the switch, g's form
    plus twice the largest gap |z − g(z)| = log(1 + e^{−threshold})/β there (at the centre and anywhere).
    """
    gap = 2 * math.log1p(math.exp(-threshold)) / beta
    smooth = mean_value(lambda z: F.softplus(z, beta, threshold), lambda z: torch.sigmoid(beta * z))

    def relax(zc, zs, zr):
        rho = zs.abs() + zr
        c, v, r = smooth(zc, zs, zr)
        above = beta * (zc - rho) > threshold
        straddles = ~above & (beta * (zc + rho) > threshold)
        return (torch.where(above, zc, c), torch.where(above, zs, v),
                torch.where(above, zr, r + straddles.to(r.dtype) * gap))
    return relax


#: Relaxation of each activation the hand-batched MLP evaluator runs.
RELAXATIONS = {torch.relu: leaky_relu(0.0), torch.sigmoid: mean_value(torch.sigmoid, _sigmoid_slope, (0.0,)),
               torch.tanh: mean_value(torch.tanh, lambda z: 1 - torch.tanh(z) ** 2, (0.0,)), square: _square}
#: GELU (the exact form z·Φ(z)); its slope Φ + zφ peaks at √2 and dips at −√2.
GELU = mean_value(F.gelu, _gelu_slope, (math.sqrt(2), -math.sqrt(2)))


# ---------------------------------------------------------------- losses at one end (s = ±1)
# Each takes the output model at that end, o [P, N, C], its remainder [P, N, C] and targets; returns [P]:
# the mean over samples of the loss's largest value given the remainders. Convex in o.
def _cross_entropy(o, r, y):
    idx = y.long().view(1, -1, 1).expand(o.shape[0], -1, 1)
    diff = o - o.gather(-1, idx) + r + r.gather(-1, idx)
    diff = diff.scatter(-1, idx, 0.0)  # the true class against itself: exactly 0
    return torch.logsumexp(diff, dim=-1).mean(-1)


def _mse(o, r, y):
    return ((o - y.reshape(o.shape[1:])).abs() + r).pow(2).flatten(1).mean(-1)


def _l1(o, r, y):
    return ((o - y.reshape(o.shape[1:])).abs() + r).flatten(1).mean(-1)


def _exponential(o, r, y):
    return torch.exp(-y.reshape(o.shape[1:]) * o + r).flatten(1).mean(-1)


#: Loss bounds by the name of the loss in :data:`landscape.problems.LOSSES`.
LOSS_BOUNDS = {"cross_entropy": _cross_entropy, "mse": _mse, "l1": _l1, "exponential": _exponential}


def supported(plan, loss_name: str) -> bool:
    """Whether an MLP plan (see :mod:`.module`) and a loss have relaxations here."""
    return plan is not None and loss_name in LOSS_BOUNDS and all(a in RELAXATIONS for _, _, acts in plan
                                                                  for a in acts)


def mlp_segment_bounds(plan, layout: Layout, data, loss_name: str, start: torch.Tensor, end: torch.Tensor, *,
                       decay_mask: torch.Tensor | None = None, weight_decay: float = 0.0) -> torch.Tensor:
    """Upper bounds of an MLP's loss on each segment ``start[p] → end[p]``.

    Parameters
    ----------
    plan : list
        The MLP as ``[(weight name, bias name or None, [activations])]``.
    layout : Layout
    data : (Tensor, Tensor)
        Inputs of shape (N, in) and targets, as the loss takes them.
    loss_name : str
        A key of :data:`LOSS_BOUNDS`.
    start, end : Tensor, shape (P, D)
    decay_mask : Tensor of bool, shape (D,), optional
        The coordinates under weight decay ``weight_decay / 2 · ‖θ_mask‖²``.

    Returns
    -------
    Tensor, shape (P,), float64
        B_p ≥ max over t ∈ [0, 1] of the loss at start[p] + t (end[p] − start[p]); +inf or NaN
        where the computation overflowed (such a bound proves nothing).
    """
    dev = start.device
    x, y = (t.to(dev, torch.float64) if t.is_floating_point() else t.to(dev) for t in data)
    start, end = start.to(torch.float64), end.to(torch.float64)
    centre, half = layout.unflatten((start + end) / 2), layout.unflatten((end - start) / 2)
    hc, hs, hr = x, None, None
    for wname, bname, acts in plan:
        wc, wh = centre[wname].transpose(1, 2), half[wname].transpose(1, 2)
        if hs is None:  # the inputs are the same for every piece: one product each for all their weights
            zc, zs = _shared_input(hc, wc), _shared_input(hc, wh)
            if bname is not None:
                zc, zs = zc.add_(centre[bname].unsqueeze(1)), zs.add_(half[bname].unsqueeze(1))
            zr = torch.zeros_like(zc)
        else:
            zc = torch.bmm(hc, wc) if bname is None else torch.baddbmm(centre[bname].unsqueeze(1), hc, wc)
            zs = torch.bmm(hc, wh) if bname is None else torch.baddbmm(half[bname].unsqueeze(1), hc, wh)
            zs.baddbmm_(hs, wc)
            q = torch.bmm(hs, wh)  # the s² term: s² ∈ [0, 1], half to the centre and half to the remainder
            zc.add_(q, alpha=0.5)
            zr = q.abs_().mul_(0.5).baddbmm_(hr, wc.abs() + wh.abs())
        for act in acts:
            zc, zs, zr = RELAXATIONS[act](zc, zs, zr)
        hc, hs, hr = zc, zs, zr
    return loss_bound(hc, hs, hr, y, loss_name, start, end, decay_mask=decay_mask, weight_decay=weight_decay)


def _shared_input(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x [N, in] times each piece's w [P, in, out], as [P, N, out]: one matrix product [N, in] × [in, P·out]."""
    p, i, o = w.shape
    return (x @ w.permute(1, 0, 2).reshape(i, p * o)).view(x.shape[0], p, o).transpose(0, 1).contiguous()


def loss_bound(oc, os_, orem, y, loss_name, start, end, *, decay_mask=None, weight_decay=0.0) -> torch.Tensor:
    """The bound of each piece from the network's output model ``oc + s·os_ ± orem`` (each [P, N, ...]).

    Every loss bound is convex in s, so its maximum over [−1, 1] is at s = −1 (``start``) or s = +1
    (``end``); the weight decay of the piece's ends is added, and the result inflated by :data:`ROUNDING`.
    """
    bound = LOSS_BOUNDS[loss_name]
    ends = torch.stack([bound(oc - os_, orem, y), bound(oc + os_, orem, y)])  # s = −1 (start), s = +1 (end)
    if weight_decay and decay_mask is not None:
        mask = decay_mask.to(oc.device)
        ends = ends + 0.5 * weight_decay * torch.stack([start[:, mask].pow(2).sum(-1), end[:, mask].pow(2).sum(-1)])
    out = ends.max(dim=0).values
    rel, absolute = ROUNDING
    return out + rel * out.abs() + absolute


def pieces_per_batch(n_samples: int, max_width: int, device) -> int:
    """How many pieces one call bounds so that its float64 intermediates fit :data:`BOUND_BYTES`."""
    per_piece = 8 * 8 * n_samples * max_width  # about eight [N, width] float64 tensors alive at once
    budget = BOUND_BYTES.get(torch.device(device).type, BOUND_BYTES["cuda"])
    return max(1, budget // max(per_piece, 1))
