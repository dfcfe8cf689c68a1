"""Embedded network problems: data generated on the spot (or shipped with scikit-learn), no downloads.

Every factory takes JSON-able keyword arguments, including the seed of its data, so that
``PROBLEMS[spec["name"]](**spec["params"])`` rebuilds the same problem on any machine.
"""

from __future__ import annotations

import math

import torch

from .._errors import LandscapeError
from .mlp import mlp
from .module import NetworkProblem
from .problem import Problem


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _hidden(width: int, depth: int) -> list[int]:
    if width < 1 or depth < 0:
        raise LandscapeError(f"width must be >= 1 and depth >= 0, got width={width}, depth={depth}")
    return [int(width)] * int(depth)


def quadratic_regression(width: int = 4, depth: int = 2, n_train: int = 1000, n_test: int = 1000,
                         data_seed: int = 0) -> NetworkProblem:
    """Regression of f(x) = 0.5x² + 0.25x + 0.1 on x ~ U[0, 1] by a 1-4-4-1 sigmoid network, L1 loss.

    The toy task of Freeman & Bruna, "Topology and Geometry of Half-Rectified Network
    Optimization", ICLR 2017, Section 4 (their Figure 2 measures its normalized geodesic
    lengths at levels L0 = 0.05, 0.025, 0.01).
    """
    g = _gen(data_seed)
    x = torch.rand(n_train + n_test, 1, generator=g)
    y = 0.5 * x**2 + 0.25 * x + 0.1
    params = dict(width=width, depth=depth, n_train=n_train, n_test=n_test, data_seed=data_seed)
    splits = {"train": (x[:n_train], y[:n_train]), "test": (x[n_train:], y[n_train:])}
    return NetworkProblem("quadratic_regression", params, mlp([1, *_hidden(width, depth), 1], "sigmoid"), splits,
                          "l1", summary="Freeman & Bruna's 1-4-4-1 sigmoid regression of a quadratic, L1 loss")


def digits_mlp(width: int = 100, depth: int = 2, activation: str = "relu", test_fraction: float = 0.2,
               weight_decay: float = 0.0, data_seed: int = 0) -> NetworkProblem:
    """An MLP classifying scikit-learn's bundled 8×8 digits (1797 images, 10 classes), cross-entropy.

    Pixels are scaled to [0, 1]; the train/test split is a permutation drawn from ``data_seed``.
    The default 64-100-100-10 network is the benchmark of the DESIGN notes (Li et al. 2018 draw
    planes of the same kind of model).
    """
    params = dict(width=width, depth=depth, activation=activation, test_fraction=test_fraction,
                  weight_decay=weight_decay, data_seed=data_seed)
    return NetworkProblem("digits_mlp", params, mlp([64, *_hidden(width, depth), 10], activation),
                          digits_splits(test_fraction, data_seed), "cross_entropy",
                          weight_decay=weight_decay, summary="MLP on scikit-learn's digits, cross-entropy")


def digits_splits(test_fraction: float, data_seed: int, *, images: bool = False, n_train: int | None = None) -> dict:
    """scikit-learn's bundled digits, pixels in [0, 1], split by a permutation drawn from ``data_seed``.

    Returns ``{"train": (x, y), "test": (x, y)}`` with x of shape (N, 64), or (N, 1, 8, 8) when
    ``images``; ``n_train`` keeps the first n of the training split (all when None).
    """
    from sklearn.datasets import load_digits

    if not 0 < test_fraction < 1:
        raise LandscapeError(f"test_fraction must be in (0, 1), got {test_fraction}")
    xs, ys = load_digits(return_X_y=True)
    x = torch.tensor(xs / 16.0, dtype=torch.float32)
    if images:
        x = x.reshape(-1, 1, 8, 8)
    y = torch.tensor(ys, dtype=torch.long)
    perm = torch.randperm(len(x), generator=_gen(data_seed))
    n_test = int(round(test_fraction * len(x)))
    test, train = perm[:n_test], perm[n_test:]
    if n_train is not None:
        if not 1 <= n_train <= len(train):
            raise LandscapeError(f"n_train must be in [1, {len(train)}], got {n_train}")
        train = train[:n_train]
    return {"train": (x[train], y[train]), "test": (x[test], y[test])}


def moons_mlp(width: int = 16, depth: int = 2, activation: str = "relu", n_train: int = 500, n_test: int = 500,
              noise: float = 0.1, data_seed: int = 0) -> NetworkProblem:
    """An MLP classifying scikit-learn's two interleaving half circles (``make_moons``), cross-entropy."""
    from sklearn.datasets import make_moons

    xs, ys = make_moons(n_train + n_test, noise=noise, random_state=data_seed)
    x = torch.tensor(xs, dtype=torch.float32)
    y = torch.tensor(ys, dtype=torch.long)
    params = dict(width=width, depth=depth, activation=activation, n_train=n_train, n_test=n_test, noise=noise,
                  data_seed=data_seed)
    return NetworkProblem("moons_mlp", params, mlp([2, *_hidden(width, depth), 2], activation),
                          {"train": (x[:n_train], y[:n_train]), "test": (x[n_train:], y[n_train:])},
                          "cross_entropy", summary="MLP on two moons, cross-entropy")


def teacher_student(width: int = 8, teacher_width: int = 4, input_dim: int = 10, activation: str = "relu",
                    n_train: int = 1000, n_test: int = 1000, data_seed: int = 0) -> NetworkProblem:
    """One-hidden-layer student of width p fitting a teacher of the same kind, x ~ N(0, I), square loss.

    y = Σ_j σ(w_j·x) with teacher weights w_j ~ N(0, I/d) drawn from ``data_seed``; the student is
    x ↦ Σ_i u_i σ(v_i·x) with both layers trained. Venturi, Bandeira & Bruna (JMLR 2019): when the
    features σ(w·x) span a space of finite dimension q, there are no spurious valleys once p ≥ q
    (quadratic σ: q = d(d+1)/2, the symmetric matrices xxᵀ; linear σ: q = d); ReLU features span
    an infinite-dimensional space and spurious valleys appear at small widths.
    """
    g = _gen(data_seed)
    teacher = torch.randn(teacher_width, input_dim, generator=g) / input_dim**0.5
    x = torch.randn(n_train + n_test, input_dim, generator=g)
    act = {"relu": torch.relu, "quadratic": lambda z: z * z, "linear": lambda z: z}
    if activation not in act:
        raise LandscapeError(f"teacher_student activation must be one of {sorted(act)}, got {activation!r}")
    y = act[activation](x @ teacher.T).sum(1, keepdim=True)
    params = dict(width=width, teacher_width=teacher_width, input_dim=input_dim, activation=activation,
                  n_train=n_train, n_test=n_test, data_seed=data_seed)
    return NetworkProblem("teacher_student", params, mlp([input_dim, width, 1], activation, bias=False),
                          {"train": (x[:n_train], y[:n_train]), "test": (x[n_train:], y[n_train:])}, "mse",
                          summary="one-hidden-layer teacher-student, square loss")


class DeepLinearProblem(NetworkProblem):
    """:func:`deep_linear`, with the orientation of its hidden layers at hand."""

    def orientation_classes(self, thetas: torch.Tensor, rtol: float = 1e-6) -> list[tuple[int, ...]]:
        """Which component of the orbit of global minima under the hidden layers' rotations each point is in.

        Hidden layer k computes H_k = W_k ··· W_1 x; an orthogonal Q_k acting on it (W_k → Q_k W_k,
        W_{k+1} → W_{k+1} Q_kᵀ) keeps the loss, weight decay included. When H_k has full row rank
        (hidden width ≤ rank of the map, here when width ≤ min(input_dim, output_dim) and the weight
        decay shrinks no singular value to zero), the orbit of a minimum splits into the two
        components of O(width), det Q_k = ±1, and points of the two cannot be joined inside the set
        of minima; the sign of det(H_k^{(i)} H_k^{(0)ᵀ}) says which one point i is in, relative to
        point 0. When H_k is rank-deficient (width > min(input_dim, output_dim)), a reflection of its
        null space joins the two and layer k does not split (sign recorded as 0). So minima of one
        loss value in different classes lie in different valleys just above that value: N_u is the
        number of classes, up to 2^depth (Venturi, Bandeira & Bruna, JMLR 2019, need
        width > min(input_dim, output_dim) for N_u = 1).

        Parameters
        ----------
        thetas : Tensor, shape (N, D)
            Minima (of one loss value: the classes compare points of one orbit).
        rtol : float
            Singular values below ``rtol`` times the largest count as zero (rank of H_k at point 0).

        Returns
        -------
        list of tuple of int
            Per point, one sign (+1, −1, or 0 for a layer that does not split) per hidden layer.
        """
        if thetas.dim() != 2 or thetas.shape[1] != self.dim:
            raise LandscapeError(f"points must have shape (N, {self.dim}), got {tuple(thetas.shape)}")
        weights = [w.double() for w in self.layout.unflatten(thetas).values()]
        h = weights[0]
        signs = []
        for k in range(len(weights) - 1):  # hidden layers: the outputs of every weight matrix but the last
            if k:
                h = weights[k] @ h
            sv = torch.linalg.svdvals(h[0])
            if int((sv > rtol * sv.max()).sum()) < h.shape[1]:
                signs.append(torch.zeros(h.shape[0], dtype=torch.long))
                continue
            signs.append(torch.linalg.det(h @ h[0].T).sign().long())
        return [tuple(int(s[i]) for s in signs) for i in range(thetas.shape[0])]


def deep_linear(width: int = 8, depth: int = 2, input_dim: int = 4, output_dim: int = 3,
                weight_decay: float = 0.01, n_train: int = 200, noise: float = 0.1,
                data_seed: int = 0) -> DeepLinearProblem:
    """Deep linear regression x ↦ W_{L}···W_1 x with weight decay λ/2 Σ‖W_i‖², square loss.

    ``depth`` hidden layers of ``width`` units. Venturi, Bandeira & Bruna (JMLR 2019): with weight
    decay and hidden widths n_1 > min(input_dim, output_dim) the landscape has a single valley at
    every level, N_u = 1. At smaller widths the global minima form several components (see
    :meth:`DeepLinearProblem.orientation_classes`). Targets are y = A x + noise with
    A ~ N(0, 1/input_dim) drawn from ``data_seed``.
    """
    g = _gen(data_seed)
    a = torch.randn(output_dim, input_dim, generator=g) / input_dim**0.5
    x = torch.randn(2 * n_train, input_dim, generator=g)
    y = x @ a.T + noise * torch.randn(2 * n_train, output_dim, generator=g)
    params = dict(width=width, depth=depth, input_dim=input_dim, output_dim=output_dim, weight_decay=weight_decay,
                  n_train=n_train, noise=noise, data_seed=data_seed)
    return DeepLinearProblem("deep_linear", params, mlp([input_dim, *_hidden(width, depth), output_dim], "linear",
                                                        bias=False),
                             {"train": (x[:n_train], y[:n_train]), "test": (x[n_train:], y[n_train:])}, "mse",
                             weight_decay=weight_decay, summary="deep linear regression with weight decay")


class VenturiProblem(NetworkProblem):
    """:func:`venturi_relu`: its constructions at hand, and its population loss in closed form.

    With ``population=True`` the loss is the expectation over the data law itself, not the mean over
    samples. On the half of the law where x = (g, 0), g ~ N(0, I_{n−1}), the residual f − y is a sum of
    ReLU units c_k relu(a_k·g) (the network's units and the target's −α relu(e_i·g)), and
    E[relu(a·g) relu(b·g)] = ‖a‖‖b‖ (sin φ + (π − φ) cos φ) / 2π, φ the angle between a and b
    (the arc-cosine kernel, Cho & Saul 2009). On the other half, x = g e_n with g ~ N(0, 1), the
    residual is g·(A⁺ + β) for g > 0 and |g|·A⁻ for g < 0, with A^± = Σ_j u_j relu(±w_{j,n}). So

        L(θ) = ½ Σ_{k,l} c_k c_l E[relu(a_k·g) relu(a_l·g)] + ¼ (A⁺ + β)² + ¼ (A⁻)².

    Measured on it at the defaults (α = 2, β = 3, n = 4, p = 3; float64, Adam): the lowest minimum is
    L* = 0.30734 (8 seeds, 3,000 steps; 64 seeds, 20,000 steps find no lower one; other minima at 0.96942
    and 2.55734 besides the spurious β²/4 = 2.25). The spurious valley joins the global basin at
    u* = 2.5573 (NEB's climbing image: no path at 2.556, a certified one at 2.559), which equals
    β²/4 + L* to five digits; we have not derived that identity. ``tests/test_valleys.py`` checks
    connect and valleys on either side of it.
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

    def loss_on_plane(self, origin, directions, coords, *, split="train"):
        if self.params.get("population"):  # not an MLP on data: the generic sweep
            return Problem.loss_on_plane(self, origin, directions, coords, split=split)
        return super().loss_on_plane(origin, directions, coords, split=split)

    def segment_bounds(self, start, end, *, split="train"):
        if self.params.get("population"):
            return None  # no bound propagation through the closed form: certified by dense evaluation
        return super().segment_bounds(start, end, split=split)

    def bounds_unavailable(self):
        if self.params.get("population"):
            return "the population loss is a closed form, with no bound propagation"
        return super().bounds_unavailable()


class _ArcCosine(torch.autograd.Function):
    """J(c) = sin φ + (π − φ) cos φ with c = cos φ, and its derivative dJ/dc = π − φ (finite at c = ±1,
    where √(1 − c²) alone is not differentiable)."""

    @staticmethod
    def forward(ctx, c):
        phi = torch.arccos(c)
        ctx.save_for_backward(phi)
        return torch.sqrt((1 - c * c).clamp_min(0)) + (math.pi - phi) * c

    @staticmethod
    def backward(ctx, grad):
        (phi,) = ctx.saved_tensors
        return grad * (math.pi - phi)


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


def exp_linear(dim: int = 50, n_train: int = 200, n_test: int = 200, margin: float = 0.1,
               data_seed: int = 0) -> NetworkProblem:
    """A linear classifier x ↦ w·x under the exponential loss mean exp(−y w·x) on separable data.

    Gradient descent drives ‖w‖ → ∞ while w/‖w‖ converges to the hard-margin SVM direction,
    slowly, like 1/log t (Soudry et al., JMLR 2018; Poggio, Banburski & Liao 2019-2020).
    Inputs x ~ N(0, I_d); labels y = sign(w*·x) for a random unit w*, and points with
    |w*·x| < margin are dropped, so the data are separable with margin ≥ ``margin``.
    """
    g = _gen(data_seed)
    w_star = torch.randn(dim, generator=g)
    w_star /= w_star.norm()
    need = n_train + n_test
    xs = []
    while sum(len(t) for t in xs) < need:
        x = torch.randn(2 * need, dim, generator=g)
        xs.append(x[(x @ w_star).abs() >= margin])
    x = torch.cat(xs)[:need]
    y = torch.sign(x @ w_star)[:, None]
    params = dict(dim=dim, n_train=n_train, n_test=n_test, margin=margin, data_seed=data_seed)
    return NetworkProblem("exp_linear", params, mlp([dim, 1], "linear", bias=False),
                          {"train": (x[:n_train], y[:n_train]), "test": (x[n_train:], y[n_train:])},
                          "exponential", summary="linear classifier, exponential loss, separable data")
