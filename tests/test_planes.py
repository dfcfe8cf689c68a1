"""Planes: filter normalization, PCA and three-point planes, projections, batched cached surfaces."""

import math
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import landscape
from landscape import LandscapeError, Plane, evaluate_plane, make_plane
from landscape.views.planes import filter_normalized_direction
from landscape.problems.problem import Problem

from conftest import SMALL


@pytest.fixture(scope="module")
def digits():
    return landscape.make_problem("digits_mlp", **SMALL["digits_mlp"])


def test_registry_keys_equal_function_names():
    assert list(landscape.PLANES) == ["random", "pca", "points", "identity"]
    for name, fn in landscape.PLANES.items():
        assert fn.__name__ == name


def test_filter_normalized_rows_have_the_weights_row_norms(digits, gen):
    theta = digits.init(gen)
    d = filter_normalized_direction(digits, theta, generator=torch.Generator().manual_seed(3))
    w, dd = digits.layout.unflatten(theta.double()), digits.layout.unflatten(d)
    for name, shape in zip(digits.layout.names, digits.layout.shapes):
        if len(shape) >= 2:
            np.testing.assert_allclose(dd[name].reshape(shape[0], -1).norm(dim=1),
                                       w[name].reshape(shape[0], -1).norm(dim=1), rtol=1e-9)
            # a rescaling, not a copy: the row points elsewhere than the weights' row
            assert not torch.allclose(dd[name], w[name])
        else:
            assert torch.count_nonzero(dd[name]) == 0  # biases zeroed (Li et al.)
    keep = filter_normalized_direction(digits, theta, generator=torch.Generator().manual_seed(3), biases="keep")
    kk = digits.layout.unflatten(keep)
    assert torch.equal(kk["0.bias"], w["0.bias"]) and torch.allclose(kk["0.weight"], dd["0.weight"])
    layer = filter_normalized_direction(digits, theta, generator=torch.Generator().manual_seed(3),
                                        normalization="layer")
    ll = digits.layout.unflatten(layer)
    assert float(ll["2.weight"].norm()) == pytest.approx(float(w["2.weight"].norm()), rel=1e-9)


def test_random_plane_is_seeded_and_refuses_problems_without_weights(digits, gen):
    theta = digits.init(gen)
    p1 = make_plane("random", digits, theta, generator=torch.Generator().manual_seed(5))
    p2 = make_plane("random", digits, theta, generator=torch.Generator().manual_seed(5))
    p3 = make_plane("random", digits, theta, generator=torch.Generator().manual_seed(6))
    assert torch.equal(p1.directions, p2.directions) and not torch.equal(p1.directions, p3.directions)
    assert torch.equal(p1.origin, theta.double()) and p1.info["seed"] == 5
    with pytest.raises(LandscapeError, match="identity plane"):
        make_plane("random", landscape.make_problem("ring"), torch.zeros(2))
    with pytest.raises(LandscapeError, match="unknown normalization"):
        make_plane("random", digits, theta, normalization="batch")
    with pytest.raises(LandscapeError, match="unknown plane"):
        make_plane("spiral", digits, theta)


def test_pca_plane_contains_the_two_leading_components(digits):
    g = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(digits.dim, 3, generator=g, dtype=torch.float64))
    e1, e2, e3 = basis.T
    t = torch.linspace(0, 1, 80, dtype=torch.float64)
    end = torch.randn(digits.dim, generator=g, dtype=torch.float64)
    flat = end + (10 * (1 - t))[:, None] * e1 + (3 * torch.sin(3 * t))[:, None] * e2
    # a trajectory inside span(e1, e2): the plane is that span at the end point, and holds every point
    plane = make_plane("pca", digits, flat)
    assert torch.equal(plane.origin, flat[-1])
    np.testing.assert_allclose(torch.linalg.svdvals(plane.directions @ torch.stack([e1, e2]).T), [1, 1], atol=1e-9)
    np.testing.assert_allclose(plane.gram, torch.eye(2, dtype=torch.float64), atol=1e-12)
    assert float(plane.project(flat)[1].max()) < 1e-9
    assert sum(plane.info["explained_variance_ratio"]) == pytest.approx(1.0, abs=1e-12)
    # with a third, smaller component: the directions are the two leading right singular vectors
    traj = flat + (0.5 * torch.cos(7 * t))[:, None] * e3
    plane = make_plane("pca", digits, traj)
    x = (traj - traj[-1]).numpy()
    x = x - x.mean(0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    np.testing.assert_allclose(np.abs(np.sum(plane.directions.numpy() * vt[:2], axis=1)), [1, 1], atol=1e-9)
    np.testing.assert_allclose(plane.info["explained_variance_ratio"], (s**2 / (s**2).sum())[:2], rtol=1e-8)
    assert plane.names[0].startswith("PC1 (") and plane.names[1].startswith("PC2 (")
    with pytest.raises(LandscapeError, match="at least 3 points"):
        make_plane("pca", digits, traj[:2])


def test_three_point_plane_holds_its_points(digits, gen):
    pts = digits.init(gen, n=3).double() * 3
    plane = make_plane("points", digits, pts)
    coords, residual = plane.project(pts)
    assert float(residual.max()) < 1e-10 * float(pts.norm())
    chord = float((pts[1] - pts[0]).norm())
    np.testing.assert_allclose(coords[:2], [[0, 0], [chord, 0]], atol=1e-9 * chord)
    assert float(coords[2, 1]) > 0
    np.testing.assert_allclose(plane.gram, torch.eye(2, dtype=torch.float64), atol=1e-12)
    line = torch.stack([pts[0], pts[1], 2 * pts[1] - pts[0]])
    with pytest.raises(LandscapeError, match="one line"):
        make_plane("points", digits, line)
    with pytest.raises(LandscapeError, match="three points"):
        make_plane("points", digits, pts[:2])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-50, 50), min_size=2, max_size=2), st.integers(0, 10_000), st.floats(-5, 5))
def test_projection_recovers_coordinates_and_distance(coords, seed, off):
    g = torch.Generator().manual_seed(seed)
    origin, dirs = torch.randn(7, generator=g), torch.randn(2, 7, generator=g)  # not orthogonal
    plane = Plane(origin, dirs)
    normal = torch.randn(7, generator=g, dtype=torch.float64)
    normal -= plane.directions.T @ torch.linalg.solve(plane.gram, plane.directions @ normal)
    normal /= normal.norm()
    point = plane.point(coords) + off * normal
    c, r = plane.project(point)
    np.testing.assert_allclose(c, coords, atol=1e-8 * (1 + max(abs(v) for v in coords)))
    assert float(r) == pytest.approx(abs(off), abs=1e-8)


def test_identity_plane_surface_is_the_closed_form():
    ring = landscape.make_problem("ring")
    plane = make_plane("identity", ring)
    surf = evaluate_plane(ring, plane, grid=(31, 17), span=((-1.5, 1.5), (-1.0, 0.5)), dtype=torch.float64)
    assert surf.losses.shape == (31, 17) and surf.shape == (31, 17)
    x, y = torch.meshgrid(surf.a, surf.b, indexing="ij")
    np.testing.assert_allclose(surf.losses, (x**2 + y**2 - 1) ** 2 + 0.2 * y**2, rtol=1e-12, atol=1e-14)
    assert float(surf.a[0]) == -1.5 and float(surf.b[-1]) == 0.5
    with pytest.raises(LandscapeError, match="2 parameters"):
        make_plane("identity", landscape.make_problem("deep_linear"))


class _Conv(torch.nn.Module):  # not an nn.Sequential MLP: the generic vmap evaluator
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(1, 3, 3)
        self.out = torch.nn.Linear(3 * 6, 1)

    def forward(self, x):
        return self.out(torch.tanh(self.conv(x.unsqueeze(1))).flatten(1))


@pytest.mark.parametrize("kind", ["mlp", "mlp_decay", "vmap"])
def test_loss_on_plane_equals_the_loss_of_the_points(kind, gen):
    if kind == "vmap":
        x = torch.randn(40, 8, generator=gen)
        problem = landscape.from_module(_Conv(), (x, x.sum(1, keepdim=True)), "mse")
    else:
        problem = landscape.make_problem("digits_mlp", width=12, depth=2,
                                         weight_decay=0.01 if kind == "mlp_decay" else 0.0)
    origin, dirs = problem.init(gen), problem.init(gen, n=2) * 0.5
    coords = torch.randn(23, 2, generator=gen)
    split = "test" if "test" in problem.splits else "train"
    with torch.no_grad():
        fast = problem.loss_on_plane(origin, dirs, coords, split=split)
        slow = problem.loss(origin + coords @ dirs, split=split)
    np.testing.assert_allclose(fast, slow, rtol=2e-5, atol=1e-6)
    with pytest.raises(LandscapeError, match="loss_on_plane needs"):
        Problem.loss_on_plane(problem, origin, dirs[:, :5], coords)


def test_surface_cache_is_keyed_by_every_input(digits, gen, tmp_path):
    theta = digits.init(gen)
    plane = make_plane("random", digits, theta, generator=torch.Generator().manual_seed(0))
    first = evaluate_plane(digits, plane, grid=(7, 5), cache=tmp_path)
    files = sorted(tmp_path.iterdir())
    assert not first.cached and len(files) == 1 and files[0].name.startswith("surface-")
    again = evaluate_plane(digits, plane, grid=(7, 5), cache=tmp_path)
    assert again.cached and torch.equal(again.losses, first.losses) and again.key == first.key
    # any change of an input gives another key: a stale surface is never reused
    other_plane = make_plane("random", digits, theta, generator=torch.Generator().manual_seed(1))
    changed = [evaluate_plane(digits, plane, grid=(5, 7), cache=tmp_path),
               evaluate_plane(digits, plane, grid=(7, 5), split="test", cache=tmp_path),
               evaluate_plane(digits, plane, grid=(7, 5), span=((-1, 1), (-1, 2)), cache=tmp_path),
               evaluate_plane(digits, plane, grid=(7, 5), dtype=torch.float64, cache=tmp_path),
               evaluate_plane(digits, other_plane, grid=(7, 5), cache=tmp_path),
               evaluate_plane(landscape.make_problem("digits_mlp", width=16, data_seed=1), plane, grid=(7, 5),
                              cache=tmp_path)]
    assert not any(s.cached for s in changed)
    assert len({s.key for s in changed} | {first.key}) == 7
    assert len(list(tmp_path.glob("surface-*.pt"))) == 7 and not list(tmp_path.glob(".*"))
    # the surface's values are the losses of the grid's points
    pts = plane.point(first.coords().reshape(-1, 2)).float()
    np.testing.assert_allclose(first.losses.reshape(-1), digits.loss(pts), rtol=1e-5)
    # a torn cache file is recomputed, not trusted
    files[0].write_bytes(b"torn")
    redo = evaluate_plane(digits, plane, grid=(7, 5), cache=tmp_path)
    assert not redo.cached and torch.equal(redo.losses, first.losses)


def test_surface_input_errors_and_progress(digits, gen, capsys):
    plane = make_plane("random", digits, digits.init(gen), generator=gen)
    with pytest.raises(LandscapeError, match="AxB"):
        evaluate_plane(digits, plane, grid="big")
    with pytest.raises(LandscapeError, match="low < high"):
        evaluate_plane(digits, plane, grid=5, span=((1, -1), (0, 1)))
    with pytest.raises(LandscapeError, match="no data split"):
        evaluate_plane(digits, plane, grid=5, split="validation")
    with pytest.raises(LandscapeError, match="D = "):
        evaluate_plane(landscape.make_problem("ring"), plane)
    surf = evaluate_plane(digits, plane, grid="6x4", progress=True)
    assert surf.shape == (6, 4) and math.isfinite(surf.info["points_per_s"])
    err = capsys.readouterr().err
    assert "plane 6x4" in err


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    from landscape.views.surface import default_cache_dir

    monkeypatch.setenv("LANDSCAPE_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("LANDSCAPE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "landscape" / "surfaces"
    assert os.fspath(default_cache_dir()).endswith(os.path.join("landscape", "surfaces"))


@pytest.mark.parametrize("field, value", [
    ("seconds", "fast"), ("seconds", float("nan")), ("split", None), ("info", [1]), ("problem", "digits"),
    ("a", torch.zeros(3)), ("b", "x"), ("losses", torch.zeros(7, 5, dtype=torch.long)), ("losses", None),
])
def test_surface_cache_with_a_malformed_field_is_recomputed(digits, gen, tmp_path, field, value):
    from landscape.problems.checkpoint import atomic_save, read_file

    plane = make_plane("random", digits, digits.init(gen), generator=torch.Generator().manual_seed(0))
    first = evaluate_plane(digits, plane, grid=(7, 5), cache=tmp_path)
    (file,) = tmp_path.glob("surface-*.pt")
    record = read_file(file)
    record[field] = value
    atomic_save(record, file)
    redo = evaluate_plane(digits, plane, grid=(7, 5), cache=tmp_path)
    assert not redo.cached and torch.equal(redo.losses, first.losses)
    assert evaluate_plane(digits, plane, grid=(7, 5), cache=tmp_path).cached  # rewritten whole
