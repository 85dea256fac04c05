"""Every shipped recipe plans to the same keys as the list committed in tests/data/plan_keys.json.

The list was written before engine/ was regrouped into packages; a refactor that changes a key
(and so invalidates every team's cache) fails here. Inputs from upstream steps get a stand-in
digest (the upstream label and output), so every node's key is checked, not only the roots'.
Regenerate on purpose only (a key schema change): `python tests/test_plan_keys.py --write`.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from engine.cache.digest import text_digest, tree_digest
from engine.cache.keys import config_for_key, step_key
from engine.recipe.plan import plan_file

ROOT = Path(__file__).resolve().parent.parent
LIST = ROOT / "tests" / "data" / "plan_keys.json"


def _digest(value):
    if value is None:
        return None
    if isinstance(value, list):
        return [_digest(v) for v in value]
    return text_digest(str(value))  # a Ref prints as "label.output"


def plan_keys(recipe: Path, profile: str | None) -> dict[str, str]:
    plan = plan_file(recipe, profile)
    keys = {}
    for node in plan.nodes:
        inputs = {slot: _digest(v) for slot, v in node.inputs.items()}
        external = []
        for f in node.step_cls(node.config).external_files():
            p = Path(f)
            external.append(tree_digest(p) if p.exists() else f"missing:{p.name}")
        keys[node.label] = step_key(node.uses, node.step_cls.version, config_for_key(node.config), inputs, external)
    return keys


def cases() -> list[tuple[str, str | None]]:
    out = []
    for recipe in sorted((ROOT / "recipes").glob("*.yaml")):
        rel = str(recipe.relative_to(ROOT))
        out.append((rel, None))
        for profile in plan_file(recipe).profiles:
            out.append((rel, profile))
    return out


def all_keys() -> dict[str, dict[str, str]]:
    return {f"{rel}@{profile or ''}": plan_keys(ROOT / rel, profile) for rel, profile in cases()}


@pytest.mark.parametrize("case", sorted(json.loads(LIST.read_text())) if LIST.exists() else [])
def test_plan_keys_unchanged(case, monkeypatch):
    monkeypatch.chdir(ROOT)
    rel, _, profile = case.partition("@")
    expected = json.loads(LIST.read_text())[case]
    assert plan_keys(ROOT / rel, profile or None) == expected


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    import os

    os.chdir(ROOT)
    LIST.write_text(json.dumps(all_keys(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {LIST}")
