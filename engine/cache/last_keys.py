"""The latest key of each step of each recipe (`<cache>/index/steps`, a diskcache), which
`plan` compares a new key with to say why a step will run. Only a hint: a cache that cannot be
written (read-only, full) keeps the old one, and a missing one reads as "never ran"."""
from __future__ import annotations

from pathlib import Path


class LastKeys:
    def __init__(self, index: Path):
        self.folder = index
        self._db = None

    @property
    def db(self):
        if self._db is None:
            import diskcache

            self._db = diskcache.Cache(str(self.folder / "steps"), timeout=30)
        return self._db

    def get(self, recipe: str, label: str) -> str | None:
        import sqlite3

        if not (self.folder / "steps").exists():
            return None
        try:
            return self.db.get(f"{recipe}\0{label}")
        except (OSError, sqlite3.Error):  # a read-only cache: `plan` says "never ran" rather than fail
            return None

    def set(self, pairs: dict[tuple[str, str], str], token: str | None = None) -> None:
        """One transaction for all of a run's steps. `token` names this set of keys, so a
        no-op run can tell that they are still the latest without rewriting them."""
        import sqlite3

        try:
            with self.db.transact():
                for (recipe, label), key in pairs.items():
                    self.db.set(f"{recipe}\0{label}", key)
            for recipe in {recipe for recipe, _ in pairs}:
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
