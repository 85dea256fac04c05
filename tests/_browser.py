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
# what the probe reports, written onto <body> once the page has loaded: what it shows, where,
# every link, and what a wheel, a drag and a click on a figure do
PROBE = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  const top = sel => {
    const e = document.querySelector(sel);
    return e ? e.getBoundingClientRect().top + scrollY : null;
  };
  const box = document.querySelector('.graph'), svg = box && box.querySelector('svg');
  const labels = svg ? [...svg.querySelectorAll('g.node text')].map(t => t.getBoundingClientRect().height) : [];
  let zoom = null;
  if (svg) {
    const r = box.getBoundingClientRect(), x = r.left + r.width / 2, y = r.top + r.height / 2;
    const view = () => svg.getAttribute('viewBox');
    const start = view();
    box.dispatchEvent(new WheelEvent('wheel', {deltaY: -200, clientX: x, clientY: y, bubbles: true, cancelable: true}));
    const wheeled = view();
    for (const [type, dx] of [['pointerdown', 0], ['pointermove', 40], ['pointermove', 80], ['pointerup', 80]])
      box.dispatchEvent(new PointerEvent(type, {clientX: x + dx, clientY: y, button: 0, pointerId: 1, bubbles: true}));
    zoom = {start, wheeled, dragged: view()};
  }
  const figure = document.querySelector('figure img'), over = () => document.querySelector('.lightbox');
  if (figure) figure.click();
  const lightbox = figure && over() && !over().hidden ? over().querySelector('img').src === figure.src : null;
  const links = [...document.querySelectorAll('*')].flatMap(e => [...e.attributes])
    .filter(a => /(^|:)(href|src)$/.test(a.name) && !a.value.startsWith('data:')).map(a => a.value);
  document.body.setAttribute('data-probe', JSON.stringify({
    graph_nodes: document.querySelectorAll('.graph svg g.node').length,
    images: imgs.length,
    broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt),
    tops: {results_table: top('#results table'), graph: top('.graph')},
    label_px: labels.length ? Math.min(...labels) : null, zoom, lightbox, links,
    too_wide: document.documentElement.scrollWidth > innerWidth}));
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
                          text=True, timeout=120, check=False)


def load(page: Path, out: Path, width: int = 1280, height: int = 2000) -> Page:
    """Open a copy of `page` with the probe added (beside it, removed after); keep its screenshot
    in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    probed = page.with_name(f".probed-{page.name}")  # beside the page: its relative links hold
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    try:
        dom = _run([f"--window-size={width},{height}", "--virtual-time-budget=5000", "--dump-dom", probed.as_uri()],
                   out / "profile-dom")
    finally:
        probed.unlink()
    shot = out / f"{page.stem}.png"
    _run([f"--window-size={width},{height}", f"--screenshot={shot}", page.as_uri()], out / "profile-shot")
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    found = re.search(r'data-probe="([^"]*)"', dom.stdout)
    assert found, f"the page never finished loading:\n{dom.stdout[:2000]}\n{dom.stderr[-2000:]}"
    probe = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    return Page(console, probe, shot)
