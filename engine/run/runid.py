"""Run ids: sortable by start time (to the millisecond), unique across processes."""
from __future__ import annotations

import secrets
import time


def new_run_id() -> str:
    now = time.time()
    return time.strftime("%Y%m%d-%H%M%S", time.localtime(now)) + f"{int(now * 1000) % 1000:03d}-" + secrets.token_hex(2)
