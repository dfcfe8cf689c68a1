"""Make docs/explore.png, the explorer's picture in the docs (guide/explorer.md), with the commands that page shows.

    python docs/explore_screenshot.py [OUT.png]

Trains Himmelblau minima, connects two of them, starts ``landscape explore`` on them, opens the page
in headless Chromium (Playwright pointed at the system's browser), takes the picture, stops the server.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

COMMANDS = [
    "landscape train himmelblau --seeds 0..7 -o hb/",
    "landscape connect hb/himmelblau_s4.pt hb/himmelblau_s6.pt --level 75 -o hb_path.pt",
]
EXPLORE = "landscape explore hb/*.pt --path hb_path.pt --level 80 --no-browser"


def main(out: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="explore-shot-"))
    try:
        for cmd in COMMANDS:
            subprocess.run(cmd, shell=True, cwd=work, check=True, stderr=subprocess.DEVNULL)
        proc = subprocess.Popen(EXPLORE, shell=True, cwd=work, stdout=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            url = proc.stdout.readline().strip()
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.set_default_timeout(120_000)
                page.goto(url)
                page.wait_for_function("() => /^valleys: /.test(document.querySelector('#valley-counts')?.innerText)")
                # the server's own frame (the page shows the scene's picture until it comes)
                page.wait_for_function("() => [...document.querySelectorAll('#view img')].some(im => im.naturalWidth)")
                page.click("#minimum-4")
                page.wait_for_function("() => document.querySelector('#minimum-details').innerText.includes('loss')")
                page.wait_for_timeout(2000)
                page.screenshot(path=str(out))
                browser.close()
        finally:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
            proc.wait(60)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("explore.png")).resolve())
