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
