"""``landscape explore`` in headless Chromium, the rough edges of issue 26: each tab its own state, the log
switch keeps u, u follows each arrow key, the scene shows at once, the merge tree fits its panel, and
closing tabs prints no trace.

One server (``landscape explore`` on Himmelblau's four minima, as a user starts it) and one browser serve
every test; the last test stops the server with Ctrl-C and reads everything it printed.
"""

import os
import signal
import subprocess
import threading
import time

import pytest
from _servers import interrupt

import landscape
from test_explore import COUNTS, WAIT_MS, _chromium, _landscape, _read_url

pytest.importorskip("trame_pyvista", reason="the explorer needs the viz extra (trame-pyvista)")
playwright = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright: pip install playwright")

THUMB = ".v-slider-thumb[role=slider]"
VIEWPORT = {"width": 1400, "height": 900}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    if _chromium() is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium); the explorer was not opened")
    work = tmp_path_factory.mktemp("tabs")
    problem = landscape.make_problem("himmelblau")
    files = [str(landscape.save_checkpoint(work / f"min{i}.pt", problem, theta, seed=i))
             for i, theta in enumerate(problem.minima.float())]
    env = {**os.environ, "LANDSCAPE_CACHE": str(work / "cache"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(_landscape("explore", *files, "--grid", "31x31", "--no-browser"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    err = []
    reader = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        url = _read_url(proc, 300)
        assert url.startswith("http://127.0.0.1:"), (url, proc.poll(), "".join(err)[-2000:])
        with playwright.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=_chromium(), args=["--no-sandbox", "--disable-gpu"])
            yield {"url": url, "browser": browser, "proc": proc, "err": err, "reader": reader, "work": work}
            browser.close()
    finally:
        interrupt(proc)
        reader.join(10)
        proc.stdout.close()
        proc.stderr.close()


def _open(served, context=None):
    page = context.new_page() if context is not None else served["browser"].new_page(viewport=VIEWPORT)
    page.set_default_timeout(WAIT_MS)
    page.goto(served["url"])
    page.wait_for_function("() => /^valleys: /.test(document.querySelector('#valley-counts')?.innerText)")
    return page


def _u(page) -> float:
    return float(COUNTS.search(page.inner_text("#valley-counts")).group(3))


def _wait_u(page, u) -> float:
    """Until the page shows u (a merge chip's u, to its 4 digits); the u shown (6 digits)."""
    page.wait_for_function("([re, u]) => { const m = document.querySelector('#valley-counts').innerText"
                           ".match(new RegExp(re)); return m && Math.abs(+m[3] - u) <= 1e-3 * Math.max(1, Math.abs(u)) }",
                           arg=[COUNTS.pattern, u])
    return _u(page)


def _merge_levels(page):
    """The merge levels on the page's chips (4 digits)."""
    return [float(page.inner_text(f"#merge-{k}").split(":")[0]) for k in range(3)]


def test_the_scene_shows_at_once(served):
    started = time.perf_counter()
    page = _open(served)
    counts = time.perf_counter() - started
    # with the counts comes the scene's picture: the page is never blank while the first frame renders
    page.wait_for_function("() => { const im = document.querySelector('#view-placeholder'); "
                           "return im && im.complete && im.naturalWidth > 0 }", timeout=5000)
    box = page.locator("#view-placeholder").bounding_box()
    assert box["width"] > 400 and box["height"] > 300
    shot = served["work"] / "at_once.png"
    page.screenshot(path=str(shot), clip=box)
    import numpy as np
    from PIL import Image

    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("RGB")).reshape(-1, 3)
    assert len(np.unique(pixels, axis=0)) > 500, "the view area is blank"
    page.wait_for_function("() => [...document.querySelectorAll('#view img')].some(im => im.naturalWidth > 0)")
    frame = time.perf_counter() - started
    print(f"counts and the scene's picture after {counts:.1f} s, the first rendered frame after {frame:.1f} s; "
          f"picture kept in {shot}")
    page.close()


def test_the_log_switch_keeps_u_exactly(served):
    page = _open(served)
    page.click("#merge-1")  # u at a merge level exactly: no slider position has it
    _wait_u(page, _merge_levels(page)[1])
    before = page.inner_text("#valley-counts")
    linear = (page.inner_text("#level-low"), page.get_attribute(THUMB, "aria-valuenow"))
    for step in range(4):
        page.click("text=log scale")
        log = step % 2 == 0
        page.wait_for_function("([t, log]) => (document.querySelector('#level-low').innerText !== t) === log",
                               arg=[linear[0], log])
        page.wait_for_function("t => document.querySelector('#valley-counts').innerText === t", arg=before)
        shown = (page.inner_text("#level-low"), page.get_attribute(THUMB, "aria-valuenow"))
        assert (shown == linear) != log, (step, shown, linear)  # the slider moved to u on the other scale
        time.sleep(0.5)  # anything late would land now
        assert page.inner_text("#valley-counts") == before  # u kept exactly: 67.72 stays 67.72, both ways
    page.close()


def test_u_follows_each_arrow_key(served):
    page = _open(served)
    low, high = float(page.inner_text("#level-low")), float(page.inner_text("#level-high"))
    step = (high - low) / float(page.get_attribute(THUMB, "aria-valuemax"))
    page.focus(THUMB)
    seen = []
    for key in ["ArrowRight"] * 4 + ["ArrowLeft"] * 2:
        started = time.perf_counter()
        page.keyboard.press(key)
        position = float(page.get_attribute(THUMB, "aria-valuenow"))
        expected = low + step * position
        page.wait_for_function("([re, u, tol]) => { const m = document.querySelector('#valley-counts').innerText"
                               ".match(new RegExp(re)); return m && Math.abs(+m[3] - u) <= tol }",
                               arg=[COUNTS.pattern, expected, 0.5 * step + 1e-6 * high])
        seen.append((position, _u(page), time.perf_counter() - started))
    positions = [p for p, _, _ in seen]
    assert positions == [positions[0] + d for d in (0, 1, 2, 3, 2, 1)], positions
    us = [u for _, u, _ in seen]
    assert us[:4] == sorted(set(us[:4])) and us[4] == us[2] and us[5] == us[1], us  # each press its own u
    print("arrow keys: position, u, seconds until shown:", *[f"{p:.0f} {u:.6g} {s:.2f}" for p, u, s in seen])
    page.close()


def test_each_tab_has_its_own_state(served):
    context = served["browser"].new_context(viewport=VIEWPORT)
    first = _open(served, context)
    start = _u(first)
    levels = _merge_levels(first)
    first.click("#merge-2")
    u_first = _wait_u(first, levels[2])
    second = _open(served, context)  # the same browser, the same cookie: a tab of its own all the same
    assert _u(second) == start != u_first  # it opens where the explorer starts, not at the other tab's u
    second.click("#merge-0")
    u_second = _wait_u(second, levels[0])
    second.click("text=log scale")
    second.wait_for_function("() => document.querySelector('#log-scale').checked")
    time.sleep(1.0)
    assert _u(first) == u_first and not first.is_checked("#log-scale")
    first.focus(THUMB)
    first.keyboard.press("ArrowRight")
    first.wait_for_function("u => !document.querySelector('#valley-counts').innerText.includes('u = ' + u)",
                            arg=first.inner_text("#valley-counts").split("u = ")[1].split(" ")[0])
    time.sleep(1.0)
    assert _u(second) == u_second and second.is_checked("#log-scale")
    context.close()


def test_the_merge_tree_fits_its_panel(served):
    page = _open(served)
    page.wait_for_function("() => { const im = document.querySelector('#merge-tree'); "
                           "return im && im.complete && im.naturalWidth > 0 }")
    tree = page.evaluate("() => { const im = document.querySelector('#merge-tree'), r = im.getBoundingClientRect(), "
                         "p = document.querySelector('#side-panel').getBoundingClientRect(); return {natural: "
                         "[im.naturalWidth, im.naturalHeight], shown: [r.width, r.height], x: [r.left, r.right], "
                         "panel: [p.left, p.right], scroll: document.querySelector('#side-panel').scrollWidth, "
                         "client: document.querySelector('#side-panel').clientWidth} }")
    assert tree["natural"] == [420, 480] and tree["shown"] == [420, 480], tree  # drawn at its size, not scaled
    assert tree["panel"][0] <= tree["x"][0] and tree["x"][1] <= tree["panel"][1], tree  # inside the panel
    assert tree["scroll"] <= tree["client"], tree  # nothing of it out of sight sideways
    shot = served["work"] / "tree.png"
    page.locator("#merge-tree").screenshot(path=str(shot))
    print(f"merge tree as shown: {shot}")
    page.close()


def test_closing_tabs_prints_no_trace(served):
    context = served["browser"].new_context(viewport=VIEWPORT)
    pages = [_open(served, context) for _ in range(3)]
    for k, page in enumerate(pages):  # each busy when it goes: a key press (a frame to render), then closed
        page.focus(THUMB)
        for _ in range(k + 1):
            page.keyboard.press("ArrowRight")
        page.close()
    context.close()
    time.sleep(3.0)
    page = _open(served)  # still serving, a fresh tab
    page.close()
    proc = served["proc"]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0
    served["reader"].join(10)
    err = "".join(served["err"])
    after = err.split("(Ctrl-C stops)", 1)[1]
    assert "Traceback" not in after and "Error" not in after, after[-3000:]
    lines = [ln for ln in after.splitlines() if ln.strip()]
    assert lines == ["landscape explore: stopped"], lines
