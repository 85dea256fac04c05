"""Digests of a step type's source code, to notice code edited without a `version` bump.

The key holds a step's `version`, not its code: the version is the contract. An entry also
records `source_digest(step_cls)`, the digest of the module files that define the class (its
module and its base classes' modules) and of the step library's modules those import at
module level (shared helpers, e.g. steps/common/domain_checks.py). When a cached entry's version
matches but this digest differs, `plan` and `run` say so (`recipe run --rerun-changed-code`
recomputes such entries), and `steps/versions.lock` pins the digest per version for review.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import inspect
import json
import os
import sys
from contextlib import suppress
from pathlib import Path

CODE_CHANGED = "code changed since this entry (version not bumped)"


def _module_file(name: str) -> Path | None:
    mod = sys.modules.get(name)
    f = getattr(mod, "__file__", None)
    if f is None:
        try:  # imported lazily (inside `run`) and not yet loaded: find the file without importing it
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            return None
        f = spec.origin if spec else None
    return Path(f) if f and f.endswith(".py") else None


def _imports(path: Path, module: str, top: str) -> set[str]:
    """Modules of package `top` that the file imports anywhere (lazy imports in `run` included)."""
    names, pairs = _parsed(path, module, top)[1:]
    # `from pkg import name` names a module where a file for it exists
    return set(names) | {f"{base}.{name}" for base, name in pairs if _module_file(f"{base}.{name}") is not None}


def source_files(step_cls: type) -> list[Path]:
    """The defining modules of the class and its bases, and the library modules they import
    (one level: a helper's own helpers are not followed), sorted."""
    names = {c.__module__ for c in inspect.getmro(step_cls)
             if c.__module__.split(".")[0] not in ("engine", "builtins")}
    for name in list(names):
        f = _module_file(name)
        if f is not None:
            names |= _imports(f, name, name.split(".")[0])
    return sorted({f for f in map(_module_file, names) if f is not None})


# digests of the syntax tree without the engine's import lines (where the engine keeps a name is
# not the step's code: engine/ was regrouped into packages under "ast2:"); "ast3:" hashes each
# file's tree digest, not its dump (the memo keeps 64 characters a file). Entries recorded under
# an older kind ("ast2:", "ast:", or digests of the bytes) never count as changed.
DIGEST_KIND = "ast3:"


@functools.lru_cache(maxsize=None)
def source_digest(step_cls: type) -> str:
    """sha256 over (file name, syntax tree digest) of `source_files`; names relative to their package.
    The tree, not the bytes: reformatting, comments and blank lines are not code changes."""
    h = hashlib.sha256()
    top = step_cls.__module__.split(".")[0]
    root = _module_file(top)
    base = root.parent.parent if root is not None and root.name == "__init__.py" else None
    for f in source_files(step_cls):
        rel = f.relative_to(base).as_posix() if base is not None and f.is_relative_to(base) else f.name
        h.update(rel.encode() + b"\0" + _parsed(f, _module_name(f, base), top)[0].encode() + b"\0")
    return DIGEST_KIND + h.hexdigest()


def _module_name(path: Path, base: Path | None) -> str:
    rel = path.relative_to(base) if base is not None and path.is_relative_to(base) else Path(path.name)
    parts = rel.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


_memo: Path | None = None  # a folder: what parsing each source file found, by the file's bytes


def remember_parses_in(folder: Path) -> None:
    """Keep parse results under `folder` (the cache's index), across processes: parsing a step's
    modules costs ~50 ms a run, reading and hashing their bytes ~1 ms."""
    global _memo
    _memo = folder


@functools.lru_cache(maxsize=None)
def _parsed(path: Path, module: str, top: str) -> tuple[str, tuple[str, ...], tuple[tuple[str, str], ...]]:
    """(digest of the syntax tree without engine imports, modules of `top` imported, (module, name)
    pairs of `from module import name` within `top`) of one file, lazy imports in functions included."""
    raw = path.read_bytes()
    memo = _memo / hashlib.sha256(f"{module}\0{top}\0".encode() + raw).hexdigest() if _memo else None
    if memo is not None:
        with suppress(OSError, ValueError, TypeError):
            tree, names, pairs = json.loads(memo.read_bytes())
            return tree, tuple(names), tuple(tuple(p) for p in pairs)
    parsed = ast.parse(raw)
    names, pairs = set(), set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(parsed):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.split(".")[0] == top}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] == top:
                names.add(base)
                pairs |= {(base, a.name) for a in node.names}
    tree = hashlib.sha256(ast.dump(_WithoutEngineImports().visit(parsed)).encode()).hexdigest()
    out = (tree, tuple(sorted(names)), tuple(sorted(pairs)))
    if memo is not None:
        with suppress(OSError):
            memo.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo.with_name(f"{memo.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(out))
            os.replace(tmp, memo)
    return out


class _WithoutEngineImports(ast.NodeTransformer):
    def visit_Import(self, node: ast.Import):
        return None if all(a.name.split(".")[0] == "engine" for a in node.names) else node

    def visit_ImportFrom(self, node: ast.ImportFrom):
        return None if not node.level and (node.module or "").split(".")[0] == "engine" else node


def code_changed(entry: dict, step_cls: type) -> bool:
    """Same version, different source (entries written before tree digests were recorded never count)."""
    if not isinstance(entry, dict):
        entry = entry.to_json()
    recorded = entry.get("source") or ""
    return (recorded.startswith(DIGEST_KIND) and entry.get("version") == step_cls.version
            and recorded != source_digest(step_cls))


# ------------------------------------------------------------------ steps/versions.lock

LOCK_HEADER = ("# step type, version, source digest of the built-in steps; `recipe steps --lock` rewrites it.\n"
               "# A test fails when a step's source differs from its line here: bump the step's `version`\n"
               "# when its outputs change, then regenerate this file.\n")


def lock_path() -> Path:
    import steps

    return Path(steps.__file__).parent / "versions.lock"


def builtin_steps() -> dict[str, type]:
    from engine.recipe import step as registry

    return {n: c for n, c in registry.load_all().items() if c.__module__.split(".")[0] == "steps"}


def lock_text() -> str:
    lines = [f"{name} {cls.version} {source_digest(cls)}" for name, cls in sorted(builtin_steps().items())]
    return LOCK_HEADER + "\n".join(lines) + "\n"


def read_lock(path: Path) -> dict[str, tuple[str, str]]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, version, digest = line.split()
            out[name] = (version, digest)
    return out


def lock_problems(path: Path) -> list[str]:
    """What disagrees between the registered built-in steps and the lock file, one line each."""
    locked = read_lock(path) if path.exists() else {}
    problems = []
    for name, cls in sorted(builtin_steps().items()):
        version, digest = locked.get(name, (None, None))
        if version is None:
            problems.append(f"{name}: not in {path.name}")
        elif version != cls.version:
            problems.append(f"{name}: version {cls.version}, {path.name} has {version}")
        elif digest != source_digest(cls):
            problems.append(f"{name}: source changed but version is still {version}; bump `version` if outputs change")
    problems += [f"{name}: in {path.name} but not registered" for name in sorted(set(locked) - set(builtin_steps()))]
    return problems
