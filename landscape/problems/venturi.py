"""The ReLU landscape with a spurious valley of Venturi, Bandeira & Bruna (JMLR 2019), its population loss in
closed form, and the level where its spurious valley joins the global basin, derived.
"""

from __future__ import annotations

import math

import torch

from .._errors import LandscapeError
from .mlp import mlp
from .module import NetworkProblem
from .networks import _gen
from .problem import Problem


class VenturiProblem(NetworkProblem):
    """:func:`venturi_relu`: its constructions at hand, and its population loss in closed form.

    With ``population=True`` the loss is the expectation over the data law itself, not the mean over
    samples. On the half of the law where x = (g, 0), g ~ N(0, I_{n−1}), the residual f − y is a sum of
    ReLU units c_k relu(a_k·g) (the network's units and the target's −α relu(e_i·g)), and
    E[relu(a·g) relu(b·g)] = ‖a‖‖b‖ (sin φ + (π − φ) cos φ) / 2π, φ the angle between a and b
    (the arc-cosine kernel, Cho & Saul 2009). On the other half, x = g e_n with g ~ N(0, 1), the
    residual is g·(A⁺ + β) for g > 0 and |g|·A⁻ for g < 0, with A^± = Σ_j u_j relu(±w_{j,n}). So

        L(θ) = ½ Σ_{k,l} c_k c_l E[relu(a_k·g) relu(a_l·g)] + ¼ (A⁺ + β)² + ¼ (A⁻)².

    **Where the spurious valley joins the global basin** (:meth:`merge`). Write G*_{p−1} for the least loss
    p − 1 units reach on the Gaussian half (fitting all p terms α relu(g_i) with one unit short; > 0). Then

        u* = β²/4 + G*_{p−1}.

    *No path below it*: along a path from the spurious minimum (every u_j = α > 0) to any point below β²/4
    (where some u_j < 0: with every u_j ≥ 0, A⁺ ≥ 0 and L ≥ ¼(A⁺ + β)² ≥ β²/4), take the first point where
    the smallest output weight reaches 0. There every u_k ≥ 0, so the second half costs at least β²/4, and
    the unit with u_j = 0 computes nothing, so the first half costs at least G*_{p−1}: the loss there is
    ≥ β²/4 + G*_{p−1}. Below u* the spurious valley therefore holds only points with every u_j > 0, whose
    loss is ≥ β²/4: no global minimum (Venturi, Bandeira & Bruna's argument, with the level made exact).
    *A path at it*: shrink the p-th unit's output weight from α to 0 while the other p − 1 units follow
    the best fit of what it leaves (the loss rises to β²/4 + G*_{p−1}, reached at 0); with its output
    weight 0, turn that unit from e_p to e_n (the loss does not change); grow its output weight to −β
    (the second half falls from β²/4 to 0). It ends at loss G*_{p−1}, the lowest minimum found:
    L* = G*_{p−1}. At the defaults (α = 2, β = 3, n = 4, p = 3; float64): G*_{p−1} = 0.30734 (a
    problem of (p − 1)·n parameters, multi-start descent), u* = 2.55734; 64 seeds of 20,000 steps on the
    whole problem find no minimum below L*, and NEB's climbing image finds no path at 2.556 and a
    certified one at 2.559. ``tests/test_venturi.py`` checks both bounds, the path and the search methods.
    """

    def constructions(self) -> dict[str, torch.Tensor]:
        """Two points of the construction, flat (D,) vectors.

        ``"spurious"``: units e_1..e_p with output weights α fit every α·relu(x_i) term and drop
        −β·relu(x_n): population loss β²/4 exactly. It is a strict local minimum (every direction
        that starts to fit the dropped term raises the loss first), and its valley holds no global
        minimum (Venturi, Bandeira & Bruna 2019).
        ``"drop_alpha"``: units e_1..e_{p−1} with α and e_n with −β drop the cheaper α·relu(x_p) term
        instead: population loss α²/4 < β²/4, but it is *not* a critical point: the other units can
        fit part of the dropped term, and descent from it reaches the global minima, lower still.
        """
        n, p, a, b = (self.params[k] for k in ("input_dim", "width", "alpha", "beta"))
        if not 2 <= p <= n - 1:
            raise LandscapeError(f"the construction needs 2 <= width <= input_dim - 1, got width={p}, input_dim={n}")
        bad_w, good_w = torch.eye(n)[:p], torch.eye(n)[:p].clone()
        good_w[p - 1] = torch.eye(n)[n - 1]
        bad_u = torch.full((1, p), float(a))
        good_u = bad_u.clone()
        good_u[0, p - 1] = -float(b)
        flat = self.layout.flatten
        return {"spurious": flat({"0.weight": bad_w, "2.weight": bad_u}),
                "drop_alpha": flat({"0.weight": good_w, "2.weight": good_u})}

    def merge(self, *, knots: int = 17, steps: int = 1000, polish: int = 500, restarts: int = 8,
              generator=None) -> dict:
        """The level u* = β²/4 + G*_{p−1} where the spurious valley joins the global basin, and a path at it.

        Needs ``population=True`` (the derivation is about the exact loss; see the class). Two float64
        fits, each ``steps`` of Adam (its step decayed from 10⁻² to 10⁻⁴) then up to ``polish`` iterations of L-BFGS:

        - G*_{p−1}: the loss minimised with the p-th unit fixed at (e_n, −β), which leaves the second half at
          0 and the first to the other p − 1 units, from the construction that drops α relu(x_p) and from
          ``restarts − 1`` random starts; the best is ``"global"``.
        - the path of the class docstring: ``knots`` values of the p-th unit's output weight s·α, s from 1 to
          0, each with the other units fitted by L-BFGS from the fit at the s before it (a continuation from the
          best fit at s = 0 to the spurious minimum's units, up to their order, at s = 1), then the
          turn of the unit to e_n and the growth of its output weight to −β (two segments, exact as
          segments: the loss is constant on the first and convex on the second).

        Returns
        -------
        dict
            ``level`` (β²/4 + G*_{p−1}), ``g_star``, ``global`` (D,) (the best fit with the p-th unit on
            e_n), ``grad_norm`` (the whole problem's gradient there, but for the p-th unit's first n − 1 weights, where the
            loss has a kink at 0), ``path`` (knots + 2, D)
            from the spurious minimum to the path's end, ``path_end_loss`` (that end's loss: G*_{p−1} when
            the warm start found the best fit).
        """
        if not self.params.get("population"):
            raise LandscapeError("merge() derives the level on the exact loss: build venturi_relu with population=True")
        n, p, alpha, beta = (self.params[k] for k in ("input_dim", "width", "alpha", "beta"))
        if not 2 <= p <= n - 1:
            raise LandscapeError(f"the construction needs 2 <= width <= input_dim - 1, got width={p}, input_dim={n}")
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        eye = torch.eye(n, dtype=torch.float64)

        def points(w, u, w_last, u_last):  # the other units [K, p−1, n], [K, p−1]; the p-th unit [K, n], [K]
            weights = torch.cat([w, w_last[:, None]], 1)
            return torch.cat([weights.flatten(1), torch.cat([u, u_last[:, None]], 1)], 1)

        def fit(w, u, w_last, u_last, adam_steps=steps):  # Adam into a basin, then L-BFGS (the K fits are separable)
            w, u = w.clone().requires_grad_(True), u.clone().requires_grad_(True)
            adam = torch.optim.Adam([w, u], lr=1e-2)
            decay = torch.optim.lr_scheduler.ExponentialLR(adam, gamma=1e-2 ** (1 / max(steps, 1)))
            for _ in range(adam_steps):
                adam.zero_grad()
                self.loss(points(w, u, w_last, u_last)).sum().backward()
                adam.step()
                decay.step()
            lbfgs = torch.optim.LBFGS([w, u], lr=1, max_iter=polish, tolerance_grad=1e-12, tolerance_change=0,
                                      history_size=50, line_search_fn="strong_wolfe")

            def closure():
                lbfgs.zero_grad()
                value = self.loss(points(w, u, w_last, u_last)).sum()
                value.backward()
                return value

            lbfgs.step(closure)
            return w.detach(), u.detach()

        # G*_{p−1}: the p-th unit on e_n with −β, the others from the drop-α construction and at random
        k = max(int(restarts), 1)
        w0 = torch.cat([eye[None, : p - 1], torch.randn(k - 1, p - 1, n, generator=gen, dtype=torch.float64)])
        u0 = torch.cat([torch.full((1, p - 1), float(alpha), dtype=torch.float64),
                        torch.randn(k - 1, p - 1, generator=gen, dtype=torch.float64).abs() * alpha])
        w_n, u_n = eye[n - 1].expand(k, n), torch.full((k,), -float(beta), dtype=torch.float64)
        w, u = fit(w0, u0, w_n, u_n)
        fitted = points(w, u, w_n, u_n)
        losses = self.loss(fitted)
        best = fitted[int(losses.argmin())]
        g_star = float(losses.min())
        _, grad = self.loss_and_grad(best[None])
        smooth = torch.ones(self.dim, dtype=torch.bool)  # the loss has a kink in the p-th unit's first n − 1 weights
        smooth[(p - 1) * n: p * n - 1] = False  # (0 there: ‖a‖ is not differentiable at a = 0)
        # the path: the p-th unit's output weight s·α, s from 1 to 0, the others fitted to what it leaves
        s = torch.linspace(1, 0, max(int(knots), 2), dtype=torch.float64)
        m = s.shape[0]
        w_p, u_p = eye[p - 1].expand(m, n), s * alpha
        # continuation from the best fit (s = 0) up to s = 1, each fit started from the one before
        ws, us = [w[int(losses.argmin())][None]], [u[int(losses.argmin())][None]]
        for value in s.flip(0)[1:]:
            w_next, u_next = fit(ws[-1], us[-1], eye[None, p - 1], (value * alpha)[None], adam_steps=0)
            ws.append(w_next)
            us.append(u_next)
        w, u = torch.cat(ws[::-1]), torch.cat(us[::-1])
        norms = w.norm(dim=2).clamp_min(1e-300)  # each unit to ‖w‖ = 1 (u·relu(w·x) = u‖w‖·relu(w/‖w‖·x)): knots close
        w, u = w / norms[:, :, None], u * norms
        # at s = 1 the other units fit α relu(x_i), i < p, exactly: the spurious minimum's units up to their order
        order = w[0, :, : p - 1].abs().argmax(1)
        if sorted(order.tolist()) != list(range(p - 1)):
            raise LandscapeError("the continuation did not return to the spurious minimum's units")
        w, u = w[:, order.argsort()], u[:, order.argsort()]
        w[0], u[0] = eye[: p - 1], float(alpha)  # s = 1: exactly the spurious minimum
        shrink = points(w, u, w_p, u_p)
        last = points(w[-1:].expand(2, p - 1, n), u[-1:].expand(2, p - 1), eye[n - 1].expand(2, n),
                      torch.tensor([0.0, -float(beta)], dtype=torch.float64))
        path = torch.cat([shrink, last])
        return {"level": beta**2 / 4 + g_star, "g_star": g_star, "global": best, "grad_norm": float(grad[0, smooth].norm()),
                "path": path, "path_end_loss": float(self.loss(path[-1:]))}

    def _evaluate(self, thetas, data):
        if not self.params.get("population"):
            return super()._evaluate(thetas, data)
        n, p, alpha, beta = (self.params[k] for k in ("input_dim", "width", "alpha", "beta"))
        params = self.layout.unflatten(thetas)
        w, u = params["0.weight"], params["2.weight"][:, 0, :]  # [K, p, n], [K, p]
        targets = torch.eye(n - 1, dtype=w.dtype, device=w.device)[:p].expand(w.shape[0], p, n - 1)
        units = torch.cat([w[:, :, : n - 1], targets], 1)  # [K, 2p, n − 1]
        coef = torch.cat([u, torch.full_like(u, -float(alpha))], 1)  # [K, 2p]
        gram = units @ units.transpose(1, 2)
        norms = torch.sqrt(torch.diagonal(gram, dim1=1, dim2=2) + 1e-300)
        outer = norms[:, :, None] * norms[:, None, :]
        kernel = outer * _ArcCosine.apply((gram / outer).clamp(-1.0, 1.0)) / (2 * math.pi)
        first = torch.einsum("ki,kij,kj->k", coef, kernel, coef)
        plus = (u * torch.relu(w[:, :, n - 1])).sum(1)
        minus = (u * torch.relu(-w[:, :, n - 1])).sum(1)
        return first / 2 + ((plus + beta) ** 2 + minus ** 2) / 4

    def _evaluate_with_grad(self, thetas, data):
        if self.params.get("population"):  # the closed form, differentiated by autograd
            return Problem._evaluate_with_grad(self, thetas, data)
        return super()._evaluate_with_grad(thetas, data)

    def loss_on_plane(self, origin, directions, coords, *, split="train"):
        if self.params.get("population"):  # not an MLP on data: the generic sweep
            return Problem.loss_on_plane(self, origin, directions, coords, split=split)
        return super().loss_on_plane(origin, directions, coords, split=split)

    def segment_bounds(self, start, end, *, split="train", at_once=False):
        if self.params.get("population"):
            return None  # no bound propagation through the closed form: certified by dense evaluation
        return super().segment_bounds(start, end, split=split, at_once=at_once)

    def check_capture(self, points, *, generator=None):
        if self.params.get("population"):  # its own closed form, not the module on samples: nothing to compare
            return {}
        return super().check_capture(points, generator=generator)

    def bounds_unavailable(self):
        if self.params.get("population"):
            return "the population loss is a closed form, with no bound propagation"
        return super().bounds_unavailable()


class _ArcCosine(torch.autograd.Function):
    """J(c) = sin φ + (π − φ) cos φ with c = cos φ, and its derivative dJ/dc = π − φ (finite at c = ±1,
    where √(1 − c²) alone is not differentiable), computed from c so that it is differentiable again
    (Hessian-vector products: the second derivative 1/√(1 − c²) had been lost with φ saved as a constant).
    At c = ±1 it is taken as 0: there c is a unit's cosine with itself, constant (else inf · 0 made it NaN)."""

    @staticmethod
    def forward(ctx, c):
        ctx.save_for_backward(c)
        phi = torch.arccos(c)
        return torch.sqrt((1 - c * c).clamp_min(0)) + (math.pi - phi) * c

    @staticmethod
    def backward(ctx, grad):
        (c,) = ctx.saved_tensors
        inside = c.abs() < 1
        slope = math.pi - torch.arccos(torch.where(inside, c, torch.zeros_like(c)))  # no inf · 0 outside
        return grad * torch.where(inside, slope, math.pi - torch.arccos(c.detach()))


def venturi_relu(width: int = 3, input_dim: int = 4, alpha: float = 2.0, beta: float = 3.0, n_train: int = 4000,
                 n_test: int = 2000, data_seed: int = 0, population: bool = False) -> VenturiProblem:
    """The ReLU landscape with a spurious valley of Venturi, Bandeira & Bruna (JMLR 2019).

    The construction is the one reproduced publicly as ``theorem13`` in bfausten/spurious-valleys.

    Inputs: with probability ½, x = (g, 0) with g ~ N(0, I_{n−1}); otherwise x = (0, …, 0, g) with
    g ~ N(0, 1). Targets: y = α Σ_{i≤p} relu(x_i) − β relu(x_n), with β > α > 0. A network of
    p ≤ n − 1 ReLU units without biases, x ↦ Σ_j u_j relu(w_j·x), square loss, can fit all but
    one term: the minimum that drops −β relu(x_n) (population loss β²/4) lies in a valley that holds
    no global minimum. See :meth:`VenturiProblem.constructions`.

    ``population=True`` makes the training loss the exact expectation over the data law (closed form,
    see :class:`VenturiProblem`); the samples remain for the test split and for views.
    """
    if not 0 < alpha < beta:
        raise LandscapeError(f"venturi_relu needs 0 < alpha < beta, got alpha={alpha}, beta={beta}")
    if width > input_dim:
        raise LandscapeError(f"venturi_relu needs width <= input_dim, got width={width}, input_dim={input_dim}")
    g = _gen(data_seed)
    n_all = n_train + n_test
    first = torch.rand(n_all, generator=g) < 0.5
    x = torch.zeros(n_all, input_dim)
    x[first, : input_dim - 1] = torch.randn(int(first.sum()), input_dim - 1, generator=g)
    x[~first, input_dim - 1] = torch.randn(int((~first).sum()), generator=g)
    y = alpha * torch.relu(x[:, :width]).sum(1) - beta * torch.relu(x[:, -1])
    params = dict(width=width, input_dim=input_dim, alpha=alpha, beta=beta, n_train=n_train, n_test=n_test,
                  data_seed=data_seed, population=bool(population))
    return VenturiProblem("venturi_relu", params, mlp([input_dim, width, 1], "relu", bias=False),
                          {"train": (x[:n_train], y[:n_train, None]), "test": (x[n_train:], y[n_train:, None])},
                          "mse", summary="Venturi-Bandeira-Bruna ReLU construction with a spurious valley")
