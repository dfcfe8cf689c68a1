"""Implicit regularization of linear classifiers: the max-margin direction and the dynamics that find it.

On linearly separable data z_i = y_i x_i, the exponential loss L(θ) = (1/N) Σ exp(−z_i·θ) has no
minimum: gradient descent drives ‖θ‖ → ∞ while θ/‖θ‖ converges to the hard-margin SVM direction,
slowly, like 1/log t (Soudry, Hoffer, Nacson, Gunasekar & Srebro, "The Implicit Bias of Gradient
Descent on Separable Data", JMLR 2018). Poggio, Banburski & Liao ("Theoretical issues in deep
networks", PNAS 2020; "Complexity control by gradient descent in deep networks", Nat. Commun. 2020)
read the same fact off the dynamics of the normalized weights and note that weight normalization
changes their speed by ‖θ‖²; Nacson et al. ("Convergence of Gradient Descent on Separable Data",
AISTATS 2019) show that normalized steps η ∇L / L turn the 1/log t rate into a polynomial one.

The dynamics run here, not in :func:`landscape.train`, for three measured reasons: normalized GD
drives log L below −700 within 10⁴ steps, where float64's exp underflows, so every step is taken
in the log domain (log-sum-exp and softmax weights); weight normalization is a reparametrization
(ρ, v) with its own state, not an optimizer over θ; and the rate is read on a log-spaced clock.
All runs of a call (several initial points) are one batched [S, D] tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .._errors import LandscapeError
from .._registry import Registry


@dataclass
class MaxMargin:
    """The hard-margin SVM without intercept: min ½‖w‖² subject to y_i w·x_i ≥ 1.

    Attributes
    ----------
    w : ndarray, shape (D,)
        The solution, functional margin 1 on the support vectors.
    direction : ndarray, shape (D,)
        w / ‖w‖, the max-margin direction.
    margin : float
        The geometric max margin γ* = 1/‖w‖ = max over unit θ of min_i y_i θ·x_i.
    alpha : ndarray, shape (N,)
        Dual variables (Lagrange multipliers), w = Σ α_i y_i x_i.
    support : ndarray of int, shape (k,)
        Indices of the support vectors (α_i > 0).
    kkt : dict
        Residuals of the optimality conditions: ``primal`` (max violation of y_i w·x_i ≥ 1),
        ``dual`` (max −α_i), ``slackness`` (max ``|α_i (y_i w·x_i − 1)|``), ``stationarity``
        (‖w − Σ α_i y_i x_i‖ / ‖w‖), ``support_margin`` (max ``|y_i w·x_i − 1|`` over support vectors).
    """

    w: np.ndarray
    direction: np.ndarray
    margin: float
    alpha: np.ndarray
    support: np.ndarray
    kkt: dict

    @property
    def kkt_residual(self) -> float:
        """The largest of the KKT residuals."""
        return max(self.kkt.values())


def max_margin(x, y, *, tol: float = 1e-8) -> MaxMargin:
    """The hard-margin SVM without intercept, solved exactly and checked by its KKT conditions.

    The problem min ‖w‖ s.t. Z w ≥ 1 (Z = y x) is a least-distance program; Lawson & Hanson
    (*Solving Least Squares Problems*, 1974, ch. 23) reduce it to the non-negative least squares
    problem min_{u ≥ 0} ‖[Zᵀ; 1ᵀ] u − e_{D+1}‖, solved by scipy's active-set NNLS, which stops at
    an exact vertex rather than at a tolerance. The solution is unique (strictly convex problem),
    and the KKT conditions are verified before it is returned.

    Parameters
    ----------
    x : array-like, shape (N, D)
    y : array-like, shape (N,) or (N, 1)
        Labels ±1.
    tol : float
        Largest KKT residual accepted.

    Raises
    ------
    LandscapeError
        If the labels are not ±1, the data are not linearly separable through the origin, or the
        solution fails its KKT check.
    """
    from scipy.optimize import nnls

    x = np.asarray(torch.as_tensor(x).detach().cpu().double() if isinstance(x, torch.Tensor) else x, dtype=float)
    y = np.asarray(torch.as_tensor(y).detach().cpu().double() if isinstance(y, torch.Tensor) else y,
                   dtype=float).reshape(-1)
    if x.ndim != 2 or y.shape[0] != x.shape[0]:
        raise LandscapeError(f"max_margin needs x of shape (N, D) and y of shape (N,), got {x.shape} and {y.shape}")
    if not np.all(np.abs(y) == 1):
        raise LandscapeError("max_margin needs labels y = ±1")
    z = y[:, None] * x
    n, d = z.shape
    e = np.vstack([z.T, np.ones((1, n))])
    f = np.zeros(d + 1)
    f[-1] = 1.0
    u, dist = nnls(e, f, maxiter=max(50 * n, 1000))
    r = e @ u - f
    if dist < 1e-10 or r[-1] > -1e-12:
        raise LandscapeError("the data are not linearly separable through the origin: no max-margin direction")
    w = -r[:d] / r[-1]
    alpha = u / -r[-1]
    scores = z @ w
    support = np.flatnonzero(alpha > 1e-12 * max(1.0, alpha.max()))
    norm = float(np.linalg.norm(w))
    kkt = {
        "primal": float(max(0.0, 1.0 - scores.min())),
        "dual": float(max(0.0, -alpha.min())),
        "slackness": float(np.abs(alpha * (scores - 1.0)).max()),
        "stationarity": float(np.linalg.norm(w - z.T @ alpha) / norm),
        "support_margin": float(np.abs(scores[support] - 1.0).max()),
    }
    result = MaxMargin(w, w / norm, 1.0 / norm, alpha, support, kkt)
    if result.kkt_residual > tol:
        raise LandscapeError(f"the max-margin solution failed its KKT check (residuals {kkt}); the data may be "
                             "degenerate: rescale them or raise tol")
    return result


# ---------------------------------------------------------------- dynamics
# Each rule maps the state and the log-domain loss terms to the next state. With q = softmax(−Zθ)
# (the sample weights) and p = Zᵀq: ∇L = −L p and ∇L / L = −p, with log L = logsumexp(−Zθ) − log N.


def gd(state, p, log_loss, lr):
    """Plain gradient descent, θ ← θ − η ∇L(θ) (Soudry et al. 2018: direction error ~ 1/log t)."""
    state["theta"] = state["theta"] + lr * torch.exp(log_loss)[:, None] * p


def normalized_gd(state, p, log_loss, lr):
    """Normalized gradient descent, θ ← θ − η ∇L(θ) / L(θ) (Nacson et al., AISTATS 2019).

    The step length no longer decays with the loss: ‖θ‖ grows linearly and the margin converges
    polynomially fast instead of like 1/log t.
    """
    state["theta"] = state["theta"] + lr * p


def weight_norm(state, p, log_loss, lr):
    """Weight normalization, θ = ρ v/‖v‖, gradient descent on (ρ, v) (Salimans & Kingma, NeurIPS 2016).

    ∂L/∂ρ = u·∇L and ∂L/∂v = (ρ/‖v‖)(I − uuᵀ)∇L with u = v/‖v‖: the direction moves ρ²/‖v‖² times
    faster than under plain gradient descent at the same θ (Poggio, Banburski & Liao 2020), and the
    stable learning rate shrinks by the same factor.
    """
    v, rho = state["v"], state["rho"]
    vn = v.norm(dim=1, keepdim=True)
    u = v / vn
    grad = -torch.exp(log_loss)[:, None] * p
    along = (grad * u).sum(1, keepdim=True)
    state["v"] = v - lr * (rho / vn) * (grad - along * u)
    state["rho"] = rho - lr * along
    state["theta"] = state["rho"] * state["v"] / state["v"].norm(dim=1, keepdim=True)


#: Training dynamics on separable data, by name; keys equal function names.
DYNAMICS = Registry("dynamics", (gd, normalized_gd, weight_norm), shared=("state", "p", "log_loss", "lr"))


def log_clock(steps: int, n: int = 50) -> list[int]:
    """Step 0, about ``n`` log-spaced steps in [1, steps] and every power of ten up to ``steps``."""
    if steps < 1:
        return [0]
    ticks = set(np.round(np.logspace(0, math.log10(steps), max(2, n))).astype(int).tolist())
    ticks |= {10**k for k in range(int(math.log10(steps)) + 1)} | {steps}
    return [0] + sorted(int(t) for t in ticks if 1 <= t <= steps)


def implicit_bias(x, y, theta0: torch.Tensor, *, dynamics: str = "gd", lr: float = 1.0, steps: int = 100_000,
                  records: int = 50, reference=None) -> dict:
    """Run separable-data dynamics from S initial points at once and record how they align.

    Parameters
    ----------
    x : Tensor, shape (N, D)
    y : Tensor, shape (N,) or (N, 1)
        Labels ±1.
    theta0 : Tensor, shape (S, D)
        Initial points; their device is used, in float64.
    dynamics : str
        A key of :data:`DYNAMICS`.
    lr : float
        Learning rate η.
    steps : int
    records : int
        About this many log-spaced records (:func:`log_clock`).
    reference : MaxMargin, optional
        The max-margin solution of (x, y); computed with :func:`max_margin` when not given.

    Returns
    -------
    dict
        ``step`` [T] (int), and [T, S] tensors: ``cosine`` (with the max-margin direction),
        ``margin`` (normalized margin min_i y_i x_i·θ/‖θ‖), ``norm`` ‖θ‖, ``log_loss`` log L(θ);
        ``theta`` [T, S, D], the recorded iterates; ``reference``, the :class:`MaxMargin`.

    Raises
    ------
    LandscapeError
        An unknown dynamics, a bad learning rate or step count, or a run that diverged.
    """
    rule = DYNAMICS.lookup(dynamics)
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise LandscapeError(f"learning rate must be a positive number, got {lr!r}")
    if not (isinstance(steps, int) and steps >= 1):
        raise LandscapeError(f"steps must be a positive integer, got {steps!r}")
    ref = max_margin(x, y) if reference is None else reference
    device = theta0.device
    x = torch.as_tensor(x).to(device=device, dtype=torch.float64)
    y = torch.as_tensor(y).to(device=device, dtype=torch.float64).reshape(-1)
    z = y[:, None] * x
    theta = theta0.detach().to(dtype=torch.float64).clone()
    if theta.dim() != 2 or theta.shape[1] != z.shape[1]:
        raise LandscapeError(f"initial points must have shape (S, {z.shape[1]}), got {tuple(theta.shape)}")
    direction = torch.as_tensor(ref.direction, dtype=torch.float64, device=device)
    state = {"theta": theta, "rho": theta.norm(dim=1, keepdim=True), "v": theta.clone()}
    clock = log_clock(steps, records)
    marks = set(clock)
    rec = {"cosine": [], "margin": [], "norm": [], "log_loss": [], "theta": []}
    with _threads(1 if device.type == "cpu" and z.numel() * theta.shape[0] < 1 << 20 else None):
        _loop(state, rule, z, direction, lr, steps, marks, rec, dynamics)
    out = {k: torch.stack(v).cpu() for k, v in rec.items()}
    out["step"] = torch.tensor(clock, dtype=torch.long)
    out["reference"] = ref
    return out


def _loop(state, rule, z, direction, lr, steps, marks, rec, dynamics):
    log_n = math.log(z.shape[0])
    for t in range(steps + 1):
        theta = state["theta"]
        scores = theta @ z.T  # [S, N]
        log_loss = torch.logsumexp(-scores, dim=1) - log_n
        if t in marks:
            norm = theta.norm(dim=1)
            if not torch.isfinite(norm).all() or not torch.isfinite(log_loss).all():
                raise LandscapeError(f"{dynamics} diverged at step {t} with lr={lr:g}; lower the learning rate")
            rec["cosine"].append(theta @ direction / norm)
            rec["margin"].append(scores.min(dim=1).values / norm)
            rec["norm"].append(norm)
            rec["log_loss"].append(log_loss)
            rec["theta"].append(theta.clone())
        if t == steps:
            break
        p = torch.softmax(-scores, dim=1) @ z  # [S, D] = −∇L / L
        rule(state, p, log_loss, lr)


class _threads:
    """Run a block with ``n`` torch threads (None: unchanged), then restore the previous number.

    A step on a few hundred samples is ~10 small kernels; two threads that must meet after each
    of them made a step 20-80x slower than one thread on a shared 2-core machine (measured).
    """

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        self.old = torch.get_num_threads()
        if self.n:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.old)
