"""Ctrl-C and SIGTERM (what preemption sends): finish the round, checkpoint, then stop."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


class SweepInterrupted(Exception):
    """A sweep stopped by a signal after saving a checkpoint; the message says how to resume."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class StopRequests:
    """Remembers the first SIGINT or SIGTERM instead of dying in the middle of a round."""

    def __init__(self):
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame):
        self.signum = signum


@contextmanager
def stop_requests():
    """Yields a ``StopRequests``; the previous handlers come back on exit."""
    stops = StopRequests()
    if threading.current_thread() is not threading.main_thread():
        yield stops  # signals reach only the main thread; nothing to catch here
        return
    previous = {s: signal.signal(s, stops._handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stops
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
