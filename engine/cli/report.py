"""`recipe report [RUN]`: one self-contained HTML page of a run, from its run record and
the cache entries it names. It opens nothing by itself.

The page holds the recipe graph (laid out and drawn by Graphviz, nodes coloured by status,
with time, output size and key), a timeline of the steps that computed (matplotlib), each
Report's summary.md and metrics, every figure the steps wrote (embedded), and links to the
outputs in the cache.

A record may come from a remote, so every value on the page is escaped: fragments are built
with markupsafe's `Markup(...).format(...)`, which escapes whatever it is given that is not
markup already, and text for the graph is marked `nohtml` so Graphviz escapes it too. Record
text is scrubbed of secrets as well, and the record is schema-checked before it is read.
"""
from __future__ import annotations

import base64
import io
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from graphviz import nohtml
from markupsafe import Markup

from engine.cache.names import is_key
from engine.cache.records import RunRecord
from engine.cache.secrets import Redactor
from engine.cache.store import Store
from engine.recipe.errors import CacheError

from .display import human_size

COLOURS = {"ran": "#b7e4b7", "cached": "#e4e4e4", "failed": "#f4a7a7", "blocked": "#f7dc8c", "skipped": "#ffffff"}
FIGURES = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
           ".gif": "image/gif"}
MAX_FIGURES, MAX_FIGURE_BYTES = 24, 5_000_000  # per step; a bigger file is linked, not embedded


@dataclass
class StepView:
    """What the page shows of one step instance."""

    node: dict[str, Any]  # the run record's node
    entry: dict[str, Any] | None = None
    outputs: dict[str, Path] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.node["label"]

    @property
    def size(self) -> int:
        return sum(o.get("size", 0) for o in (self.entry or {}).get("outputs", {}).values())

    def kind(self, name: str) -> str:
        return (self.entry or {}).get("outputs", {}).get(name, {}).get("type", "")

    def figures(self) -> list[Path]:
        found: list[Path] = []
        for path in self.outputs.values():
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in FIGURES and p.is_file())
        return found[:MAX_FIGURES]


def collect(record: dict[str, Any], store: Store) -> list[StepView]:
    views = []
    for node in record["nodes"]:
        view = StepView(node)
        key = node.get("key")
        if is_key(key) and store.has(key):
            view.entry = store.read_entry(key)
            view.outputs = {name: store.output_path(key, name) for name in view.entry["outputs"]}
        views.append(view)
    return views


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
    svg = dag.as_dot(g, attrs).pipe(format="svg", encoding="utf-8")
    return svg[svg.index("<svg"):]


def _box_attrs(box, members: list[StepView]) -> dict[str, str]:
    statuses = [v.node["status"] for v in members]
    main = max(set(statuses), key=lambda s: (s in ("failed", "blocked"), statuses.count(s)))
    seconds = sum(v.node.get("seconds", 0) for v in members)
    size = sum(v.size for v in members)
    if len(members) == 1:
        v = members[0]
        facts = [v.node["status"], f"{seconds:.1f}s" if v.node["status"] == "ran" else "",
                 human_size(size) if size else "", (v.node.get("key") or "")[:10]]
    else:
        facts = [", ".join(f"{statuses.count(s)} {s}" for s in sorted(set(statuses))), f"{seconds:.1f}s",
                 human_size(size) if size else ""]
    label = f"{box.name}\n{box.uses}\n" + " · ".join(f for f in facts if f)
    # nohtml: never read as an HTML-like label `<...>`; Graphviz escapes the text in the SVG
    return {"label": nohtml(label), "fillcolor": COLOURS.get(main, "#ffffff"),
            "URL": f"#step-{_anchor(box.members[0])}", "tooltip": nohtml(f"{box.name}: {main}"),
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


def _metrics_table(path: Path) -> Markup:
    """Scalar metrics (nested ones as a.b), not curves or lists."""
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return Markup()
    rows: list[tuple[str, Any]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, (int, float, str, bool)) or value is None:
            rows.append((prefix, value))

    walk("", metrics)
    body = Markup().join(Markup("<tr><td>{}</td><td>{}</td></tr>").format(k, str(v)) for k, v in rows[:60])
    return Markup("<table class=metrics>{}</table>").format(body) if rows else Markup()


def _figure(path: Path) -> Markup:
    if path.stat().st_size > MAX_FIGURE_BYTES:
        return Markup('<p><a href="{}">{}</a> (too large to embed)</p>').format(path.as_uri(), path.name)
    data = base64.b64encode(path.read_bytes()).decode()
    return Markup('<figure><img src="data:{};base64,{}" alt="{}"><figcaption>{}</figcaption></figure>').format(
        FIGURES[path.suffix.lower()], data, path.name, path.name)


def step_section(v: StepView, store: Store, scrub: Callable[[str], str]) -> Markup:
    from markdown_it import MarkdownIt

    parts = [Markup('<section id="step-{}"><h3>{} <small>{} · {}</small></h3>').format(
        _anchor(v.label), v.label, v.node["uses"], v.node["status"])]
    if v.node.get("error"):
        parts.append(Markup("<pre class=error>{}</pre>").format(scrub(v.node["error"])))
        log = store.root / "failed" / f"{v.node.get('key')}.log"
        if is_key(v.node.get("key")) and log.is_file():
            from engine.run.capture import log_tail

            parts.append(Markup("<pre class=log>{}</pre>").format(scrub("\n".join(log_tail(log)))))
    for name, path in v.outputs.items():
        if v.kind(name) == "Report" and (path / "summary.md").is_file():
            md = MarkdownIt("commonmark", {"html": False}).enable("table")  # raw HTML in it is escaped
            parts.append(Markup(md.render(scrub((path / "summary.md").read_text(encoding="utf-8")))))
        if v.kind(name) == "Report" and (path / "metrics.json").is_file():
            parts.append(_metrics_table(path / "metrics.json"))
    figures = v.figures()
    if figures:
        parts.append(Markup("<div class=figures>{}</div>").format(Markup().join(_figure(p) for p in figures)))
    links = [Markup('<a href="{}">{}</a> <small>{}</small>').format(p.as_uri(), n, v.kind(n))
             for n, p in v.outputs.items()]
    if links:
        parts.append(Markup("<p class=outputs>outputs: {}</p>").format(Markup(" · ").join(links)))
    return Markup().join(parts) + Markup("</section>")


CSS = """
body{font-family:system-ui,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{margin-bottom:0}.sub{color:#666;margin-top:.2em}h3 small{color:#777;font-weight:normal}
.graph svg{max-width:100%;height:auto}.legend span{display:inline-block;padding:.1em .6em;margin-right:.4em;
border-radius:4px;border:1px solid #aaa}section{border-top:1px solid #ddd;padding-top:.5em}
.figures{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0}figure img{max-width:420px;border:1px solid #ddd}
figcaption{font-size:.8em;color:#666}table{border-collapse:collapse;font-size:.9em}
td,th{border:1px solid #ddd;padding:.2em .6em;text-align:left}pre{background:#f6f6f6;padding:.6em;overflow-x:auto}
pre.error{background:#fdeaea}.outputs{font-size:.9em}
"""


def render(record: dict[str, Any], store: Store) -> str:
    views = collect(record, store)
    scrub = Redactor().scrub
    counts = {s: sum(1 for v in views if v.node["status"] == s) for s in COLOURS}
    legend = Markup().join(Markup('<span style="background:{}">{}: {}</span>').format(c, s, counts[s])
                           for s, c in COLOURS.items() if counts[s])
    steps = Markup().join(step_section(v, store, scrub) for v in views if v.node["status"] != "skipped")
    title = f"run {record['run_id']}: {record['recipe']}"
    # the SVGs come from Graphviz and matplotlib, which escape the text they draw
    return Markup(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>{title}</title><style>{css}</style></head>"
        "<body><h1>{title}</h1><p class=sub>{file} · profile {profile} · status {status}</p>"
        "<h2>Graph</h2><p class=legend>{legend}</p><div class=graph>{graph}</div>"
        "<h2>Timeline</h2><div class=timeline>{timeline}</div><h2>Steps</h2>{steps}</body></html>\n").format(
        title=title, css=Markup(CSS), file=record.get("file", ""), profile=str(record.get("profile")),
        status=record["status"], legend=legend, graph=Markup(graph_svg(record, views)),
        timeline=Markup(timeline_svg(record, views)), steps=steps)


def latest_local_run(store: Store) -> str | None:
    """The newest run made here: a pulled record (marked by pull) never shadows a local one,
    whatever run id its remote gave it."""
    for run_id in reversed(store.run_ids()):
        if "pulled_from" not in store.read_run(run_id):
            return run_id
    return None


def cmd_report(args) -> int:
    store = Store(args.cache_dir)
    run = args.run or latest_local_run(store)
    if not run and store.run_ids():
        raise CacheError(f"every run record in {store.root} was pulled from a remote; name one "
                         f"(`recipe ls` lists them) or `recipe run RECIPE` first")
    if not run:
        raise CacheError(f"no runs recorded in {store.root}; `recipe run RECIPE` first")
    record = store.read_run(run)
    why = RunRecord.problem(record)
    if why:
        raise CacheError(f"run {run}: {why}")
    if args.output:
        out = Path(args.output)
    else:  # names from the record become a path: the schema check above keeps each one plain
        out = Path(args.artifacts_dir) / record["recipe"] / f"report-{record['run_id']}.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(render(record, store), encoding="utf-8")
    tmp.replace(out)
    print(f"wrote {out}")
    return 0
