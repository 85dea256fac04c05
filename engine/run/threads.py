"""The runner's driver threads: one per computing step (it locks the key, waits for the
executor and commits), and one per entry being flushed to disk."""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable


def in_thread(fn: Callable[..., Any], *args: Any) -> Future:
    """Run fn(*args) in a daemon thread: an interrupted driver exits at once, leaving no entry
    (the thread's step never reaches its commit) and its scratch for the rerun to resume.
    Threads are reused: starting one cost as much as the engine's other work on a trivial step."""
    fut: Future = Future()
    fut.set_running_or_notify_cancel()
    with _idle_lock:
        inbox = _idle.pop() if _idle else None
    if inbox is None:
        inbox = queue.SimpleQueue()
        threading.Thread(target=_worker, args=(inbox,), daemon=True).start()
    inbox.put((fut, fn, args))
    return fut


_idle: list[queue.SimpleQueue] = []  # the inboxes of worker threads waiting for work
_idle_lock = threading.Lock()


def _worker(inbox: queue.SimpleQueue) -> None:
    while True:
        fut, fn, args = inbox.get()
        try:
            result, error = fn(*args), None
        except BaseException as e:  # noqa: BLE001 - handed to whoever waits on the future
            result, error = None, e
        with _idle_lock:  # idle before the waiter wakes, so that the next step finds this thread
            _idle.append(inbox)
        if error is None:
            fut.set_result(result)
        else:
            fut.set_exception(error)
        del fut, fn, args, result, error  # nothing of a finished step kept alive by an idle thread
