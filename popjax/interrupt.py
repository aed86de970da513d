"""Ctrl-C and SIGTERM (what preemption sends): finish the round, checkpoint, then stop.

With several processes, a signal to any one of them stops them all after the same round: each
round's end, they share whether one has a stop request. (JAX's own preemption sync point would
wait one round more, and it hears SIGTERM only.)
"""

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

    def agreed(self) -> int | None:
        """The signal that stops every process after this round, or None to go on.

        Every process must call it at the same point of each round."""
        # Imported here: the command's parser imports this module, and --help needs no JAX.
        from popjax.distributed import largest_on_any_process

        signum = largest_on_any_process(self.signum or 0)
        return signum or None

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
