"""`recipe report [RUN]`: one HTML page of a run, from its run record and the cache entries it
names. It opens nothing by itself.

The page leads with results: each Report's summary.md (as tables) and every figure the steps
wrote (full size on click). Then the recipe graph (Graphviz, nodes coloured by status, pan and
zoom), a timeline of the steps that computed (matplotlib), and a section per step with its
time, key, log, metrics (as small tables) and outputs.

Every link is relative to the page. `-o FILE` writes a self-contained page (figures embedded)
whose links reach into this machine's cache; `--bundle DIR` writes DIR/index.html with the
logs, figures and small outputs it links copied beside it, so the folder can be sent on.

A record may come from a remote, so every value on the page is escaped: fragments are built
with markupsafe's `Markup(...).format(...)`, which escapes whatever it is given that is not
markup already, and text for the graph is marked `nohtml` so Graphviz escapes it too. Record
text is scrubbed of secrets as well, and the record is schema-checked before it is read.
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

from graphviz import nohtml
from markupsafe import Markup

from engine.cache.names import component_problem, is_key
from engine.cache.records import RunRecord
from engine.cache.secrets import Redactor
from engine.cache.store import Store
from engine.recipe.errors import CacheError

from .display import human_size, plural
from .report_assets import CSS, SCRIPT

COLOURS = {"ran": "#b7e4b7", "cached": "#e4e4e4", "failed": "#f4a7a7", "blocked": "#f7dc8c", "skipped": "#ffffff"}
FIGURES = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
           ".gif": "image/gif"}
MAX_FIGURES, MAX_FIGURE_BYTES = 24, 5_000_000  # per step; a bigger file is linked, not embedded
MAX_SUMMARY_BYTES = 200_000  # of one summary.md
BUNDLE_MAX_OUTPUT, BUNDLE_MAX_TOTAL = 25 << 20, 250 << 20  # what a bundle copies; bigger outputs stay out
BUNDLE_MARK = ".recipe-report"  # in a bundle folder: `--bundle` may replace it


@dataclass
class StepView:
    """What the page shows of one step instance."""

    node: dict[str, Any]  # the run record's node
    entry: dict[str, Any] | None = None
    outputs: dict[str, Path] = field(default_factory=dict)
    log: Path | None = None
    hrefs: dict[str, str | None] = field(default_factory=dict)  # output name -> link (None: not bundled)
    log_href: str | None = None

    @property
    def label(self) -> str:
        return self.node["label"]

    @property
    def size(self) -> int:
        return sum(self.output_size(n) for n in (self.entry or {}).get("outputs", {}))

    def output_size(self, name: str) -> int:
        size = (self.entry or {}).get("outputs", {}).get(name, {}).get("size", 0)
        return size if isinstance(size, int) else 0

    def kind(self, name: str) -> str:
        return str((self.entry or {}).get("outputs", {}).get(name, {}).get("type", ""))

    def reports(self) -> list[Path]:
        return [p for n, p in self.outputs.items() if self.kind(n) == "Report"]

    def figures(self) -> list[Path]:
        found: list[Path] = []
        for path in self.reports():
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in FIGURES and p.is_file()
                            and not p.is_symlink())
        return found[:MAX_FIGURES]


def collect(record: dict[str, Any], store: Store) -> list[StepView]:
    from engine.run.faults import failed_log

    views = []
    for node in record["nodes"]:
        view = StepView(node)
        key = node.get("key")
        if is_key(key) and store.has(key):
            view.entry = store.read_entry(key)
            view.outputs = {name: store.output_path(key, name) for name in view.entry["outputs"]
                            if component_problem(name) is None}
            view.log = store.entry_dir(key) / "log.txt"
        elif is_key(key) and node["status"] == "failed":
            view.log = failed_log(store.root, key, node["label"])
            if not view.log.is_file():  # kept by an engine that named failed logs by key alone
                view.log = store.root / "failed" / f"{key}.log"
        if view.log is not None and (view.log.is_symlink() or not view.log.is_file()):
            view.log = None
        views.append(view)
    return views


# ---------------------------------------------------------------------- where links point

def _href(rel: str) -> str:
    return quote(rel.replace(os.sep, "/"))


class Links:
    """Links relative to the page. A bundle copies what they point to beside the page (within
    a size budget); a plain page points at the files in this machine's cache."""

    def __init__(self, folder: Path, bundle: bool):
        self.folder, self.bundle = folder.absolute(), bundle
        self.left = BUNDLE_MAX_TOTAL
        self.copied: dict[Path, str] = {}  # a copied output -> its place in the bundle

    def place(self, path: Path, rel: str) -> str | None:
        """The link to `path`; in a bundle, `path` is copied to `rel` first (None: too big)."""
        if not self.bundle:
            return _href(os.path.relpath(path.absolute(), self.folder))
        files = _files(path)
        size = sum(p.stat().st_size for p in files)  # as found: an entry's recorded sizes are not trusted
        if size > min(BUNDLE_MAX_OUTPUT, self.left):
            return None
        if path.is_dir():
            (self.folder / rel).mkdir(parents=True, exist_ok=True)
        for p in files:
            target = self.folder / rel / p.relative_to(path) if p != path else self.folder / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, target)
        self.left -= size
        self.copied[path] = rel
        return _href(rel)

    def figure(self, path: Path) -> str | None:
        """An image's src: its copy in the bundle, else the image itself embedded."""
        for src, rel in self.copied.items():
            if path.is_relative_to(src):
                return _href(f"{rel}/{path.relative_to(src).as_posix()}")
        if path.stat().st_size <= MAX_FIGURE_BYTES:
            return f"data:{FIGURES[path.suffix.lower()]};base64,{base64.b64encode(path.read_bytes()).decode()}"
        return None if self.bundle else self.place(path, "")


def _files(path: Path) -> list[Path]:
    """The files of an output or log: a symlink is not followed out of the cache."""
    if path.is_symlink():
        return []
    if path.is_file():
        return [path]
    return [Path(folder, name) for folder, _, names in os.walk(path)  # never into a symlinked folder
            for name in names if not Path(folder, name).is_symlink()]


def place_files(views: list[StepView], links: Links) -> None:
    """Each step's outputs and log, linked (and in a bundle copied) under a folder of its own."""
    used: set[str] = set()
    for v in views:
        folder = re.sub(r"[^\w.-]+", "-", v.label).strip("-.") or "step"
        while folder in used:
            folder += "_"
        used.add(folder)
        for name, path in v.outputs.items():
            if path.exists():
                v.hrefs[name] = links.place(path, f"outputs/{folder}/{name}")
        if v.log is not None:
            v.log_href = links.place(v.log, f"logs/{folder}.log")


# ---------------------------------------------------------------------- the graph and the timeline

def _upstream(node: dict[str, Any]) -> list[str]:
    refs = []
    for value in node.get("inputs", {}).values():
        for r in value if isinstance(value, list) else [value]:
            if isinstance(r, str):
                refs.append(r.rpartition(".")[0])
    return refs + list(node.get("needs") or [])


def graph_svg(record: dict[str, Any], views: list[StepView]) -> str:
    """The recipe graph as inline SVG: Graphviz lays it out and draws it."""
    from engine.recipe import dag

    if not shutil.which("dot"):
        raise CacheError("recipe report needs Graphviz's `dot` program to draw the graph; "
                         "install it with `apt-get install graphviz` (or `conda install graphviz`)")
    steps = [(v.label, v.node.get("step_id", ""), v.node["uses"], _upstream(v.node)) for v in views]
    g = dag.build(nohtml(record["recipe"]), steps)
    by_label = {v.label: v for v in views}
    attrs = {}
    for box in g.boxes:
        members = [by_label[label] for label in box.members]
        attrs[box.id] = _box_attrs(box, members)
    dot = dag.as_dot(g, attrs)
    dot.graph_attr.update(nodesep="0.25", ranksep="0.4")  # compact: more of it readable at once
    svg = dot.pipe(format="svg", encoding="utf-8")
    return svg[svg.index("<svg"):]


def _box_attrs(box, members: list[StepView]) -> dict[str, str]:
    statuses = [v.node["status"] for v in members]
    main = max(set(statuses), key=lambda s: (s in ("failed", "blocked"), statuses.count(s)))
    seconds = sum(v.node.get("seconds", 0) for v in members)
    size = sum(v.size for v in members)
    tip = f"{box.name}: {main}"
    if len(members) == 1:
        v = members[0]
        facts = [v.node["status"], f"{seconds:.1f}s" if v.node["status"] == "ran" else "",
                 human_size(size) if size else ""]
        if v.node.get("key"):  # in the tooltip: narrow boxes, a narrower graph
            tip += f" · key {v.node['key'][:16]}"
    else:
        facts = [", ".join(f"{statuses.count(s)} {s}" for s in sorted(set(statuses))), f"{seconds:.1f}s",
                 human_size(size) if size else ""]
    label = f"{box.name}\n{box.uses}\n" + " · ".join(f for f in facts if f)
    # nohtml: never read as an HTML-like label `<...>`; Graphviz escapes the text in the SVG
    return {"label": nohtml(label), "fillcolor": COLOURS.get(main, "#ffffff"),
            "URL": f"#step-{_anchor(box.members[0])}", "tooltip": nohtml(tip),
            "style": "rounded,filled" + (",dashed" if main == "skipped" else "")}


def timeline_svg(record: dict[str, Any], views: list[StepView]) -> str:
    """Horizontal bars: when each computed step started and how long it took (run-relative)."""
    # an entry recomputed later (--force) belongs to that later run: its times are not this run's
    ran = [v for v in views if v.node["status"] == "ran" and v.entry and "start" in v.entry
           and v.entry.get("run_id") == record["run_id"]]
    if not ran:
        return "<p>No step computed in this run: every output came from the cache.</p>"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ran.sort(key=lambda v: v.entry["start"])
    t0 = min(record.get("started", ran[0].entry["start"]), ran[0].entry["start"])
    fig, ax = plt.subplots(figsize=(9, 0.28 * len(ran) + 1.2))
    for i, v in enumerate(ran):
        ax.barh(i, v.entry["end"] - v.entry["start"], left=v.entry["start"] - t0, color="#5b9bd5")
    ax.set_yticks(range(len(ran)), [v.label for v in ran], fontsize=8, parse_math=False)  # a "$" is text
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the run started")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.index("<svg"):]


def _anchor(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label)


# ---------------------------------------------------------------------- results first

def _summary(path: Path, scrub: Callable[[str], str]) -> Markup:
    from markdown_it import MarkdownIt

    with path.open(encoding="utf-8", errors="replace") as f:
        text = f.read(MAX_SUMMARY_BYTES)
    # raw HTML in it is escaped; images (fetched from wherever they name) and links are shown as text
    md = MarkdownIt("commonmark", {"html": False}).enable("table").disable(["image", "link", "autolink"])
    return Markup(md.render(scrub(text)))


def results(views: list[StepView], links: Links, scrub: Callable[[str], str]) -> tuple[Markup, dict[Path, str]]:
    """Every Report's summary.md, then every figure (each with an id the step sections link to)."""
    parts, figures, ids = [], [], {}
    for v in views:
        for path in v.reports():
            if (path / "summary.md").is_file() and not (path / "summary.md").is_symlink():
                parts.append(Markup('<div class=summary>{}<p class=hint>from <a href="#step-{}">{}</a></p></div>')
                             .format(_summary(path / "summary.md", scrub), _anchor(v.label), v.label))
        for path in v.figures():
            ids[path] = f"fig-{len(ids) + 1}"
            figures.append(_figure(path, v.label, ids[path], links))
    if figures:
        parts.append(Markup("<div class=figures>{}</div>").format(Markup().join(figures)))
    if not parts:
        parts.append(Markup("<p>No step of this run wrote a summary table or a figure.</p>"))
    return Markup().join(parts), ids


def _figure(path: Path, label: str, fig_id: str, links: Links) -> Markup:
    src = links.figure(path)
    caption = Markup('<figcaption><a href="#step-{}">{}</a> · {}</figcaption>').format(_anchor(label), label, path.name)
    if src is None:
        return Markup("<figure id={}><p>{} (too large to show)</p>{}</figure>").format(fig_id, path.name, caption)
    return Markup('<figure id={}><img src="{}" alt="{}">{}</figure>').format(fig_id, src, path.name, caption)


# ---------------------------------------------------------------------- metrics as small tables

def _value(v: Any) -> str:
    if isinstance(v, float):
        return repr(v) if len(repr(v)) <= 8 else f"{v:.4g}"
    return "–" if v is None else str(v)


def _scalar(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool)) or v is None


def _cell(v: Any) -> Markup:
    numeric = isinstance(v, (int, float)) and not isinstance(v, bool)
    return Markup("<td class=n>{}</td>" if numeric else "<td>{}</td>").format(_value(v))


def _pairs(title: str, rows: list[tuple[str, Any]]) -> Markup:
    body = Markup().join(Markup("<tr><td>{}</td>{}</tr>").format(k, _cell(v)) for k, v in rows[:60])
    return Markup("<table class=metrics-table>{}{}</table>").format(
        Markup("<caption>{}</caption>").format(title) if title else Markup(), body)


def _grid(title: str, table: dict[str, dict]) -> Markup:
    """{row: {column: value}} (per_domain.algebra.accuracy) as one table; turned so that it is
    taller than wide (two methods with twelve measures each: twelve rows)."""
    rows = list(table)[:60]
    columns: list[str] = []
    for r in rows:
        columns += [c for c, v in table[r].items() if _scalar(v) and c not in columns]
    columns = columns[:60]
    cell = lambda r, c: table[r].get(c, "")  # noqa: E731
    if len(columns) > len(rows):
        rows, columns, cell = columns, rows, (lambda r, c: table[c].get(r, ""))  # noqa: E731
    columns = columns[:12]
    head = Markup("<tr><th></th>{}</tr>").format(Markup().join(Markup("<th>{}</th>").format(c) for c in columns))
    body = Markup().join(Markup("<tr><th>{}</th>{}</tr>").format(r, Markup().join(_cell(cell(r, c)) for c in columns))
                         for r in rows)
    return Markup("<table class=metrics-table><caption>{}</caption>{}{}</table>").format(title, head, body)


def metrics_tables(metrics: Any) -> Markup:
    """Scalars in one table, each nested dict in one of its own (a dict of dicts as a grid);
    short lists of scalars joined, longer lists and curves left to the output files."""
    if not isinstance(metrics, dict):
        return Markup()
    tables: list[Markup] = []

    def walk(title: str, d: dict) -> None:
        rows: list[tuple[str, Any]] = []
        for k, v in d.items():
            if _scalar(v):
                rows.append((str(k), v))
            elif isinstance(v, list) and 0 < len(v) <= 12 and all(_scalar(x) for x in v):
                rows.append((str(k), ", ".join(_value(x) for x in v)))
            elif isinstance(v, dict) and v and len(tables) < 20:
                name = f"{title}.{k}" if title else str(k)
                if all(isinstance(x, dict) for x in v.values()):
                    tables.append(_grid(name, v))
                else:
                    walk(name, v)
        if rows:  # the top level's scalars lead
            tables.insert(0 if not title else len(tables), _pairs(title, rows))

    walk("", metrics)
    return Markup("<div class=metrics>{}</div>").format(Markup().join(tables)) if tables else Markup()


def _read_metrics(path: Path) -> Any:
    try:
        if path.is_symlink() or path.stat().st_size > 5_000_000:
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------- a step's section

def _seconds(v: Any) -> str:
    return f"{v:.1f} s" if isinstance(v, (int, float)) and not isinstance(v, bool) else "?"


def _facts(v: StepView, run_id: str) -> Markup:
    status, node = v.node["status"], v.node
    if status == "cached" and v.entry:
        by = v.entry.get("run_id")
        when = Markup("cached, computed in {}{}").format(_seconds(v.entry.get("seconds")),
                                                          f" by run {by}" if by and by != run_id else "")
    elif status in ("ran", "failed"):
        when = Markup("{} in {}").format(status, _seconds(node.get("seconds", 0)))
    else:
        when = Markup("{}").format(status)
    facts = [when]
    if is_key(node.get("key")):
        facts.append(Markup('key <code title="{}">{}</code>').format(node["key"], node["key"][:16]))
    if v.size:
        facts.append(Markup("{}").format(human_size(v.size)))
    if v.log_href:
        facts.append(Markup('<a href="{}">log</a>').format(v.log_href))
    return Markup("<p class=facts>{}</p>").format(Markup(" · ").join(facts))


def step_section(v: StepView, run_id: str, figure_ids: dict[Path, str], scrub: Callable[[str], str]) -> Markup:
    parts = [Markup('<section id="step-{}"><h3>{} <small>{} · {}</small></h3>').format(
        _anchor(v.label), v.label, v.node["uses"], v.node["status"]), _facts(v, run_id)]
    if v.node.get("error"):
        parts.append(Markup("<pre class=error>{}</pre>").format(scrub(v.node["error"])))
        if v.node["status"] == "failed" and v.log is not None:
            from engine.run.capture import log_tail

            parts.append(Markup("<pre class=log>{}</pre>").format(scrub("\n".join(log_tail(v.log)))))
    for path in v.reports():
        parts.append(metrics_tables(_read_metrics(path / "metrics.json")))
    figures = [Markup('<a href="#{}">{}</a>').format(figure_ids[p], p.name) for p in v.figures() if p in figure_ids]
    if figures:
        parts.append(Markup("<p class=outputs>figures (above): {}</p>").format(Markup(" · ").join(figures)))
    links = []
    for name in v.outputs:
        size = human_size(v.output_size(name))
        if v.hrefs.get(name):
            links.append(Markup('<a href="{}">{}</a> <small>{} {}</small>').format(v.hrefs[name], name, v.kind(name),
                                                                                size))
        else:
            links.append(Markup("{} <small>{} {}, not in the bundle</small>").format(name, v.kind(name), size))
    if links:
        parts.append(Markup("<p class=outputs>outputs: {}</p>").format(Markup(" · ").join(links)))
    return Markup().join(parts) + Markup("</section>")


# ---------------------------------------------------------------------- the page

def _header(record: dict[str, Any], views: list[StepView]) -> Markup:
    profile = f"profile {record['profile']}" if record.get("profile") else "no profile"
    sets = " ".join(f"--set {s}" for s in record.get("sets") or [])
    statuses = [v.node["status"] for v in views]
    counts = ", ".join(f"{statuses.count(s)} {s}" for s in COLOURS if statuses.count(s))
    took = record.get("finished", 0) - record.get("started", 0)
    started = time.strftime("%Y-%m-%d %H:%M", time.localtime(record.get("started", 0)))
    facts = [str(record.get("file", "")), profile, sets, f"status {record['status']}",
             f"{plural(len(views), 'step instance')}: {counts}", f"started {started}, took {took:.0f} s",
             f"executor {record.get('executor') or 'local'}"]
    return Markup("<p class=sub>{}</p>").format(" · ".join(f for f in facts if f))


def render(record: dict[str, Any], store: Store, links: Links) -> str:
    views = collect(record, store)
    place_files(views, links)
    root = str(store.root.absolute())
    redactor = Redactor()

    def scrub(text: str) -> str:  # secrets out, and where the cache is on this machine
        return redactor.scrub(text).replace(root, "<cache>")

    counts = {s: sum(1 for v in views if v.node["status"] == s) for s in COLOURS}
    legend = Markup().join(Markup('<span style="background:{}">{}: {}</span>').format(c, s, counts[s])
                           for s, c in COLOURS.items() if counts[s])
    top, figure_ids = results(views, links, scrub)
    steps = Markup().join(step_section(v, record["run_id"], figure_ids, scrub) for v in views
                          if v.node["status"] != "skipped")
    title = f"run {record['run_id']}: {record['recipe']}"
    # the SVGs come from Graphviz and matplotlib, which escape the text they draw
    return Markup(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>{title}</title><style>{css}</style></head>"
        "<body><h1>{title}</h1>{header}<h2>Results</h2><div id=results>{top}</div>"
        "<h2>Graph</h2><p class=legend>{legend}</p><p class=hint>wheel or buttons to zoom, drag to pan, "
        "click a step for its section</p><div class=graph><div class=zoom><button value=in>+</button>"
        "<button value=out>−</button><button value=fit>fit</button></div>{graph}</div>"
        "<h2>Timeline</h2><div class=timeline>{timeline}</div><h2>Steps</h2>{steps}"
        "<script>{script}</script></body></html>\n").format(
        title=title, css=Markup(CSS), header=_header(record, views), top=top, legend=legend,
        graph=Markup(graph_svg(record, views)), timeline=Markup(timeline_svg(record, views)), steps=steps,
        script=Markup(SCRIPT))


def latest_local_run(store: Store) -> str | None:
    """The newest run made here: a pulled record (marked by pull) never shadows a local one,
    whatever run id its remote gave it."""
    return next(store.runs.newest_local(), None)


def _record(args, store: Store) -> dict[str, Any]:
    run = args.run or latest_local_run(store)
    if not run and store.runs.ids():
        raise CacheError(f"every run record in {store.root} was pulled from a remote; name one "
                         f"(`recipe ls` lists them) or `recipe run RECIPE` first")
    if not run:
        raise CacheError(f"no runs recorded in {store.root}; `recipe run RECIPE` first")
    record = store.runs.read(run)
    why = RunRecord.problem(record)
    if why:
        raise CacheError(f"run {run}: {why}")
    return record


def write_bundle(record: dict[str, Any], store: Store, folder: Path) -> int:
    """The page as folder/index.html with what it links beside it; built aside, then moved in.
    Returns the number of files beside the page."""
    if folder.is_symlink() or folder.exists() and (not folder.is_dir() or any(folder.iterdir())
                                                   and not (folder / BUNDLE_MARK).is_file()):
        raise CacheError(f"--bundle {folder}: the folder exists and is not an earlier report bundle; "
                         f"name a new or empty folder")
    building = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    try:
        (building / "index.html").write_text(render(record, store, Links(building, bundle=True)), encoding="utf-8")
        (building / BUNDLE_MARK).write_text(record["run_id"] + "\n", encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        building.rename(folder)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return sum(1 for p in folder.rglob("*") if p.is_file()) - 2  # the page and the mark


def cmd_report(args) -> int:
    store = Store(args.cache_dir)
    record = _record(args, store)
    if getattr(args, "bundle", None):
        folder = Path(args.bundle).absolute()
        try:
            files = write_bundle(record, store, folder)
        except OSError as e:  # a place the user cannot write to (/proc, a read-only disk): not a traceback
            raise CacheError(f"--bundle {folder}: {e.strerror or e} ({e.filename})") from None
        print(f"wrote {folder / 'index.html'} and the {plural(files, 'file')} it links beside it")
        return 0
    if args.output:
        out = Path(args.output)
    else:  # names from the record become a path: the schema check above keeps each one plain
        out = Path(args.artifacts_dir) / record["recipe"] / f"report-{record['run_id']}.html"
    if out.is_dir():
        raise CacheError(f"-o {out}: that is a folder; name the page's file")
    tmp = out.with_name(out.name + ".tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(render(record, store, Links(out.parent, bundle=False)), encoding="utf-8")
        tmp.replace(out)
    except OSError as e:
        with suppress(OSError):
            tmp.unlink()
        raise CacheError(f"cannot write the report to {out}: {e.strerror or e} ({e.filename})") from None
    print(f"wrote {out}")
    return 0
