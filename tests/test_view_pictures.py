"""What a reader of a rendered view sees: the surface meets the minima, the sublevel set is part of the
surface, tick labels are whole and say where they stand, titles say what is drawn."""

import math

import numpy as np
import pytest
import torch

import landscape
from landscape.views.spans import nice_span, nice_ticks, tick_text
from landscape.views.surface import MIN_GAP, grid_lines

pv = pytest.importorskip("pyvista")
viz = pytest.importorskip("landscape.viz")
from landscape.viz._render import default_title, shade_level  # noqa: E402

W, H = 400, 300


@pytest.fixture(scope="module")
def ring_scene():
    ring = landscape.make_problem("ring")
    t = torch.linspace(0, math.pi, 41)
    pts = torch.stack([-torch.cos(t), torch.sin(t)], 1)
    arc = landscape.certify(ring, landscape.Path(pts, ring.loss(pts), method="string"), level=0.3)
    return landscape.build_scene(ring, paths={"arc": arc}, grid=(21, 21))


@pytest.fixture(scope="module")
def points_scene():
    """Two minima of a small MLP and a path off their chord: the plane through three points."""
    problem = landscape.make_problem("digits_mlp", width=8)
    a, b = problem.init(torch.Generator().manual_seed(3), n=2)
    bump = 0.3 * torch.randn(problem.dim, generator=torch.Generator().manual_seed(4))
    beads = torch.stack([a, (a + b) / 2 + bump, b])
    path = landscape.Path(beads, problem.loss(beads), method="string")
    return landscape.build_scene(problem, minima={"a": a, "b": b}, paths={"ab": path}, grid=(9, 9), samples=20)


def test_grid_lines_move_onto_points_without_slivers():
    x, on = grid_lines(-1.6, 1.6, 51, [1.0, -1.0, 5e-17, 0.97, 0.99, 7.0])
    h = 3.2 / 50
    assert x[0] == -1.6 and x[-1] == 1.6 and torch.all(x[1:] > x[:-1])
    assert float((x[1:] - x[:-1]).min()) >= MIN_GAP * h - 1e-15
    assert {-1.0, 0.97, 0.99} <= set(x[on].tolist())  # each on a line of its own
    assert 1.0 not in x.tolist()  # 0.01 from 0.99: a line there would make a sliver, so none
    assert 7.0 not in x.tolist() and len(on) == 4  # outside the span; 5e-17 keeps the line at 0
    even, none = grid_lines(0.0, 1.0, 11)
    assert none == [] and torch.allclose(even, torch.linspace(0, 1, 11, dtype=torch.float64))


def test_surface_passes_through_every_marker_on_the_plane(ring_scene, points_scene):
    for scene in (ring_scene, points_scene):
        surf = scene.surface
        assert surf.shape == (len(surf.a), len(surf.b))
        met = np.array(surf.info["through"])
        tol = 1e-12 * float(surf.a[-1] - surf.a[0])
        for m in scene.markers:
            assert np.abs(met - m.coords.numpy()).max(1).min() <= tol
            i, j = int((surf.a - m.coords[0]).abs().argmin()), int((surf.b - m.coords[1]).abs().argmin())
            assert abs(float(surf.a[i] - m.coords[0])) <= tol and abs(float(surf.b[j] - m.coords[1])) <= tol
            # the grid's loss there is the loss at the marker's point (float32 evaluations of one point)
            assert float(surf.losses[i, j]) == pytest.approx(m.loss, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("log", [False, True])
def test_drawn_surface_height_at_a_minimum_is_its_loss(ring_scene, points_scene, log):
    from landscape.viz._meshes import marker_nodes, scene_meshes

    for scene in (ring_scene, points_scene):
        meshes = scene_meshes(scene, log=log)
        a, b = scene.surface.shape
        z = meshes.surface.points[:, 2].reshape(b, a).T  # the grid's points, x fastest
        nodes = marker_nodes(scene)
        assert len(nodes) == len(scene.markers)
        for (i, j), m in zip(nodes, scene.markers):
            drawn = float(meshes.markers[f"{'minima' if m.kind == 'minimum' else 'saddles'}/{m.label}"].points[0, 2])
            assert z[i, j] == pytest.approx(drawn, rel=1e-4, abs=1e-6 * meshes.heights.scale)
            assert drawn == pytest.approx(float(meshes.heights.z(m.loss)), rel=1e-9)


def test_log_floor_is_the_lowest_loss_off_the_minima():
    from landscape.viz._meshes import marker_nodes, scene_meshes

    ring_scene = landscape.build_scene(landscape.make_problem("ring"), grid=(21, 21))  # its minima and saddles
    meshes = scene_meshes(ring_scene, log=True)
    losses = ring_scene.surface.losses.numpy().copy()
    on = marker_nodes(ring_scene)
    minima = [m for m in ring_scene.markers if m.kind == "minimum"]
    assert len(minima) == 2 and all(m.loss < 1e-12 for m in minima)  # the ring's minima are exact zeros
    for i, j in on:
        losses[i, j] = np.inf
    assert meshes.heights.floor == pytest.approx(float(losses[losses > 0].min()), rel=1e-12)
    # the zero minima are drawn at the floor, on the surface, and the legend says so
    assert meshes.below_floor >= len(minima)
    z = meshes.surface.points[:, 2]
    assert float(z.min()) == pytest.approx(float(meshes.heights.z(meshes.heights.floor)), rel=1e-9)
    plotter, meshes = viz.plot_scene(ring_scene, log=True, window_size=(W, H))
    plotter.close()
    assert any("drawn at it" in row[0] and f"{meshes.heights.floor:.3g}" in row[0] for row in meshes.legend)
    plotter, meshes = viz.plot_scene(ring_scene, log=False, window_size=(W, H))
    plotter.close()
    assert meshes.below_floor == 0 and not any("drawn at it" in row[0] for row in meshes.legend)


def test_surface_triangles_are_upright_and_none_is_a_sliver(ring_scene):
    """A height field over an increasing grid: every triangle faces up and covers a fair share of a cell."""
    from landscape.viz._meshes import scene_meshes

    surf = scene_meshes(ring_scene, log=True).surface.extract_surface(algorithm="dataset_surface").triangulate()
    tri = surf.faces.reshape(-1, 4)[:, 1:]
    p = surf.points[tri]
    e1, e2 = p[:, 1, :2] - p[:, 0, :2], p[:, 2, :2] - p[:, 0, :2]
    area = 0.5 * (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
    h = (float(ring_scene.surface.a[-1]) - float(ring_scene.surface.a[0])) / 20
    assert np.all(np.sign(area) == np.sign(area[0]))  # no folded triangle
    assert np.abs(area).min() >= 0.5 * (MIN_GAP * h) ** 2 * (1 - 1e-9)


def test_the_sublevel_set_is_the_surface_lighter_not_a_second_surface(ring_scene):
    from matplotlib import colormaps

    plotter, meshes = viz.plot_scene(ring_scene, window_size=(W, H), level=0.3)
    try:
        assert "sublevel" not in plotter.actors  # the overlay z-fought the surface in steep valleys
        assert meshes.sublevel is not None and (meshes.sublevel.point_data["loss"] <= 0.3 + 1e-9).all()
        lut = plotter.actors["surface"].mapper.lookup_table
        lo, hi = lut.scalar_range
        base = colormaps["viridis"]
        for value, lighter in ((0.5 * 0.3, True), (0.3 + 0.5 * (hi - 0.3), False)):
            rgb = np.array(lut.map_value(value)[:3], float) / (255 if max(lut.map_value(value)[:3]) > 1 else 1)
            plain = np.array(base((value - lo) / (hi - lo))[:3])
            expect = 0.55 * plain + 0.45 if lighter else plain
            np.testing.assert_allclose(rgb, expect, atol=0.02)
        shade_level(plotter, meshes, 1e-9)  # a view whose u moves re-colours the same surface
        value = 0.5 * 0.3
        rgb = np.array(lut.map_value(value)[:3], float) / (255 if max(lut.map_value(value)[:3]) > 1 else 1)
        np.testing.assert_allclose(rgb, base((value - lo) / (hi - lo))[:3], atol=0.02)
        # the level line lies on the drawn surface's contour, at the level's loss
        np.testing.assert_allclose(meshes.level_line.point_data["loss"], 0.3, rtol=1e-6)
    finally:
        plotter.close()


def test_round_spans_and_ticks():
    assert nice_span(-4.72, 36.2) == (-10.0, 40.0, 10.0)
    for lo, hi in [(-4.72, 36.2), (-11.2, 9.6), (-1.3, 1.3), (1e-5, 11.6), (0.0001, 0.00031), (-2e6, 3.3e6)]:
        a, b, s = nice_span(lo, hi)
        assert a <= lo and b >= hi and 2 <= round((b - a) / s) <= 5
        ticks = nice_ticks(a, b)
        assert ticks[0] == a and ticks[-1] == b and 3 <= len(ticks) <= 6
    assert nice_ticks(-1.6, 1.6) == [-1.6, -0.8, 0.0, 0.8, 1.6] and nice_ticks(-4.72, 36.2) is None
    assert [tick_text(v, 0.8) for v in (-1.6, 0.0, 0.8)] == ["-1.6", "0", "0.8"]
    assert tick_text(-11.0, 1.0) == "-11" and tick_text(0.00025, 0.00005) == "0.00025"


def _labels(axes, axis):
    array = axes.GetAxisLabels(axis)
    return [array.GetValue(k) for k in range(array.GetNumberOfValues())]


def test_axis_labels_are_whole_numbers_at_the_ticks_vtk_draws(ring_scene, points_scene):
    from landscape.viz._axes import vtk_ticks

    for scene, log in ((ring_scene, True), (points_scene, False)):
        plotter, meshes = viz.plot_scene(scene, window_size=(W, H), log=log)
        try:
            axes = plotter.renderer.cube_axes_actor
            ranges = [axes.GetXAxisRange(), axes.GetYAxisRange(), axes.GetZAxisRange()]
            box = axes.GetBounds()
            # the box is the plane's span, and its height range holds everything drawn
            surf = scene.surface
            assert box[:4] == pytest.approx([float(surf.a[0]), float(surf.a[-1]), float(surf.b[0]), float(surf.b[-1])])
            assert ranges[:2] == [tuple(box[:2]), tuple(box[2:4])]
            everything = np.concatenate([meshes.surface.points[:, 2]]
                                        + [m.points[:, 2] for m in meshes.curves.values()]
                                        + [m.points[:, 2] for m in meshes.markers.values()])
            assert box[4] <= everything.min() + 1e-9 and box[5] >= everything.max() - 1e-9
            assert ranges[2] == pytest.approx((box[4] / meshes.heights.scale, box[5] / meshes.heights.scale))
            for axis in range(3):
                labels = _labels(axes, axis)
                at = vtk_ticks(*ranges[axis], len(labels))
                shown = [(text, v) for text, v in zip(labels, at) if text]
                assert len(at) == len(labels) and len(shown) >= 2
                for text, v in shown:  # each label is complete: it reads back as the value where it stands
                    assert text.strip() == text and float(text) == pytest.approx(v, rel=5e-3, abs=1e-9 * (
                        ranges[axis][1] - ranges[axis][0]))
            # VTK's vector font at its default size drew a slanted "-11" as ".11": labels are larger
            from landscape.viz._axes import LABEL_SIZE

            assert axes.GetScreenSize() == LABEL_SIZE >= 12
            assert _labels(axes, 1)[0] == _labels(axes, 1)[-1] == ""  # corners are left to the x axis
            assert _labels(axes, 2)[0] == ""
            assert all(float(t) == round(float(t), 6) for t in _labels(axes, 0) if t)  # round: no "-0.428"
        finally:
            plotter.close()


def test_titles_name_the_problem_the_plane_and_what_is_drawn(ring_scene, points_scene, tmp_path):
    assert default_title(ring_scene) == "ring: loss on the (x, y) plane"
    assert default_title(ring_scene, log=True) == "ring: log10 loss on the (x, y) plane"
    title = default_title(points_scene)
    dim = points_scene.problem.dim
    assert title == f"digits_mlp (D = {dim:,}): train loss (cross_entropy) on the plane through a, b and ab bead 1"
    problem = landscape.make_problem("moons_mlp", width=6, n_train=80, n_test=40)
    result = landscape.train(problem, [0, 1], steps=40, lr=0.05, record_every=5)
    files = [landscape.save_checkpoint(tmp_path / f"m{i}.pt", problem, result.thetas[i],
                                       trajectory=result.trajectories[i]) for i in range(2)]
    pca = landscape.views.scene_from_files(files, grid=5)
    assert default_title(pca).startswith(f"moons_mlp (D = {problem.dim:,}): train loss")
    assert "on the PCA plane of 2 trajectories at m0, " in default_title(pca)
    rnd = landscape.views.scene_from_files(files, grid=5, plane="random", trajectories=False,
                                           generator=torch.Generator().manual_seed(7))
    assert default_title(rnd).endswith("on a filter-normalized random plane at m0, seed 7")
