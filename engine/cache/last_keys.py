"""The latest key of each step of each recipe (`<cache>/index/steps`, a diskcache), which
`plan` compares a new key with to say why a step will run. Each recipe's keys are one value, a
JSON mapping of step label -> key: a plan of 100,000 instances reads them in one query, and a
run merges its own into them in one transaction (runs of the same recipe may end together).
Only a hint: a cache that cannot be written (read-only, full) keeps the old keys, and missing
or unreadable ones read as "never ran"."""
from __future__ import annotations

import json
from pathlib import Path


class LastKeys:
    def __init__(self, index: Path):
        self.folder = index
        self._db = None
        self._read: dict[str, dict[str, str]] = {}  # recipe -> label -> key, as read once by this process

    @property
    def db(self):
        if self._db is None:
            import diskcache

            self._db = diskcache.Cache(str(self.folder / "steps"), timeout=30)
        return self._db

    def get(self, recipe: str, label: str) -> str | None:
        return self.of(recipe).get(label)

    def of(self, recipe: str) -> dict[str, str]:
        """The recipe's step labels and their latest keys."""
        if recipe not in self._read:
            self._read[recipe] = self._load(recipe) if (self.folder / "steps").exists() else {}
        return self._read[recipe]

    def _load(self, recipe: str) -> dict[str, str]:
        import sqlite3

        try:
            keys = json.loads(self.db.get(_name(recipe)) or "{}")
        except (OSError, sqlite3.Error, ValueError, TypeError):  # read-only or damaged: "never ran"
            return {}
        if not isinstance(keys, dict):
            return {}
        return {k: v for k, v in keys.items() if isinstance(v, str)}

    def set(self, pairs: dict[tuple[str, str], str], token: str | None = None) -> None:
        """One transaction for all of a run's steps. `token` names this set of keys, so a
        no-op run can tell that they are still the latest without rewriting them."""
        import sqlite3

        by_recipe: dict[str, dict[str, str]] = {}
        for (recipe, label), key in pairs.items():
            by_recipe.setdefault(recipe, {})[label] = key
        try:
            with self.db.transact():
                for recipe, keys in by_recipe.items():
                    merged = {**self._load(recipe), **keys}
                    self.db.set(_name(recipe), json.dumps(merged))
                    self._read[recipe] = merged
            for recipe in by_recipe:
                self.set_token(recipe, token)
        except (OSError, sqlite3.Error):
            pass

    def _token_path(self, recipe: str) -> Path:
        return self.folder / f"last-keys-{recipe}.token"

    def token(self, recipe: str) -> str | None:
        try:
            return self._token_path(recipe).read_text()
        except OSError:
            return None

    def set_token(self, recipe: str, token: str | None) -> None:
        path = self._token_path(recipe)
        try:
            if token is None:
                path.unlink(missing_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(token)
        except OSError:  # read-only or full: a no-op then rewrites the latest keys
            pass

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def _name(recipe: str) -> str:
    """The recipe's value in the diskcache (`recipe\\0label`, one value per step, was the
    format before: those rows are never read)."""
    return f"keys\0{recipe}"
