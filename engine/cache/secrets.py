"""Secrets come from the environment or a keys file (`NAME=value` lines), never from a recipe.

The keys file is `$RECIPE_KEYS_FILE`, else `~/.config/mathrecipe/keys`. Every secret a step
reads is registered with a Redactor, which scrubs it from logs and error messages.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

# Environment variables that hold secrets: never copied into run records.
SECRET_NAME = re.compile(r"(TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.I)


def keys_file() -> Path:
    return Path(os.environ.get("RECIPE_KEYS_FILE", Path.home() / ".config" / "mathrecipe" / "keys"))


def read_secret(name: str) -> str | None:
    if os.environ.get(name):
        return os.environ[name]
    path = keys_file()
    if path.is_file():
        for line in path.read_text().splitlines():
            k, sep, v = line.partition("=")
            if sep and k.strip() == name:
                return v.strip().strip("'\"")
    return None


class Redactor(logging.Filter):
    """Replaces known secret values with *** in log records and strings."""

    def __init__(self) -> None:
        super().__init__()
        self.values: set[str] = set()
        for k, v in os.environ.items():
            if SECRET_NAME.search(k) and v and len(v) >= 6:
                self.values.add(v)

    def add(self, value: str) -> None:
        if value:
            self.values.add(value)

    def scrub(self, text: str) -> str:
        for v in sorted(self.values, key=len, reverse=True):
            text = text.replace(v, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.scrub(record.getMessage())
        record.args = ()
        return True
