"""The normalized-weight view of a trajectory under an exponential-type loss.

Poggio, Banburski & Liao (2019, 2020), after Soudry et al. (JMLR 2018): on separable data,
gradient descent on an exponential-type loss drives ‖θ‖ to infinity (slowly, like log t) while
the direction θ/‖θ‖ converges to a (local) maximum-margin direction. The object to look at is
therefore not θ but θ/‖θ‖ on the unit sphere, beside ‖θ‖ over time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .._errors import LandscapeError


@dataclass
class NormalizedWeights:
    """A trajectory seen through its norm and its direction.

    Attributes
    ----------
    steps : ndarray, shape (T,)
    norms : ndarray, shape (T,)
        ‖θ_t‖.
    sphere : ndarray, shape (T, 3)
        θ_t/‖θ_t‖ in the 3-D subspace that holds most of the directions (the top right singular
        vectors of the uncentred matrix of directions), rescaled back to the unit sphere.
    captured : ndarray, shape (T,)
        The share of each unit direction inside that subspace, ‖P n_t‖² ∈ [0, 1] (1: drawn exactly).
    angle_to_final : ndarray, shape (T,)
        Angle in degrees between θ_t/‖θ_t‖ and the last direction.
    """

    steps: np.ndarray
    norms: np.ndarray
    sphere: np.ndarray
    captured: np.ndarray
    angle_to_final: np.ndarray


def normalized_weights(trajectory) -> NormalizedWeights:
    """Norms, directions on the unit sphere (projected to 3-D) and angles of a trajectory.

    Parameters
    ----------
    trajectory : dict or Tensor
        ``{"step": [T], "theta": [T, D]}`` as stored in checkpoints, or the ``theta`` [T, D] alone.

    Raises
    ------
    LandscapeError
        Fewer than two points, or a point at θ = 0 (it has no direction).
    """
    if isinstance(trajectory, dict):
        theta = trajectory.get("theta")
        steps = trajectory.get("step")
    else:
        theta, steps = trajectory, None
    if not isinstance(theta, torch.Tensor) or theta.dim() != 2 or theta.shape[0] < 2:
        raise LandscapeError("the normalized-weight view needs a trajectory theta of shape (T >= 2, D); "
                             "train with the trajectory recorded")
    theta = theta.detach().cpu().double()
    steps = np.arange(theta.shape[0]) if steps is None else torch.as_tensor(steps).cpu().numpy().astype(float)
    norms = theta.norm(dim=1)
    if (norms == 0).any():
        raise LandscapeError("the trajectory passes through theta = 0, which has no direction; "
                             "start away from the origin")
    n = theta / norms[:, None]
    _, _, vh = torch.linalg.svd(n, full_matrices=False)
    k = min(3, vh.shape[0])
    proj = n @ vh[:k].T  # [T, k]
    if k < 3:
        proj = torch.cat([proj, proj.new_zeros(proj.shape[0], 3 - k)], 1)
    length = proj.norm(dim=1)
    sphere = proj / length.clamp_min(1e-300)[:, None]
    cos = (n @ n[-1]).clamp(-1, 1)
    return NormalizedWeights(steps, norms.numpy(), sphere.numpy(), (length ** 2).numpy(),
                             np.degrees(np.arccos(cos.numpy())))


def plot_normalized_weights(trajectory, *, title: str | None = None):
    """θ/‖θ‖ on the unit sphere (left) beside ‖θ‖ and the angle to the final direction over time (right).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from mpl_toolkits.mplot3d import Axes3D  # noqa: F401 - registers the 3d projection

    from ._charts import figure

    w = normalized_weights(trajectory)
    fig = figure(10.0, 4.6)
    ax = fig.add_subplot(1, 2, 1, projection="3d")
    u, v = np.mgrid[0:2 * np.pi:36j, 0:np.pi:18j]
    ax.plot_wireframe(np.cos(u) * np.sin(v), np.sin(u) * np.sin(v), np.cos(v), color="lightgray", lw=0.4)
    s = w.sphere
    colors = np.linspace(0, 1, len(s))
    ax.scatter(s[:, 0], s[:, 1], s[:, 2], c=colors, cmap="viridis", s=10, depthshade=False)
    ax.plot(s[:, 0], s[:, 1], s[:, 2], color="black", lw=0.8)
    ax.scatter(*s[0], color="tab:blue", s=50, marker="s", label="start")
    ax.scatter(*s[-1], color="tab:red", s=60, marker="*", label="end")
    ax.set_box_aspect((1, 1, 1))
    ax.set_title(f"θ/‖θ‖ on the unit sphere (3-D projection holds {100 * w.captured.mean():.1f}%)",
                 fontsize="medium")
    ax.legend(fontsize="small", loc="upper left")
    right = fig.add_subplot(1, 2, 2)
    steps = np.maximum(w.steps, 1) if w.steps[0] == 0 else w.steps
    right.plot(steps, w.norms, color="black", lw=1.8, label="‖θ‖")
    right.set_xscale("log")
    right.set_xlabel("step")
    right.set_ylabel("‖θ‖")
    twin = right.twinx()
    twin.plot(steps, w.angle_to_final, color="tab:red", lw=1.2, label="angle to the final direction")
    twin.set_ylabel("angle to final θ/‖θ‖ (degrees)", color="tab:red")
    lines = right.get_lines() + twin.get_lines()
    right.legend(lines, [ln.get_label() for ln in lines], fontsize="small", loc="upper left")
    right.grid(alpha=0.3)
    right.set_title("norm grows, direction settles", fontsize="medium")
    if title:
        fig.suptitle(title)
    return fig
