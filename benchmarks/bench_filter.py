"""filter.by_label at scale: rows/s and peak RSS over a 5M-row OpenMathReasoning-shaped file,
against the pandas load-everything approach, in the same run.

    python benchmarks/bench_filter.py                       # both, printed as a table
    python benchmarks/bench_filter.py --save                # also writes benchmarks/results/filter.json
    pytest benchmarks/bench_filter.py --benchmark-only      # the same two runs under pytest-benchmark

The data file is `$OPENMATH_5M` (default /tmp/openmath_5m/openmath_5m.parquet), written by
benchmarks/make_openmath_5m.py when missing. Each approach runs in a fresh Python process so
its peak RSS (ru_maxrss) is its own; the clock covers the work only (reading, filtering at
pass rate <= 0.1, writing the kept rows), not interpreter start-up or imports. Targets:
filter.by_label >= 1M rows/s with peak RSS <= 1 GB.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("OPENMATH_5M", "/tmp/openmath_5m/openmath_5m.parquet"))
THRESHOLD = 0.1


def ensure_data(path: Path = DATA, rows: int = 5_000_000) -> Path:
    if not path.exists():
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from make_openmath_5m import write

        write(path, rows)
    return path


# ---------------------------------------------------------------- the two approaches (child side)

def _cpu() -> float:
    """User + system CPU seconds of this process (all threads): robust to a busy machine."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def child_filter(data: Path, work: Path, batch_size: int, save_every: int) -> dict:
    import time

    import pyarrow.parquet  # noqa: F401  imported before the clock starts, like pandas below

    from engine.run.testing import run_step

    folder = work / "input"
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / data.name
    if not link.exists():
        os.symlink(data, link)
    import resource

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    c0, t0 = _cpu(), time.perf_counter()
    out = run_step("filter.by_label", {"max_pass_rate": THRESHOLD, "batch_size": batch_size,
                                       "save_every": save_every}, {"data": folder}, workdir=work / "run")
    seconds, cpu = time.perf_counter() - t0, _cpu() - c0
    m = out["report"].metrics()
    return {"rows": m["rows_in"], "kept": m["kept"], "unparseable": m["unparseable"], "parts": m["parts"],
            "seconds": seconds, "cpu_seconds": cpu, "rss_before_mb": rss_before}


def child_pandas(data: Path, work: Path) -> dict:
    import resource
    import time

    import pandas as pd

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    c0, t0 = _cpu(), time.perf_counter()
    df = pd.read_parquet(data)  # everything in memory, as a script built on load_dataset/to_pandas does
    rate = pd.to_numeric(df["pass_rate_72b_tir"], errors="coerce")
    kept = df[rate <= THRESHOLD]
    kept.to_parquet(work / "kept.parquet")
    seconds, cpu = time.perf_counter() - t0, _cpu() - c0
    return {"rows": len(df), "kept": len(kept), "unparseable": int(rate.isna().sum()), "parts": 1, "seconds": seconds,
            "cpu_seconds": cpu, "rss_before_mb": rss_before}


def run_child(kind: str, data: Path, **kw) -> dict:
    """Run one approach in a fresh process; returns its figures plus peak RSS."""
    with tempfile.TemporaryDirectory(prefix=f"bench_{kind}_") as work:
        args = [sys.executable, __file__, "--child", kind, "--data", str(data), "--work", work]
        for k, v in kw.items():
            args += [f"--{k.replace('_', '-')}", str(v)]
        p = subprocess.run(args, capture_output=True, text=True, cwd=ROOT,
                           env={**os.environ,
                                "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})
        if p.returncode != 0:
            raise RuntimeError(f"{kind} benchmark failed:\n{p.stderr[-3000:]}")
        result = json.loads(p.stdout.strip().splitlines()[-1])
    result["rows_per_s"] = result["rows"] / result["seconds"]
    return result


def compare(data: Path, batch_size: int = 5000, save_every: int = 10000) -> dict:
    return {"filter.by_label": run_child("filter", data, batch_size=batch_size, save_every=save_every),
            "pandas": run_child("pandas", data)}


def table(results: dict, data: Path) -> str:
    size = data.stat().st_size / 1e6
    lines = [f"{data} ({size:.0f} MB on disk), pass rate <= {THRESHOLD}; load average {os.getloadavg()[0]:.1f} "
             f"on {os.cpu_count()} CPUs",
             f"{'approach':<18}{'rows':>10}{'kept':>9}{'wall s':>8}{'rows/s':>9}{'cpu s':>7}{'rows/cpu-s':>12}"
             f"{'peak RSS':>10}{'(imports)':>11}"]
    for name, r in results.items():
        lines.append(f"{name:<18}{r['rows']:>10,}{r['kept']:>9,}{r['seconds']:>8.2f}{r['rows_per_s'] / 1e6:>8.2f}M"
                     f"{r['cpu_seconds']:>7.2f}{r['rows'] / r['cpu_seconds'] / 1e6:>11.2f}M"
                     f"{r['peak_rss_mb']:>7.0f} MB{r['rss_before_mb']:>8.0f} MB")
    f, p = results["filter.by_label"], results["pandas"]
    lines.append(f"filter.by_label: {f['rows_per_s'] / p['rows_per_s']:.1f}x the rows/s of pandas, "
                 f"{p['peak_rss_mb'] / f['peak_rss_mb']:.1f}x less peak memory")
    return "\n".join(lines)


# ---------------------------------------------------------------- pytest-benchmark

def _bench(benchmark, kind: str, **kw):
    data = ensure_data()
    result = benchmark.pedantic(run_child, args=(kind, data), kwargs=kw, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    return result


def test_filter_by_label_5m_rows(benchmark):
    r = _bench(benchmark, "filter", batch_size=5000, save_every=10000)
    assert r["rows"] == 5_000_000
    assert r["peak_rss_mb"] <= 1024, r
    assert r["rows_per_s"] >= 1_000_000, r


def test_pandas_load_everything_5m_rows(benchmark):
    r = _bench(benchmark, "pandas")
    assert r["rows"] == 5_000_000


# ---------------------------------------------------------------- command line

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", choices=["filter", "pandas"])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--work")
    ap.add_argument("--batch-size", type=int, default=5000)
    ap.add_argument("--save-every", type=int, default=10000)
    ap.add_argument("--save", action="store_true", help="write benchmarks/results/filter.json")
    args = ap.parse_args()
    data = Path(args.data)
    if args.child:
        import resource

        work = Path(args.work)
        r = (child_filter(data, work, args.batch_size, args.save_every) if args.child == "filter"
             else child_pandas(data, work))
        r["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(r))
        return
    ensure_data(data)
    results = compare(data, args.batch_size, args.save_every)
    print(table(results, data))
    if args.save:
        import platform

        out = ROOT / "benchmarks" / "results" / "filter.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"data": str(data), "bytes": data.stat().st_size, "threshold": THRESHOLD,
                                   "batch_size": args.batch_size, "save_every": args.save_every,
                                   "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                               "platform": platform.platform(),
                                               "load_average_1min": round(os.getloadavg()[0], 2)},
                                   "results": results}, indent=2) + "\n")
        print(f"saved {out}")


if __name__ == "__main__":
    main()
