"""Load a page in a real headless Chromium (Debian's package) and read back what it did:
console messages (errors, uncaught exceptions), the DOM after load, and a screenshot.

    from _browser import chromium, load
    page = load(html_file, out_dir)   # page.console, page.probe, page.screenshot
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--enable-logging=stderr", "--v=0"]
# what the probe reports, written onto <body> once the page has loaded
PROBE = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  document.body.setAttribute('data-probe', JSON.stringify({
    graph_nodes: document.querySelectorAll('.graph svg g.node').length,
    images: imgs.length,
    broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt)}));
});</script>"""


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not exe:
        pytest.skip("Chromium is not installed (apt-get install chromium); .ci/run installs it when run as root")
    return exe


@dataclass
class Page:
    console: list[str]  # every console message the page produced
    probe: dict
    screenshot: Path


def _run(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=120)


def load(page: Path, out: Path, width: int = 1280, height: int = 2000) -> Page:
    """Open a copy of `page` with the probe added; keep its screenshot in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    probed = out / f"probed-{page.name}"
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = _run(["--virtual-time-budget=5000", "--dump-dom", probed.as_uri()], out / "profile-dom")
    shot = out / f"{page.stem}.png"
    _run([f"--window-size={width},{height}", f"--screenshot={shot}", page.as_uri()], out / "profile-shot")
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    found = re.search(r'data-probe="([^"]*)"', dom.stdout)
    assert found, f"the page never finished loading:\n{dom.stdout[:2000]}\n{dom.stderr[-2000:]}"
    probe = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    return Page(console, probe, shot)
