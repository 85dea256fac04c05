"""filter.by_label beside DuckDB, Polars and pandas on a 5M-row OpenMathReasoning-shaped file,
each timed as a whole process, as a user times it, alternating the tools run by run.

    pip install -e ".[bench]"                          # duckdb and polars, for the peers
    python benchmarks/bench_filter.py --vs duckdb      # writes benchmarks/results/filter.json
    python benchmarks/bench_filter.py --vs duckdb,polars,pandas --rounds 7
    python benchmarks/bench_filter.py --vs duckdb --set batch_size=20000   # non-default step settings
    python benchmarks/bench_filter.py --vs duckdb --baseline /tmp/before    # also another checkout's step

The data file is `$OPENMATH_5M` (default /tmp/openmath_5m/openmath_5m.parquet, 257 MB), written
by benchmarks/make_openmath_5m.py when missing. All tools keep pass rate <= 0.1 and must keep the
same rows (393,664 of 5M). Each round runs every tool once, in a rotated order:

- mathrecipe: `recipe run filter5m.yaml --force hard -q` in a scratch project whose `data.load`
  step is cached, so the process is the CLI, the plan, the filter step with its default
  settings (unless --set) and the cache commit;
- duckdb: `COPY (SELECT * FROM read_parquet(F) WHERE TRY_CAST(pass_rate_72b_tir AS DOUBLE) <= 0.1)
  TO 'kept.parquet'`;
- polars: `scan_parquet(F).filter(pl.col(...).cast(pl.Float64, strict=False) <= 0.1).sink_parquet(...)`;
- pandas: read the whole file, `to_numeric(errors="coerce")`, filter, `to_parquet` (what scripts
  built on `load_dataset(...).to_pandas()` do).

Each process starts with `python`'s start-up and imports on the clock. Wall seconds are medians
over the rounds; CPU seconds and peak RSS come from the child's rusage (wait4). The ratio is
mathrecipe's rows/s over the peer's. The 1-minute load average is printed before and after:
on a shared machine compare ratios, not seconds. Target: >= 0.7x DuckDB, <= 1 GB peak RSS.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("OPENMATH_5M", "/tmp/openmath_5m/openmath_5m.parquet"))
RESULTS = ROOT / "benchmarks" / "results" / "filter.json"
THRESHOLD = 0.1
COLUMN = "pass_rate_72b_tir"

PEERS = {
    "duckdb": """import sys, duckdb
data, out, column, threshold = sys.argv[1:]
duckdb.sql(f"COPY (SELECT * FROM read_parquet('{data}') WHERE TRY_CAST({column} AS DOUBLE) <= {threshold}) "
           f"TO '{out}/kept.parquet' (FORMAT parquet)")
""",
    "polars": """import sys, polars as pl
pl.scan_parquet(sys.argv[1]).filter(pl.col(sys.argv[3]).cast(pl.Float64, strict=False) <= float(sys.argv[4])
                                    ).sink_parquet(sys.argv[2] + "/kept.parquet")
""",
    "pandas": """import sys, pandas as pd
df = pd.read_parquet(sys.argv[1])
kept = df[pd.to_numeric(df[sys.argv[3]], errors="coerce") <= float(sys.argv[4])]
kept.to_parquet(sys.argv[2] + "/kept.parquet")
""",
}


def ensure_data(path: Path = DATA, rows: int = 5_000_000) -> Path:
    if not path.exists():
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from make_openmath_5m import write

        write(path, rows)
    return path


def env(root: Path = ROOT) -> dict[str, str]:
    """A user's environment with a checkout's engine and steps first on the path."""
    e = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**e, "PYTHONPATH": os.pathsep.join([str(root), e.get("PYTHONPATH", "")])}


def recipe_cmd() -> list[str]:
    exe = shutil.which("recipe", path=os.path.dirname(sys.executable))
    return [exe] if exe else [sys.executable, "-m", "engine.cli"]


def timed(cmd: list[str], cwd: Path, root: Path = ROOT) -> dict:
    """Wall seconds, CPU seconds and peak RSS of one process (and the children it waited for)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env(root), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stderr.decode()[-3000:]}")
    return {"seconds": wall, "cpu_seconds": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024}


def parquet_rows(folder: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(p).metadata.num_rows for p in sorted(folder.glob("*.parquet")))


class Mathrecipe:
    """A scratch project: data.load of the file (cached once), then filter.by_label, run with the
    engine and steps of checkout `root` (this one, or a --baseline)."""

    def __init__(self, work: Path, data: Path, settings: dict[str, str], root: Path = ROOT, name: str = "mathrecipe"):
        self.dir, self.root = work / name, root
        self.dir.mkdir()
        extra = "".join(f", {k}: {v}" for k, v in settings.items())
        (self.dir / "filter5m.yaml").write_text(
            "recipe: filter5m\nsteps:\n"
            f"  - id: openmath\n    uses: data.load\n    with: {{path: {data}}}\n"
            f"  - id: hard\n    uses: filter.by_label\n    with: {{max_pass_rate: {THRESHOLD}{extra}}}\n"
            '    inputs: {data: "${steps.openmath.data}"}\n')
        self.cmd = [*recipe_cmd(), "run", "filter5m.yaml", "--force", "hard", "-q"]
        subprocess.run([*recipe_cmd(), "run", "filter5m.yaml", "-q"], cwd=self.dir, env=env(root), check=True,
                       capture_output=True)

    def run(self) -> dict:
        r = timed(self.cmd, self.dir, self.root)
        r["kept"] = parquet_rows(self.dir / "artifacts" / "filter5m" / "hard" / "data")
        return r


class Peer:
    def __init__(self, name: str, work: Path, data: Path):
        self.dir = work / name
        self.dir.mkdir()
        self.cmd = [sys.executable, "-c", PEERS[name], str(data), str(self.dir), COLUMN, str(THRESHOLD)]

    def run(self) -> dict:
        (self.dir / "kept.parquet").unlink(missing_ok=True)
        r = timed(self.cmd, self.dir)
        r["kept"] = parquet_rows(self.dir)
        return r


def compare(data: Path, peers: list[str], rounds: int, settings: dict[str, str], baseline: Path | None = None) -> dict:
    import pyarrow.parquet as pq

    rows = pq.ParquetFile(data).metadata.num_rows
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench_filter_") as tmp:
        tools = {"mathrecipe": Mathrecipe(Path(tmp), data, settings)}
        if baseline:
            tools["baseline"] = Mathrecipe(Path(tmp), data, settings, baseline, "baseline")
            peers = ["baseline", *peers]
        tools.update({p: Peer(p, Path(tmp), data) for p in peers if p != "baseline"})
        names = list(tools)
        runs: dict[str, list[dict]] = {n: [] for n in names}
        for i in range(rounds):
            for name in names[i % len(names):] + names[:i % len(names)]:  # rotated: no tool always first
                runs[name].append(tools[name].run())
    out = {"rows": rows, "threshold": THRESHOLD, "rounds": rounds, "settings": settings, "tools": {},
           "baseline": str(baseline) if baseline else None}
    for name, rs in runs.items():
        kept = {r["kept"] for r in rs}
        if len(kept) != 1 or kept != {runs["mathrecipe"][0]["kept"]}:
            raise RuntimeError(f"{name} kept {sorted(kept)} rows, mathrecipe {runs['mathrecipe'][0]['kept']}")
        wall = statistics.median(r["seconds"] for r in rs)
        out["tools"][name] = {"kept": kept.pop(), "median_s": wall, "rows_per_s": rows / wall,
                              "median_cpu_s": statistics.median(r["cpu_seconds"] for r in rs),
                              "max_peak_rss_mb": max(r["peak_rss_mb"] for r in rs), "runs": rs}
    me = out["tools"]["mathrecipe"]
    out["ratios"] = {p: round(me["rows_per_s"] / out["tools"][p]["rows_per_s"], 3) for p in peers}
    out["load_average_1min"] = {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}
    return out


def table(res: dict, data: Path) -> str:
    lines = [f"{data} ({data.stat().st_size / 1e6:.0f} MB), {res['rows']:,} rows, pass rate <= {THRESHOLD}; "
             f"{res['rounds']} rounds; load average {res['load_average_1min']['before']} -> "
             f"{res['load_average_1min']['after']} on {os.cpu_count()} CPUs"
             + (f"; step settings {res['settings']}" if res["settings"] else ""),
             f"{'tool':<12}{'kept':>9}{'wall s':>8}{'rows/s':>9}{'cpu s':>7}{'peak RSS':>10}{'ratio':>8}"]
    for name, t in res["tools"].items():
        ratio = "" if name == "mathrecipe" else f"{res['ratios'][name]:.2f}x"
        lines.append(f"{name:<12}{t['kept']:>9,}{t['median_s']:>8.2f}{t['rows_per_s'] / 1e6:>8.2f}M"
                     f"{t['median_cpu_s']:>7.2f}{t['max_peak_rss_mb']:>7.0f} MB{ratio:>8}")
    lines.append("ratio: mathrecipe's rows/s over the tool's (wall, whole process, medians)")
    return "\n".join(lines)


def save(res: dict, data: Path, command: str, path: Path = RESULTS) -> None:
    res = {"command": command, "data": str(data), "bytes": data.stat().st_size,
           "when": time.strftime("%Y-%m-%d %H:%M:%S"),
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
           **res}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=2) + "\n")


# ---------------------------------------------------------------- pytest-benchmark

def test_filter_vs_duckdb(benchmark):
    """`pytest benchmarks/bench_filter.py --benchmark-only`: the targets, on 3 alternated rounds."""
    res = benchmark.pedantic(compare, args=(ensure_data(), ["duckdb"], 3, {}), rounds=1, iterations=1)
    benchmark.extra_info.update(ratios=res["ratios"], load_average_1min=res["load_average_1min"])
    assert res["tools"]["mathrecipe"]["max_peak_rss_mb"] <= 1024, res
    assert res["ratios"]["duckdb"] >= 0.7, res


# ---------------------------------------------------------------- command line

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vs", default="duckdb,polars", help="peers, comma-separated: duckdb, polars, pandas")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a filter.by_label setting, e.g. batch_size=20000 (default: the step's defaults)")
    ap.add_argument("--baseline", metavar="CHECKOUT", help="also time the filter step of another checkout "
                    "(e.g. `git worktree add /tmp/before main`), alternated with this one")
    ap.add_argument("--out", default=str(RESULTS), help="where the JSON goes")
    args = ap.parse_args()
    peers = [p for p in args.vs.split(",") if p]
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        ap.error(f"unknown peer(s) {', '.join(unknown)}; choose from {', '.join(PEERS)}")
    settings = dict(s.split("=", 1) for s in args.set)
    data = ensure_data(Path(args.data))
    res = compare(data, peers, args.rounds, settings, Path(args.baseline).resolve() if args.baseline else None)
    print(table(res, data))
    save(res, data, "python benchmarks/bench_filter.py " + " ".join(sys.argv[1:]), Path(args.out))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
