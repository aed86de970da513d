"""The seconds each stage of a run's start takes, up to its first round's record."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager


class StartUp:
    """Seconds spent in each stage of a run's start, up to its first round's record: JAX's
    devices, the data, sizing the population, compiling the round (and beside it the
    population's init), the population's first state (or a resumed run's checkpoint) and the
    first round itself. What comes before the run (the process's start, its imports, the
    config) is the time to the first round less these (``scripts/start_time.py``).
    ``listeners`` are told each stage's name as it begins."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.listeners: list[Callable[[str], None]] = []

    @contextmanager
    def stage(self, name: str):
        for listener in self.listeners:
            listener(name)
        started = time.perf_counter()
        try:
            yield
        finally:
            spent = self.seconds.get(name, 0.0) + time.perf_counter() - started
            self.seconds[name] = round(spent, 3)
