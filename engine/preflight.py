"""Before the first step runs: ask every step that will run what it lacks on this machine
(`Step.preflight()`: packages, GPUs, secrets, servers). All problems are reported at once,
and nothing is started (exit 1).

The helpers below are for steps' own `preflight` methods; they stay cheap (no torch import,
one connection attempt per server) so a preflight takes well under a second.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from .errors import StepError
from .secrets import read_secret


class PreflightError(StepError):
    """Problems found before anything ran (exit code 1)."""


@functools.cache
def missing_package(name: str) -> bool:
    return importlib.util.find_spec(name) is None


@functools.lru_cache(maxsize=1)
def visible_gpus() -> int:
    """NVIDIA GPUs this process may use, without importing torch: device files, narrowed by
    CUDA_VISIBLE_DEVICES."""
    found = len([p for p in Path("/dev").glob("nvidia[0-9]*")])
    chosen = os.environ.get("CUDA_VISIBLE_DEVICES")
    if chosen is not None:
        found = min(found, len([d for d in chosen.split(",") if d.strip() and d.strip() != "-1"]))
    return found


@functools.cache
def reachable(url: str, timeout: float = 1.0) -> str | None:
    """None if a TCP connection to the URL's host and port opens, else why not."""
    u = urlparse(url)
    if not u.hostname:
        return "no host in the URL"
    port = u.port or (443 if u.scheme == "https" else 80)
    try:
        socket.create_connection((u.hostname, port), timeout=timeout).close()
    except OSError as e:
        return e.strerror or type(e).__name__
    return None


def missing_secret(name: str) -> str | None:
    """A sentence if secret `name` is not set (the value itself is never looked at further)."""
    if read_secret(name) is None:
        return f"secret {name} is not set; export {name}=... or add it to the keys file"
    return None


def check(runner) -> None:
    """Raise PreflightError listing every problem of the steps this run would compute."""
    labels = [n.label for n in runner.plan.nodes if n.label in runner.selected]
    problems: dict[str, list[str]] = {}  # problem -> labels
    for label in labels:
        node = runner.plan.by_label[label]
        for p in node.step_cls(node.config).preflight():
            problems.setdefault(p, []).append(label)
    if problems:
        cached = _cached(runner, {label for ls in problems.values() for label in ls})
        problems = {p: [label for label in ls if label not in cached] for p, ls in problems.items()}
        problems = {p: ls for p, ls in problems.items() if ls}
    if problems:
        raise PreflightError(_message(runner.plan, problems))


def _cached(runner, wanted: set[str]) -> set[str]:
    """Which of `wanted` already have a cache entry (they will not run, so lack nothing)."""
    from .commands import preview
    from .run import Runner

    probe = Runner(runner.plan, runner.store, force=runner.force)
    try:
        rows = preview(probe)
    except Exception:  # noqa: BLE001 - a key that cannot be computed yet will run
        return set()
    return {row[0] for row in rows if row[3] == "cached" and row[0] in wanted}


def _message(plan, problems: dict[str, list[str]]) -> str:
    lines = [f"preflight: {len(problems)} problem(s) in {plan.file}; nothing was started"]
    for problem, labels in problems.items():
        lines.append(f"  - {problem}\n    steps: {_steps(plan, labels)}")
    hint = _profile_hint(plan)
    if hint:
        lines.append(f"  or run a profile of the recipe made for this machine: {hint}")
    return "\n".join(lines)


def _steps(plan, labels: list[str]) -> str:
    """`problems (6 instances), responses (6 instances)`: every affected step, folded by id."""
    counts: dict[str, int] = {}
    for label in labels:
        sid = plan.by_label[label].step_id or label
        counts[sid] = counts.get(sid, 0) + 1
    return ", ".join(sid + (f" ({n} instances)" if n > 1 else "") for sid, n in counts.items())


def _profile_hint(plan) -> str:
    return "" if plan.profile else ", ".join(f"--profile {n}" for n in plan.profiles)
