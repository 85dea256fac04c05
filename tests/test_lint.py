"""What ruff's rule set cannot say: no bare `__import__` calls in the project's code."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_no_bare_dunder_import():
    found = []
    for folder in ("engine", "steps", "tests", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "__import__":
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, f"bare __import__ (import at the top, or importlib.import_module): {', '.join(found)}"
