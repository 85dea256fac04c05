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
    assert p.stdout.splitlines()[0] == "wide: 2 nodes, 1 edge", p.stdout + p.stderr
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
        title = rf'xlink:title="{re.escape(label)}: {status}(?: · key [0-9a-f]{{16}})?">'
        node = re.search(title + r'\s*<path fill="([^"]+)"', svg)
        assert node and node.group(1) == COLOURS[status], label
    assert "the server refused token" in page and "<td>accuracy</td><td class=n>1.0</td>" in page
    # self-contained: nothing to fetch, one inline script
    assert not re.search(r'(?:src|href)="(?:https?:)?//', page) and page.count("<script") == page.count("<script>") == 1
    assert "no profile" in page and "profile None" not in page


def test_report_without_runs_is_one_clear_error(cli):
    p = cli("report", check=1)
    assert p.stderr.startswith("error: no runs recorded in ") and "Traceback" not in p.stderr


def test_a_report_place_that_cannot_be_written_is_one_clear_error(cli):
    cli("run", str(write(cli.tmp / "r.yaml", "recipe: r\nsteps:\n  - id: s\n    uses: test.squares\n")))
    page = write(cli.tmp / "afile", "") / "page.html"  # under a file: no folder can be made there
    cases = {("-o", str(cli.tmp)): f"error: -o {cli.tmp}: that is a folder; name the page's file",
             ("-o", str(page)): f"error: cannot write the report to {page}: ",
             ("--bundle", str(cli.tmp / "afile" / "b")): f"error: --bundle {cli.tmp}/afile/b: "}
    for args, message in cases.items():
        p = cli("report", *args, check=1)
        assert p.stderr.startswith(message) and "Traceback" not in p.stderr, (args, p.stderr)
    assert sorted(p.name for p in cli.tmp.iterdir()) == ["afile", "artifacts", "cache", "r.yaml", "trace.txt"]


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    from _tiny import quickstart_tiny_run

    return quickstart_tiny_run(tmp_path_factory)


def _absolute(link: str) -> bool:
    return bool(re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:|/", link))  # a scheme (file:, http:) or a root


@needs_dot
def test_quickstart_report_leads_with_results_in_a_headless_browser(quickstart, tmp_path):
    """Issue 22: the headline table sat halfway down, the graph's labels were ~5 px with no zoom,
    figures could not be opened, links were absolute file:// paths into the cache."""
    from _browser import load

    run = quickstart
    out = tmp_path / "report.html"
    run("report", run.run_id, "-o", str(out))
    page = load(out, tmp_path)
    assert page.console == []  # no errors, no uncaught exceptions, nothing logged
    probe = page.probe
    assert probe["graph_nodes"] == 27
    figures = [p for n in run.first_run["nodes"]
               for p in (run.cache / n["key"][:2] / n["key"] / "outputs").rglob("*.png")]
    assert len(figures) >= 5 and probe["images"] == len(figures)
    assert probe["broken"] == []  # every figure decoded and drawn
    assert probe["lightbox"] is True  # a click opens the figure full size
    # results first: the before/after table is above the graph
    assert 0 < probe["tops"]["results_table"] < probe["tops"]["graph"]
    html = out.read_text()
    results = html[html.index("<div id=results>"):html.index("<h2>Graph</h2>")]
    assert "<td>overall</td>" in results and "<th>before</th>" in results
    # readable labels, and the wheel zooms and a drag pans (the viewBox changes each time)
    assert probe["label_px"] >= 11
    zoom = probe["zoom"]
    start, wheeled, dragged = ([float(x) for x in zoom[k].split()] for k in ("start", "wheeled", "dragged"))
    assert wheeled[2] < start[2] and wheeled[3] < start[3]  # zoomed in: a smaller part of the graph
    assert dragged[2:] == pytest.approx(wheeled[2:]) and dragged[0] < wheeled[0]  # dragged right: moved left
    assert not probe["too_wide"]
    # every link relative, none into the cache by its absolute path
    assert probe["links"] and not [link for link in probe["links"] if _absolute(link)]
    assert "file://" not in html and str(run.cache) not in html
    assert page.screenshot.stat().st_size > 20_000  # kept in tmp_path for a look


@needs_dot
def test_each_step_section_has_its_time_key_log_and_metrics_as_tables(quickstart, tmp_path):
    from html.parser import HTMLParser

    out = tmp_path / "r" / "report.html"
    quickstart("report", quickstart.run_id, "-o", str(out))
    html = out.read_text()
    section = html[html.index('<section id="step-after">'):]
    section = section[:section.index("</section>")]
    key = next(n["key"] for n in quickstart.first_run["nodes"] if n["label"] == "after")
    assert re.search(r"ran in \d+\.\d s · key <code title=\"" + key + '">' + key[:16] + "</code>", section)
    log = re.search(r'<a href="([^"]+)">log</a>', section).group(1)
    assert (out.parent / log).resolve() == (quickstart.cache / key[:2] / key / "log.txt").resolve()
    # per_domain.algebra.accuracy: one table, a row per domain, a column per measure
    grid = section[section.index("<caption>per_domain</caption>"):]
    grid = grid[:grid.index("</table>")]
    assert re.search(r"<tr><th></th><th>accuracy</th>.*<th>n</th>", grid)
    assert re.search(r"<tr><th>algebra</th><td class=n>[0-9.]+</td>", grid)
    assert "per_domain.algebra" not in html

    class Links(HTMLParser):
        found: list[str] = []

        def handle_starttag(self, tag, attrs):
            self.found += [v for k, v in attrs if k in ("href", "src", "xlink:href") and not v.startswith("data:")]

    parser = Links()
    parser.feed(html)
    outputs = [link for link in parser.found if "/outputs/" in link]
    assert outputs and all((out.parent / link).exists() for link in outputs)


@needs_dot
def test_a_bundle_holds_the_page_and_what_it_links(quickstart, tmp_path):
    """`--bundle DIR`: a folder a teammate can open: every link inside it, nothing into the cache."""
    from urllib.parse import unquote

    from _browser import load

    bundle = tmp_path / "sent"
    p = quickstart("report", quickstart.run_id, "--bundle", str(bundle))
    assert re.fullmatch(rf"wrote {re.escape(str(bundle / 'index.html'))} and the \d+ files it links beside it\n",
                        p.stdout)
    moved = tmp_path / "elsewhere"
    bundle.rename(moved)  # as a teammate would have it
    page = load(moved / "index.html", tmp_path / "shots")
    assert page.console == [] and page.probe["broken"] == [] and page.probe["images"] >= 5
    files = [link for link in page.probe["links"] if not link.startswith("#")]
    assert files and not [link for link in files if _absolute(link)]
    missing = [link for link in files if not (moved / unquote(link)).exists()]
    assert not missing
    assert any(link.startswith("logs/") for link in files) and any(link.startswith("outputs/") for link in files)
    html = (moved / "index.html").read_text()
    assert str(quickstart.cache) not in html and "file://" not in html
    assert (moved / "outputs" / "table" / "report" / "summary.md").is_file()
    # again into the same folder: replaced; into a folder holding other files: refused
    quickstart("report", quickstart.run_id, "--bundle", str(moved))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    p = quickstart("report", quickstart.run_id, "--bundle", str(tmp_path / "mine"), check=1)
    assert "is not an earlier report bundle" in p.stderr and (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


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
    # a Report's files (a pulled entry's) are text for the page too: its metrics and summary.md
    key = record["nodes"][1]["key"]
    report = cli.cache / key[:2] / key / "outputs" / "report"
    (report / "metrics.json").write_text(json.dumps({
        "<img src=x onerror=alert(8)>": "<b>alert(9)</b>",
        "per_domain": {"<script>alert(10)</script>": {"<b>alert(11)</b>": 1}}}))
    (report / "summary.md").write_text("| a |\n|---|\n| <script>alert(12)</script> |\n\n"
                                       "[x](javascript:alert(13)) ![y](http://example.com/alert(14).png)\n")
    cli("report", "-o", str(tmp_path / "report.html"))
    page = (tmp_path / "report.html").read_text()
    for n in range(1, 15):
        assert f"alert({n})" in page, n  # shown, as text
    assert "[x](javascript:alert(13)) ![y](http://example.com/alert(14).png)" in page  # as text, not links
    from engine.cli.report_assets import SCRIPT

    ours = page.rindex("<script>")  # the page's own script (pan, zoom, figures), last in the body
    assert page[ours:].startswith(f"<script>{SCRIPT}</script></body>")
    raw = re.findall(r"<(?:img src=x|script|svg onload|b>).{0,20}", page[:ours])
    assert not raw, raw
    assert "&lt;img src=x onerror=alert(4)&gt;" in page and "&lt;script&gt;alert(5)&lt;/script&gt;" in page
