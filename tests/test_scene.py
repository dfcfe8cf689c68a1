"""Scenes: every object is drawn at its own loss, with its distance from the plane."""

import math

import numpy as np
import pytest
import torch

import landscape
from landscape import LandscapeError, build_scene
from landscape.views import scene_from_files


def _arc(problem, n=21):
    t = torch.linspace(0, math.pi, n)
    pts = torch.stack([-torch.cos(t), torch.sin(t)], 1)
    return landscape.certify(problem, landscape.Path(pts, problem.loss(pts), method="string"), level=0.3)


def test_ring_scene_places_paths_and_minima_at_their_true_losses():
    ring = landscape.make_problem("ring")
    arc = _arc(ring)
    scene = build_scene(ring, paths={"arc": arc}, grid=(21, 21))
    assert scene.plane.kind == "identity" and scene.surface.shape == (21, 21)
    (curve,) = scene.curves
    # drawn densely: the curve's points are on the polyline and carry the loss at those points
    pts = curve.coords.float()
    np.testing.assert_allclose(curve.losses, ring.loss(pts), rtol=1e-6, atol=1e-7)
    assert float(curve.residual.max()) == 0.0
    assert float(curve.arc[-1]) == pytest.approx(arc.normalized_length, rel=1e-6)
    assert curve.figures["normalized_length"] == pytest.approx(math.pi / 2, rel=5e-3)  # the half circle
    assert curve.figures["status"] == "connected" and curve.figures["level"] == 0.3
    # no minima were given: the path's problem is analytic, its saddles are drawn, the span is its box
    kinds = [m.kind for m in scene.markers]
    assert kinds.count("saddle") == 2
    saddle = next(m for m in scene.markers if m.kind == "saddle")
    assert saddle.loss == pytest.approx(0.2 - 0.01, rel=1e-6)  # bump R² − bump²/4
    assert scene.surface.summary()["span"] == [[-1.6, 1.6], [-1.6, 1.6]]
    summary = scene.summary()
    assert summary["curves"][0]["max_residual"] == 0.0 and summary["plane"]["kind"] == "identity"


def test_analytic_problem_alone_draws_its_known_minima():
    scene = build_scene(landscape.make_problem("himmelblau"), grid=9)
    minima = [m for m in scene.markers if m.kind == "minimum"]
    assert len(minima) == 4 and max(m.loss for m in minima) < 1e-10
    assert scene.loss_name == "loss"


def test_points_plane_through_two_minima_and_the_farthest_bead(gen):
    problem = landscape.make_problem("digits_mlp", width=8)
    a, b = problem.init(gen, n=2)
    mid = (a + b) / 2
    bump, other = torch.randn(2, problem.dim, generator=gen) * 0.3
    beads = torch.stack([a, mid + 0.5 * other, mid + bump, b])  # bead 2 is the farthest off the chord
    path = landscape.Path(beads, problem.loss(beads), method="string")
    scene = build_scene(problem, minima={"a": a, "b": b}, paths={"ab": path}, grid=(5, 5), samples=30)
    assert scene.plane.kind == "points" and scene.plane.names == ("a -> b", "towards ab bead 2")
    for m in scene.markers:
        assert m.residual < 1e-5 * float(a.norm())
    (curve,) = scene.curves
    knots = curve.coords.shape[0]
    assert knots == 3 * 10 + 1  # three segments of ten pieces each
    res = curve.residual
    assert float(res[0]) < 1e-5 and float(res[20]) < 1e-4 and float(res[-1]) < 1e-5  # a, bead 2, b
    assert float(res[10]) > 0.1  # bead 1 is off the plane, and the scene says by how much
    assert curve.summary()["max_residual_over_chord"] > 0
    np.testing.assert_allclose(curve.losses[::10], path.losses, rtol=1e-5)
    # the drawn span covers every projection
    span = scene.surface.summary()["span"]
    allc = torch.cat([curve.coords] + [m.coords[None] for m in scene.markers])
    assert span[0][0] <= float(allc[:, 0].min()) and float(allc[:, 0].max()) <= span[0][1]
    assert span[1][0] <= float(allc[:, 1].min()) and float(allc[:, 1].max()) <= span[1][1]


def test_random_and_pca_scenes_from_files(tmp_path):
    problem = landscape.make_problem("moons_mlp", width=6, n_train=80, n_test=40)
    result = landscape.train(problem, [0, 1], steps=60, lr=0.05, record_every=5)
    files = []
    for i in range(2):
        files.append(landscape.save_checkpoint(tmp_path / f"m{i}.pt", problem, result.thetas[i],
                                               trajectory=result.trajectories[i]))
    pca = scene_from_files(files, grid=5)
    assert pca.plane.kind == "pca" and len([c for c in pca.curves if c.kind == "trajectory"]) == 2
    traj = pca.curves[0]
    np.testing.assert_allclose(traj.losses, result.trajectories[0]["loss"], rtol=1e-5)
    assert traj.steps[-1] == result.steps[0]
    rnd = scene_from_files(files, grid=5, plane="random", trajectories=False,
                           generator=torch.Generator().manual_seed(0))
    assert rnd.plane.kind == "random" and not rnd.curves
    assert rnd.surface.summary()["span"][0][0] <= -1.0  # Li et al.'s range at least
    other = landscape.make_problem("moons_mlp", width=7, n_train=80, n_test=40)
    odd = landscape.save_checkpoint(tmp_path / "odd.pt", other, other.init(torch.Generator().manual_seed(0)))
    with pytest.raises(LandscapeError, match="render files of one problem together"):
        scene_from_files([files[0], odd], grid=5)
    with pytest.raises(LandscapeError, match="unknown plane option"):
        scene_from_files(files, grid=5, plane_options={"colour": 1})
    with pytest.raises(LandscapeError, match="three minima"):
        scene_from_files(files, grid=5, plane="points")
    with pytest.raises(LandscapeError, match="nothing to render"):
        scene_from_files([])
    with pytest.raises(LandscapeError, match="no known minima"):
        scene_from_files([], problem=problem)
