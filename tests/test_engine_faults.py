"""Faults of the machine are one line with the right exit code, never a traceback: a read-only
cache serves a cached run and `plan`, a full disk names the device and the output being
written (and keeps the step's log), and bad UTF-8 in JSONL names the file, line and offset.

The read-only and full-disk tests mount (a read-only bind mount, a 20 MB tmpfs): they need
root with CAP_SYS_ADMIN (CI runs as root) and skip, saying so, where mounting is refused."""
import shutil
import subprocess
from contextlib import contextmanager

import pytest
from conftest import ROOT, write


@contextmanager
def mounted(target, *steps: list[str]):
    """`mount` each of `steps` (arguments before the target); unmounted afterwards."""
    target.mkdir(parents=True, exist_ok=True)
    done = 0
    try:
        for args in steps:
            r = subprocess.run(["mount", *args, str(target)], capture_output=True, text=True)
            if r.returncode != 0:
                pytest.skip(f"cannot mount {' '.join(args)} here ({r.stderr.strip() or r.returncode}): "
                            "this test needs root with CAP_SYS_ADMIN")
            done = 1
        yield target
    finally:
        if done:
            subprocess.run(["umount", "-l", str(target)], capture_output=True)


def demo(cli):
    shutil.copy(ROOT / "recipes" / "demo.yaml", cli.tmp / "demo.yaml")
    write(cli.tmp / "tests/data/demo_problems.jsonl", (ROOT / "tests/data/demo_problems.jsonl").read_text())
    return "demo.yaml"


def no_traceback(p):
    assert "Traceback" not in p.stdout + p.stderr, p.stdout + p.stderr
    return p


def test_a_read_only_cache_serves_a_cached_run_and_plan_and_refuses_work(cli):
    f = demo(cli)
    cli("run", f)
    with mounted(cli.tmp / "ro", ["--bind", str(cli.cache)], ["-o", "remount,bind,ro"]) as ro:
        fast = no_traceback(cli("run", f, cache=ro))
        assert f"could not be recorded: {ro} is read-only" in fast.stdout and "done: 6 cached" in fast.stdout
        full = no_traceback(cli("run", f, "--rerun-changed-code", cache=ro))  # not the saved plan
        assert "could not be recorded" in full.stdout and "done: 6 cached" in full.stdout
        plan = no_traceback(cli("plan", f, cache=ro))
        assert "6 cached, 0 to run" in plan.stdout
        work = no_traceback(cli("run", f, "--set", "vars.sample=4", cache=ro, check=1))
        assert work.stderr.startswith(f"error: cache {ro} is read-only: 3 step(s) would run")
    assert len(list(cli.cache.glob("runs/*.json"))) == 1, "a run record was written to the read-only cache"


def test_a_full_disk_is_one_line_naming_the_device_and_output_and_keeps_the_log(cli):
    rows = "".join('{"i": %d, "text": "%s"}\n' % (i, "x" * 200) for i in range(120_000))  # ~26 MB
    write(cli.tmp / "big.jsonl", rows)
    write(cli.tmp / "big.yaml", "recipe: big\nsteps:\n  - id: load\n    uses: data.from_file\n"
                                "    with: {path: big.jsonl}\n")
    with mounted(cli.tmp / "small", ["-t", "tmpfs", "-o", "size=20m", "tmpfs"]) as small:
        cache = small / "cache"
        out = no_traceback(cli("run", "big.yaml", cache=cache, check=1))
        assert f"no space left on {small} while writing load's data; log: {cache}/failed/" in out.stdout
        logs = list((cache / "failed").glob("*.log"))
        assert len(logs) == 1 and "step load (data.from_file v1) starts" in logs[0].read_text()
        assert not list(cache.rglob("entry.json")) and not list((cache / "tmp").iterdir())

        f = demo(cli)  # at every fill level: one line and exit 1, or a finished run
        codes = []
        for free in (0, 64 << 10, 256 << 10, 1 << 20):
            shutil.rmtree(cache, ignore_errors=True)
            (small / "fill").unlink(missing_ok=True)
            available = shutil.disk_usage(small).free
            subprocess.run(["fallocate", "-l", str(max(available - free, 4096)), str(small / "fill")], check=True)
            p = no_traceback(cli("run", f, cache=cache, check=None))
            codes.append(p.returncode)
            if p.returncode:
                assert p.returncode == 1 and f"no space left on {small}" in p.stdout, p.stdout
            else:
                assert "done: 6 ran" in p.stdout
        assert codes[0] == 1


def test_bad_utf8_in_jsonl_names_the_file_line_and_byte_offset(cli):
    lines = [b'{"i": %d, "text": "caf\xc3\xa9"}\n' % i for i in range(50_000)]
    lines[41_234] = b'{"i": 41234, "text": "caf\xe9"}\n'  # Latin-1, not UTF-8
    (cli.tmp / "rows.jsonl").write_bytes(b"".join(lines))
    write(cli.tmp / "read.yaml", "recipe: read\nsteps:\n  - id: load\n    uses: data.from_file\n"
                                 "    with: {path: rows.jsonl}\n")
    out = no_traceback(cli("run", "read.yaml", check=1))
    offset = sum(map(len, lines[:41_234])) + lines[41_234].index(b"\xe9")
    assert f"rows.jsonl:41235: not valid UTF-8 (byte 0xe9 at byte offset {offset}); expected UTF-8 text" in out.stdout
