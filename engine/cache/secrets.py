"""Secrets come from the environment or a keys file (`NAME=value` lines), never from a recipe.

The keys file is `$RECIPE_KEYS_FILE`, else `~/.config/mathrecipe/keys`. Every secret read in
a process is known to every Redactor of that process, which scrubs it, and any token of a
common shape (`sk-…`, `hf_…`, `Bearer …`), from logs and error messages. Scrub the whole text
BEFORE cutting it short: a cut can split a secret, and the piece left no longer matches.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import re
from pathlib import Path

# Environment variables that hold secrets: never copied into run records.
SECRET_NAME = re.compile(r"(TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.I)
# Tokens recognisable by their shape, whoever's they are: OpenAI-style keys, Hugging Face
# tokens, and whatever follows "Bearer" in an echoed Authorization header.
TOKEN_SHAPES = re.compile(r"\b(?:(sk-)[A-Za-z0-9_\-]{8,}|(hf_)[A-Za-z0-9]{8,}|(Bearer\s+)[A-Za-z0-9._~+/=\-]{8,})")
_read: dict[str, str] = {}  # secret value -> its name, of those read in this process (read_secret)
# a secret-named environment variable holding fewer characters is no secret (`PAGE_TOKEN=1`): scrubbing
# or refusing on every "1" it could be would do harm and protect nothing
MIN_SECRET = 6


def keys_file() -> Path:
    return Path(os.environ.get("RECIPE_KEYS_FILE", Path.home() / ".config" / "mathrecipe" / "keys"))


def read_secret(name: str) -> str | None:
    value = _lookup(name)
    if value:
        _read[value] = name  # every Redactor of this process scrubs it from now on
    return value


def _lookup(name: str) -> str | None:
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
        self.values: set[str] = set(_env_secrets())

    def add(self, value: str) -> None:
        if value:
            self.values.add(value)

    def scrub(self, text: str) -> str:
        """The text without any known secret or token-shaped string. Call it on the whole text,
        before any truncation."""
        for v in sorted({f for v in self.values | _read.keys() for f in _forms(v)}, key=len, reverse=True):
            text = text.replace(v, "***")
        return TOKEN_SHAPES.sub(_keep_prefix, text)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.scrub(record.getMessage())
        record.args = ()
        # a traceback (`exc_info=True`) repeats each exception's message, a URL holding a key among them
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = self.scrub(record.stack_info)
        return True


def known_secrets() -> dict[str, str]:
    """Every secret value this process knows, of MIN_SECRET characters or more (a shorter one is
    found in ordinary data by chance), with its name: read through read_secret, or in a
    secret-named environment variable."""
    return _env_secrets() | {v: k for v, k in _read.items() if len(v) >= MIN_SECRET}


def _env_secrets() -> dict[str, str]:
    """{value: name} of the secret-named environment variables holding MIN_SECRET characters or more."""
    return {v: k for k, v in os.environ.items() if SECRET_NAME.search(k) and len(v) >= MIN_SECRET}


@functools.lru_cache(maxsize=256)  # scrub runs on every log line
def _forms(value: str) -> frozenset[str]:
    """A secret as a server may echo it: as is, percent-encoded in a URL or form, escaped in JSON
    (a key with `/`, `+` or `=` in it, an S3 secret key among them)."""
    from urllib.parse import quote, quote_plus

    return frozenset({value, quote(value, safe=""), quote(value), quote_plus(value), json.dumps(value)[1:-1]})


def _keep_prefix(m: re.Match) -> str:
    return (m.group(1) or m.group(2) or m.group(3)) + "***"


def scrub(text: str) -> str:
    """`Redactor().scrub(text)`, for one-off texts (an error a backend reports)."""
    return Redactor().scrub(text)


def scrub_pieces(text: str, secret: str | None, shortest: int = 8) -> str:
    """`text` without any piece of `secret` of `shortest` characters or more, longest first: a
    server that echoes only the start of a token ("token hf_AbCdEfGh... is not valid") leaves
    what `scrub` knows, the whole value, unmatched. For one short text (an error), not every
    log line: it tries each piece."""
    if not secret:
        return text
    for size in range(len(secret), shortest - 1, -1):
        for start in range(len(secret) - size + 1):
            if (piece := secret[start:start + size]) in text:
                text = text.replace(piece, "***")
    return text
