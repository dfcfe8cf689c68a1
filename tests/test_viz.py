"""3-D views: off-screen images with things where the projection puts them, HTML and VTK exports."""

import base64
import math
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

import landscape
from landscape import LandscapeError

pv = pytest.importorskip("pyvista")
viz = pytest.importorskip("landscape.viz")

W, H = 400, 300


def test_import_landscape_loads_no_rendering_library():
    code = ("import sys, landscape, landscape.viz, landscape_cli.cli\n"
            "bad = sorted({m.split('.')[0] for m in sys.modules} & {'pyvista', 'matplotlib', 'vtk', 'vtkmodules', "
            "'trame_vtk'})\n"
            "assert not bad, bad\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def ring_scene():
    ring = landscape.make_problem("ring")
    t = torch.linspace(0, math.pi, 41)
    pts = torch.stack([-torch.cos(t), torch.sin(t)], 1)  # the upper half of the valley
    arc = landscape.certify(ring, landscape.Path(pts, ring.loss(pts), method="string"), level=0.3)
    return landscape.build_scene(ring, paths={"arc": arc}, grid=(41, 41))


def _to_pixel(plotter, xyz):
    from vtkmodules.vtkRenderingCore import vtkCoordinate

    c = vtkCoordinate()
    c.SetCoordinateSystemToWorld()
    c.SetValue(*map(float, xyz))
    x, y = c.GetComputedDoubleDisplayValue(plotter.renderer)
    return int(round(H - 1 - y)), int(round(x))


def _magenta(img):
    """Pixels of the magenta tube, lit or in shade: red and blue alike and well above green."""
    r, g, b = (img[..., i].astype(float) for i in range(3))
    return (r > 90) & (b > 90) & (r > 1.6 * g + 20) & (b > 1.6 * g + 20) & (np.abs(r - b) < 0.35 * (r + b) / 2)


def _viridis_index(rgb):
    from matplotlib import colormaps

    table = colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255
    d = np.linalg.norm(table - np.asarray(rgb, float)[None], axis=1)
    return int(d.argmin()) / 255, float(d.min())


def test_top_view_puts_the_surface_and_the_path_where_the_projection_says(ring_scene):
    plotter, meshes = viz.plot_scene(ring_scene, window_size=(W, H), view="top", labels=False, shade=False,
                                     n_levels=0, log=True)
    try:
        img = np.asarray(plotter.screenshot(return_img=True))
        assert img.shape == (H, W, 3)
        assert len(np.unique(img.reshape(-1, 3), axis=0)) > 200 and img.std() > 20  # not blank
        z = meshes.heights.z
        # the path tube, drawn magenta, covers the projection of every sampled point of the half circle
        line = meshes.curves["paths/arc"]
        mask = _magenta(img)
        # near each end the minimum's sphere covers the tube, and the log-scale funnel of the minimum is
        # narrower than the grid (the interpolated surface lies above the true loss the tube follows)
        ends, r_marker = line.points[[0, -1], :2], meshes.radii["sphere"]
        ks = [k for k in range(3, line.n_points - 3, 4)
              if np.linalg.norm(ends - line.points[k, :2], axis=1).min() > 4 * r_marker]
        assert len(ks) > 50
        hits = 0
        for k in ks:
            r, c = _to_pixel(plotter, line.points[k])
            hits += bool(mask[max(r - 3, 0):r + 4, max(c - 3, 0):c + 4].any())
        assert hits == len(ks)
        assert 0.002 < mask.mean() < 0.1
        # the surface is where the projection says, coloured by log10 loss: the flat valley floor of the
        # lower half (loss 0.1, no path there) and the flat hilltop at the origin (loss 1)
        lo, hi = np.log10(float(ring_scene.surface.losses.min())), np.log10(float(ring_scene.surface.losses.max()))
        found = []
        for point, loss in (((-math.sqrt(0.5), -math.sqrt(0.5)), 0.1), ((0.0, 0.0), 1.0)):
            r, c = _to_pixel(plotter, (*point, float(z(loss))))
            assert not mask[r - 3:r + 4, c - 3:c + 4].any()
            index, dist = _viridis_index(img[r, c])
            # shading darkens a lit colour a little: the nearest colour-map entry sits a bit lower
            assert dist < 60 and index == pytest.approx((np.log10(loss) - lo) / (hi - lo), abs=0.2)
            found.append(index)
        assert found[1] > found[0] + 0.1
        # off the plane there is only the white background
        r, c = _to_pixel(plotter, (0.0, -2.4, 0.0))
        if 0 <= r < H and 0 <= c < W:
            assert (img[r, c] > 245).all()
    finally:
        plotter.close()


def test_render_writes_png_vtk_files_that_reload(ring_scene, tmp_path):
    outs = [tmp_path / n for n in ("v.png", "v.vtm", "v.vts", "v.vtp", "v.vtk")]
    written = viz.render(ring_scene, outs, window_size=(W, H), log=True, level=0.3, path_color="length")
    assert written == outs and all(o.exists() for o in outs)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left
    from PIL import Image

    with Image.open(outs[0]) as im:
        assert im.size == (W, H)
    losses = ring_scene.surface.losses.numpy()
    blocks = pv.read(outs[1])
    assert isinstance(blocks, pv.MultiBlock)
    names = set(blocks.keys())
    assert {"surface", "contours", "sublevel", "level", "paths/arc", "saddles/saddle 1"} <= names
    np.testing.assert_allclose(blocks["surface"].point_data["loss"], losses.ravel(order="F"))
    path = blocks["paths/arc"]
    np.testing.assert_allclose(path.point_data["loss"], ring_scene.curves[0].losses.numpy())
    np.testing.assert_allclose(path.points[:, :2], ring_scene.curves[0].coords.numpy(), atol=1e-6)
    assert (blocks["sublevel"].point_data["loss"] <= 0.3 + 1e-9).all()
    np.testing.assert_allclose(blocks["level"].point_data["loss"], 0.3, rtol=1e-6)
    vts = pv.read(outs[2])
    assert vts.dimensions[:2] == (41, 41)
    np.testing.assert_allclose(vts.point_data["loss"], losses.ravel(order="F"))
    vtp = pv.read(outs[3])
    assert set(np.unique(vtp.point_data["part"])) == set(range(1 + len(ring_scene.markers)))
    assert pv.read(outs[4]).n_points == 41 * 41
    image = viz.render(ring_scene, window_size=(W, H))
    assert image.shape == (H, W, 3)


def test_render_input_errors(ring_scene, tmp_path):
    with pytest.raises(LandscapeError, match="unknown output format"):
        viz.render(ring_scene, tmp_path / "v.gif")
    with pytest.raises(LandscapeError, match="unknown view"):
        viz.render(ring_scene, tmp_path / "v.png", view="below")
    if not viz.has_display():
        with pytest.raises(LandscapeError, match="no display"):
            viz.render(ring_scene, show=True)


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_html_page_shows_the_surface_in_headless_chromium(ring_scene, tmp_path):
    page = tmp_path / "view.html"
    viz.render(ring_scene, page, window_size=(W, H))
    text = page.read_text()
    assert "OfflineLocalView" in text and len(text) > 100_000
    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium); the HTML page was not opened")
    shot = tmp_path / "shot.png"
    args = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=800,600",
            "--virtual-time-budget=15000", page.as_uri()]
    done = subprocess.run(args, capture_output=True, text=True, timeout=180)
    assert shot.exists(), done.stderr[-2000:]
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB"))[:, :640]  # left of the colour bar
    from matplotlib import colormaps

    table = colormaps["viridis"](np.linspace(0, 1, 64))[:, :3] * 255
    px = img.reshape(-1, 3).astype(float)[::7]
    nearest = np.min(np.linalg.norm(px[:, None, :] - table[None], axis=2), axis=1)
    coloured = (img.max(2).astype(int) - img.min(2) > 25).mean()
    # a good share of the page is the surface (lit, so not all of it matches the colour map exactly);
    # a page whose scene failed to load is white with a colour bar (measured: 2-3% coloured)
    assert coloured > 0.10 and (nearest < 45).mean() > 0.03
    assert _magenta(img).any()  # and the path tube is there
    corner = img[4:60, 4:300].astype(int)  # the legend over the view's top-left corner: dark text on white
    assert (corner.max(2) < 90).mean() > 0.005


def test_html_page_has_a_title_a_legend_and_a_z_axis_in_loss_units(ring_scene, tmp_path):
    import io
    import json

    from landscape.viz._meshes import round_scale

    page = viz.render(ring_scene, tmp_path / "view.html", window_size=(W, H))[0].read_text()
    plotter, meshes = viz.plot_scene(ring_scene, window_size=(W, H))
    plotter.close()
    scale = meshes.heights.scale
    assert "<title>ring: loss on the (x, y) plane</title>" in page and 'id="landscape-legend"' in page
    assert f"z axis: loss \u00d7 {scale:g}" in page and "length/chord" in page
    assert scale == round_scale(scale) and meshes.heights.offset == 0.0
    # the viewer's z ticks are drawn heights: with offset 0 they read loss × scale exactly
    archive = page.split('const base64Str = "')[1].split('"')[0]
    index = json.loads(zipfile.ZipFile(io.BytesIO(base64.b64decode(archive))).read("index.json"))
    axes = [n for n in _nodes(index["scene"]) if n.get("type") == "vtkCubeAxesActor"]
    assert axes and axes[0]["properties"]["axisLabels"][2] == "z"
    z0, z1 = axes[0]["properties"]["dataBounds"][4:]
    h = meshes.heights.height(ring_scene.surface.losses.numpy())
    assert z0 <= scale * np.nanmin(h) + 1e-6 and z1 >= scale * np.nanmax(h) - 1e-6


def _nodes(node):
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _nodes(v)
    elif isinstance(node, list):
        for v in node:
            yield from _nodes(v)


@pytest.mark.parametrize("x, expected", [(0.62, 0.6), (0.85, 0.8), (1.1, 1.0), (1.2, 1.25), (2.6, 2.5), (3.2, 3.0),
                                         (6.2, 6.0), (8.3, 8.0), (9.5, 10.0), (0.0031, 0.003), (420.0, 400.0)])
def test_round_scale_is_the_nearest_round_number_in_log(x, expected):
    from landscape.viz._meshes import ROUND_STEPS, round_scale

    assert round_scale(x) == pytest.approx(expected)
    for y in np.geomspace(1e-4, 1e4, 97):  # never more than 16% away
        assert 1 / 1.16 < round_scale(y) / y < 1.16
    assert all(a < b for a, b in zip(ROUND_STEPS, ROUND_STEPS[1:]))


def test_html_archive_holds_the_surface(ring_scene):
    from landscape.viz._html import scene_archive

    plotter, _ = viz.plot_scene(ring_scene, window_size=(W, H))
    try:
        data = scene_archive(plotter)
    finally:
        plotter.close()
    import io
    import json

    index = json.loads(zipfile.ZipFile(io.BytesIO(data)).read("index.json"))
    sizes = [len(h["content"]) for h in index["hashes"].values()]
    assert index["scene"]["type"].endswith("RenderWindow") and max(sizes) > 41 * 41
