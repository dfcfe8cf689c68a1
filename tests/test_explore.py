"""``landscape explore`` in a real headless Chromium: the level slider moves the valley count as ``landscape valleys`` says.

Himmelblau's function has four global minima joined over four saddles; the merge tree of its minima
(``landscape valleys``) merges them at three levels, so the count goes 4 → 3 → 2 → 1 as u rises.
The test starts the command as a user would, drives its page with Playwright pointed at the
system's Chromium (no browser download), moves the slider across every merge level and checks
each displayed count against the command's report. The screenshot is kept: in
``$LANDSCAPE_EXPLORE_SCREENSHOT`` when set, else in the test's temporary folder (printed).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from _servers import interrupt
import torch

import landscape

pytest.importorskip("trame_pyvista", reason="the explorer needs the viz extra (trame-pyvista)")
playwright = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright: pip install playwright")

#: Waits are generous: a slow, loaded machine renders a frame in seconds, not milliseconds.
WAIT_MS = 120_000
COUNTS = re.compile(r"valleys: (\d+), spurious: (\d+) at u = ([-+0-9.e]+)")


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _landscape(*args):
    return [sys.executable, "-m", "landscape_cli.cli", *args]


def _expected(report, level):
    """Valleys and spurious valleys at ``level`` by the report of ``landscape valleys`` (counts change only
    at its rows' levels)."""
    rows = [r for r in report["levels"] if r["level"] <= level]
    return (rows[-1]["n_valleys"], rows[-1]["n_spurious"]) if rows else (0, 0)


@pytest.fixture
def minima(tmp_path):
    problem = landscape.make_problem("himmelblau")
    files = []
    for i, theta in enumerate(problem.minima.float()):
        files.append(str(landscape.save_checkpoint(tmp_path / f"min{i}.pt", problem, theta, seed=i)))
    return files


def test_levels_and_a_valleys_file_give_the_counts_of_the_report(minima, tmp_path):
    from landscape.valleys import read_graph, write_graph
    from landscape.views import Levels

    problem = landscape.make_problem("himmelblau")
    thetas = torch.stack([landscape.load_checkpoint(f).theta for f in minima])
    graph, report = landscape.find_valleys(problem, thetas, names=minima, generator=torch.Generator().manual_seed(0))
    write_graph(graph, tmp_path / "graph.json")
    back = read_graph(tmp_path / "graph.json", problem, thetas, [Path(f).name for f in minima])  # matched by name
    for levels in (Levels.of(graph), Levels.of(back)):
        assert [(m["before"], m["after"]) for m in levels.merges()] == [(4, 3), (3, 2), (2, 1)]
        for row in report["levels"]:
            at = levels.at(row["level"])
            assert (at.n_valleys, at.n_spurious) == (row["n_valleys"], row["n_spurious"])
        for log in (False, True):
            for position in (0, 137, 1000):
                assert levels.position(levels.level(position, log=log), log=log) == position
    with pytest.raises(landscape.LandscapeError, match="not among the files"):
        read_graph(tmp_path / "graph.json", problem, thetas[:2], ["a.pt", "b.pt"])


def _read_url(proc, timeout):
    """The first line the command prints on stdout: the page's address."""
    out = {}
    reader = threading.Thread(target=lambda: out.setdefault("line", proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return out.get("line", "").strip()


def test_slider_moves_the_valley_count_as_landscape_valleys_says(minima, tmp_path):
    browser_path = _chromium()
    if browser_path is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium); the explorer was not opened")
    env = {**os.environ, "LANDSCAPE_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(_landscape("valleys", *minima, "--json"), capture_output=True, text=True, timeout=600,
                          env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    events = [r["level"] for r in report["levels"]]
    assert [r["n_valleys"] for r in report["levels"]] == [4, 3, 2, 1]  # the ground truth: three merges

    proc = subprocess.Popen(_landscape("explore", *minima, "--no-browser"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    shot = Path(os.environ.get("LANDSCAPE_EXPLORE_SCREENSHOT") or tmp_path / "explore.png")
    try:
        url = _read_url(proc, 300)
        assert url.startswith("http://127.0.0.1:"), (url, proc.poll())
        with playwright.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=browser_path, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(WAIT_MS)
            page.goto(url)
            page.wait_for_function("() => /^valleys: /.test(document.querySelector('#valley-counts')?.innerText)")
            page.wait_for_selector(".v-slider-thumb[role=slider]")
            low, high = float(page.inner_text("#level-low")), float(page.inner_text("#level-high"))
            track = page.locator("#level-slider .v-slider-track").bounding_box()

            def shown():
                n, m, u = COUNTS.search(page.inner_text("#valley-counts")).groups()
                return int(n), int(m), float(u)

            # the slider to the middle of each interval between the merge levels, and above the last one
            targets = [(a + b) / 2 for a, b in zip(events, events[1:])] + [(events[-1] + high) / 2]
            seen = []
            for u in targets:
                x = track["x"] + track["width"] * (u - low) / (high - low)
                thumb = page.locator(".v-slider-thumb[role=slider]").bounding_box()  # dragged, as a hand would
                page.mouse.move(thumb["x"] + thumb["width"] / 2, thumb["y"] + thumb["height"] / 2)
                page.mouse.down()
                page.mouse.move(x, track["y"] + track["height"] / 2, steps=4)
                page.mouse.up()
                # the page shows u at the slider's final position once the server has re-shaded the view
                position = float(page.get_attribute(".v-slider-thumb[role=slider]", "aria-valuenow"))
                final = low + (high - low) * position / float(page.get_attribute(".v-slider-thumb[role=slider]",
                                                                                 "aria-valuemax"))
                page.wait_for_function("([re, u]) => { const m = document.querySelector('#valley-counts').innerText"
                                       ".match(new RegExp(re)); return m && Math.abs(+m[3] - u) <= 1e-5 * "
                                       "Math.max(1, Math.abs(u)); }", arg=[COUNTS.pattern, final])
                n, m, level = shown()
                assert (n, m) == _expected(report, level), (level, n, m)
                seen.append(n)
            assert seen == [4, 3, 2, 1]
            # a click on a merge in the list moves u to its level exactly
            before = page.inner_text("#valley-counts")
            page.click("#merge-1")
            page.wait_for_function("t => document.querySelector('#valley-counts').innerText !== t", arg=before)
            n, m, level = shown()
            assert level == pytest.approx(events[2], rel=1e-5) and (n, m) == _expected(report, events[2])
            page.click("#minimum-0")
            page.wait_for_function("() => document.querySelector('#minimum-details').innerText.includes('loss')")
            assert "min0.pt" in page.inner_text("#minimum-details")
            time.sleep(1.0)  # let the last rendered frame arrive before the picture
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot))
            browser.close()
        print(f"explorer screenshot: {shot}")
        import numpy as np
        from PIL import Image

        with Image.open(shot) as im:
            pixels = np.asarray(im.convert("RGB"))
        assert pixels.shape == (900, 1400, 3) and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 500
    finally:
        if not interrupt(proc):  # Ctrl-C
            pytest.fail("landscape explore did not stop on Ctrl-C within 60 s")
        err = proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == 0, err[-2000:]
    assert "stopped" in err
