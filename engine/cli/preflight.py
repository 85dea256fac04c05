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
import shutil
import socket
import typing
from pathlib import Path
from urllib.parse import urlparse

from engine.cache.secrets import read_secret
from engine.recipe.errors import CacheError, StepError


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
    try:
        u = urlparse(url)
        port = u.port or (443 if u.scheme == "https" else 80)
    except ValueError as e:  # a port out of range or not a number, an unclosed [IPv6: the recipe's mistake
        return f"not a valid URL: {e}"
    if not u.hostname:
        return "no host in the URL"
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
    labels = [n.label for n in runner.plan.nodes if n.label in runner.selection]
    problems: dict[str, list[str]] = {}  # problem -> labels
    for label in labels:
        node = runner.plan.by_label[label]
        if not _may_have_problems(node.step_cls):
            continue
        for p in node.step_cls(node.config).preflight():
            problems.setdefault(p, []).append(label)
    problems.update(_disk(runner, labels))
    if problems:
        cached = _cached(runner, {label for ls in problems.values() for label in ls})
        problems = {p: [label for label in ls if label not in cached] for p, ls in problems.items()}
        problems = {p: ls for p, ls in problems.items() if ls}
    if problems:
        raise PreflightError(_message(runner.plan, problems))


@functools.cache
def _may_have_problems(step_cls) -> bool:
    """False for a step type with only the default check and no config field that has its
    own (most steps): 10,000 instances of it cost nothing here."""
    from engine.recipe.step import Step

    if step_cls.preflight is not Step.preflight:
        return True
    return any(callable(getattr(t, "preflight", None))
               for f in step_cls.Config.model_fields.values() for t in _types(f.annotation))


def _types(annotation):
    """The classes in an annotation: BackendConfig in `BackendConfig | None` or `list[...]`."""
    if isinstance(annotation, type):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _types(arg)


LOW_DISK = 20 << 30  # with less free space than this under the cache, estimate what the run will write


def _disk(runner, labels: list[str]) -> dict[str, list[str]]:
    """A problem when the cache's filesystem has less free space than the outputs the steps
    wrote the last time they computed (a step may estimate its own: `estimated_output_bytes`).
    Estimated only when space is short, so a roomy disk costs one statvfs."""
    root = next(p for p in (runner.store.root, *runner.store.root.parents) if p.exists())
    free = shutil.disk_usage(root).free
    if free >= LOW_DISK:
        return {}
    sizes = {label: _estimate(runner, label) for label in labels}
    sizes = {label: n for label, n in sizes.items() if n}
    cached = _cached(runner, set(sizes)) if sizes else set()
    need = sum(n for label, n in sizes.items() if label not in cached)
    if need <= free:
        return {}
    return {f"disk: the steps that will compute are expected to write about {_human(need)} (the size of their "
            f"last outputs), but {root} has {_human(free)} free; free some space or use --cache-dir on a larger disk":
            [label for label in sizes if label not in cached]}


def _estimate(runner, label: str) -> int | None:
    node = runner.plan.by_label[label]
    own = node.step_cls(node.config).estimated_output_bytes()
    if own is not None:
        return own
    last = runner.store.last_keys.get(runner.plan.name, label)
    if last is None or not runner.store.has(last):
        return None
    try:
        return sum(o.get("size", 0) for o in runner.store.read_entry(last)["outputs"].values())
    except CacheError:  # removed meanwhile, or damaged: the run sets it aside
        return None


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _cached(runner, wanted: set[str]) -> set[str]:
    """Which of `wanted` already have a cache entry (they will not run, so lack nothing)."""
    from engine.run.runner import Runner
    from engine.run.status import preview

    probe = Runner(runner.plan, runner.store, force=runner.selection.force)
    try:
        statuses = preview(probe)
    except Exception:  # noqa: BLE001 - a key that cannot be computed yet will run
        return set()
    return {s.label for s in statuses if s.cached and s.label in wanted}


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
