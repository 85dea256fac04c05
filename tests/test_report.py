"""`recipe dag` (text, mermaid, dot) and `recipe report` (one self-contained HTML page),
the latter checked in a real headless Chromium."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from conftest import ROOT, write

QUICKSTART = str(ROOT / "recipes" / "quickstart.yaml")
needs_dot = pytest.mark.skipif(not shutil.which("dot"), reason="Graphviz's dot is not installed "
                               "(apt-get install graphviz); .ci/run installs it when run as root")


# ---------------------------------------------------------------------------- recipe dag

def test_dag_prints_the_quickstart_graph_as_text_mermaid_and_dot(cli):
    text = cli("dag", QUICKSTART).stdout
    assert text.splitlines()[0] == "quickstart: 27 nodes, 45 edges"
    assert re.search(r"^  train +data\.concat +<- arithmetic, synthetic$", text, re.MULTILINE)
    assert re.search(r"^  qstar_report +qstar\.analyze +<- qstar\[entropy\], qstar\[kl_symmetry\]$", text, re.MULTILINE)
    mermaid = cli("dag", QUICKSTART, "--format", "mermaid").stdout
    assert mermaid.startswith("flowchart TD\n")
    assert len(re.findall(r'^  n\d+\["', mermaid, re.MULTILINE)) == 27 and len(re.findall(r" --> ", mermaid)) == 45
    dot = cli("dag", QUICKSTART, "--format", "dot").stdout
    assert dot.startswith("digraph quickstart {") and dot.count(" -> ") == 45
    if shutil.which("dot"):  # Graphviz itself accepts it
        svg = subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True, check=True).stdout
        assert svg.count('class="node"') == 27


def test_dag_folds_a_large_foreach_into_one_node(cli, tmp_path):
    recipe = write(tmp_path / "wide.yaml", """
recipe: wide
vars: {seeds: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]}
steps:
  - id: part
    uses: problems.arithmetic
    foreach: ${vars.seeds}
    with: {count: 2, seed: "${item}"}
  - id: all
    uses: data.concat
    inputs: {datasets: "${steps.part.problems}"}
""")
    p = cli("dag", str(recipe))
    assert p.stdout.splitlines()[0] == "wide: 2 nodes, 1 edges", p.stdout + p.stderr
    assert re.search(r"^  part\[×20\] +problems\.arithmetic$", p.stdout, re.MULTILINE)
    assert re.search(r"^  all +data\.concat +<- part\[×20\]$", p.stdout, re.MULTILINE)


# ---------------------------------------------------------------------------- recipe report

@needs_dot
def test_report_colours_each_status_and_never_shows_a_secret(cli, tmp_path):
    cli.env["MR_TEST_TOKEN"] = "s3cr3t-t0ken-value"
    recipe = write(tmp_path / "r.yaml", """
recipe: mixed
steps:
  - id: nums
    uses: problems.arithmetic
    with: {count: 4, seed: 0}
  - id: metrics
    uses: test.report
  - id: login
    uses: test.secret
    with: {fail: true}
  - id: after
    uses: test.count
    inputs: {data: "${steps.login.data}"}
""")
    cli("run", str(recipe), check=1)
    cli("run", str(recipe), check=1)  # nums and metrics cached now
    p = cli("report", "-o", str(tmp_path / "report.html"))
    assert p.stdout.strip() == f"wrote {tmp_path / 'report.html'}"
    page = (tmp_path / "report.html").read_text()
    assert "s3cr3t-t0ken-value" not in page
    from engine.cli.report import COLOURS

    svg = page[page.index("<svg"):page.index("</svg>")]
    for label, status in (("nums", "cached"), ("metrics", "cached"), ("login", "failed"), ("after", "blocked")):
        node = re.search(rf'xlink:title="{re.escape(label)}: {status}">\s*<path fill="([^"]+)"', svg)
        assert node and node.group(1) == COLOURS[status], label
    assert "the server refused token" in page and "<td>accuracy</td><td>1.0</td>" in page
    assert 'src="http' not in page and "<script" not in page  # self-contained: nothing to fetch


def test_report_without_runs_is_one_clear_error(cli):
    p = cli("report", check=1)
    assert p.stderr.startswith("error: no runs recorded in ") and "Traceback" not in p.stderr


@needs_dot
def test_quickstart_report_in_a_headless_browser(tmp_path, tmp_path_factory):
    from _browser import load
    from _tiny import quickstart_tiny_run

    run = quickstart_tiny_run(tmp_path_factory)
    out = tmp_path / "report.html"
    run("report", run.run_id, "-o", str(out))
    page = load(out, tmp_path)
    assert page.console == []  # no errors, no uncaught exceptions, nothing logged
    assert page.probe["graph_nodes"] == 27
    figures = [p for n in run.first_run["nodes"]
               for p in (run.cache / n["key"][:2] / n["key"] / "outputs").rglob("*.png")]
    assert len(figures) >= 5 and page.probe["images"] == len(figures)
    assert page.probe["broken"] == []  # every figure decoded and drawn
    html = out.read_text()
    assert "<td>overall" in html or "overall</td>" in html  # the table step's summary.md
    assert page.screenshot.stat().st_size > 20_000  # kept in tmp_path for a look


def test_the_browser_probe_sees_console_errors_and_broken_images(tmp_path):
    """The checks above would catch a broken page (so their passing means something)."""
    from _browser import load

    bad = write(tmp_path / "bad.html", '<!doctype html><html><body><img alt="fig" src="data:image/png;base64,AAAA">'
                                       "<script>console.error('boom'); missing();</script></body></html>")
    page = load(bad, tmp_path / "out")
    assert any("boom" in line for line in page.console) and any("missing" in line for line in page.console)
    assert page.probe["broken"] == ["fig"]


@needs_dot
def test_every_value_from_a_record_is_escaped_on_the_page(cli, tmp_path):
    """Issue 19 finding 9: a node's status reached the page raw (stored XSS through a pulled record)."""
    import json

    recipe = write(tmp_path / "r.yaml", """
recipe: xss
steps:
  - id: nums
    uses: problems.arithmetic
    with: {count: 4, seed: 0}
  - id: metrics
    uses: test.report
""")
    cli("run", str(recipe))
    path = next((cli.cache / "runs").glob("*.json"))
    record = json.loads(path.read_text())
    record.update(status="<img src=x onerror=alert(1)>", file="<script>alert(2)</script>", profile="<b>alert(3)</b>")
    record["nodes"][0].update(status="<img src=x onerror=alert(4)>", error="<script>alert(5)</script>",
                              uses="<svg onload=alert(6)>")
    record["nodes"][1]["label"] = "metrics<img src=x onerror=alert(7)>"
    path.write_text(json.dumps(record))
    cli("report", "-o", str(tmp_path / "report.html"))
    page = (tmp_path / "report.html").read_text()
    for n in range(1, 8):
        assert f"alert({n})" in page, n  # shown, as text
    raw = re.findall(r"<(?:img src=x|script|svg onload|b>).{0,20}", page)
    assert not raw, raw
    assert "&lt;img src=x onerror=alert(4)&gt;" in page and "&lt;script&gt;alert(5)&lt;/script&gt;" in page
