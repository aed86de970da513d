"""Where a run's compile time goes: each program's tracing, lowering and XLA compile seconds, and
whether JAX's persistent cache served the compile, read from JAX's monitoring events.

JAX reports these as events named by the jitted function (``jit_round``); popjax names the
part of the run that asked for them (``phase``: the memory plan, the run itself), so a
program compiled only to size the population shows apart from the one the run then calls.

    >>> with compile_log.recording() as log:
    ...     popjax.run(population=4, steps=100, interval=50, write=False)
    >>> log.summary()["round"]
    {'count': 1, 'trace_s': 0.41, 'lower_s': 0.12, 'compile_s': 2.3, 'cached': 0}
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field

TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"
LOWER_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"
STAGES = {TRACE_EVENT: "trace_s", LOWER_EVENT: "lower_s", COMPILE_EVENT: "compile_s"}


@dataclass
class CompileLog:
    """Every trace, lowering and compile seen while it records, in order: each a dict with
    ``phase``, ``program`` (the jitted function's name), ``stage`` ("trace_s", "lower_s",
    "compile_s"), ``seconds`` and, for a compile, ``cached`` (served by the persistent
    cache)."""

    events: list[dict] = field(default_factory=list)
    phase: str = ""

    def summary(self) -> dict[str, dict]:
        """Per program (prefixed by its phase where one was named): how many compiles, the
        seconds of each stage summed, and how many of the compiles the cache served."""
        programs: dict[str, dict] = {}
        for event in self.events:
            name = f"{event['phase']}/{event['program']}" if event["phase"] else event["program"]
            entry = programs.setdefault(
                name, {"count": 0, "trace_s": 0.0, "lower_s": 0.0, "compile_s": 0.0, "cached": 0}
            )
            entry[event["stage"]] = entry.get(event["stage"], 0.0) + event["seconds"]
            if event["stage"] == "compile_s":
                entry["count"] += 1
                entry["cached"] += int(event["cached"])
        for entry in programs.values():
            for stage in entry:
                if stage.endswith("_s"):
                    entry[stage] = round(entry[stage], 3)
        return programs

    def total(self, stage: str = "compile_s") -> float:
        """Seconds of one stage over every program."""
        return sum(e["seconds"] for e in self.events if e["stage"] == stage)


_state = threading.local()
_logs: list[CompileLog] = []
_registered = False


def _program(name) -> str:
    # Tracing names the function ("round_fn"), lowering and compiling its jit ("jit(round_fn)",
    # "jit_round_fn"): one name for all three.
    name = str(name)
    if name.startswith("jit(") and name.endswith(")"):
        return name[len("jit(") : -1]
    return name[len("jit_") :] if name.startswith("jit_") else name


def _on_duration(event: str, seconds: float, **kwargs) -> None:
    stage = STAGES.get(event)
    if stage is None or not _logs:
        return
    cached = False
    if stage == "compile_s":
        cached, _state.hit = getattr(_state, "hit", False), False
    for log in _logs:
        log.events.append(
            {
                "phase": log.phase,
                "program": _program(kwargs.get("fun_name", "?")),
                "stage": stage,
                "seconds": seconds,
                "cached": cached,
            }
        )


def _on_event(event: str, **kwargs) -> None:
    # The cache reports a hit inside the compile that it served, before that compile's
    # duration arrives on the same thread: the next compile duration is the one it served.
    if event == CACHE_HIT_EVENT:
        _state.hit = True


def _register() -> None:
    global _registered
    if _registered:
        return
    from jax import monitoring

    monitoring.register_event_duration_secs_listener(_on_duration)
    monitoring.register_event_listener(_on_event)
    _registered = True


@contextlib.contextmanager
def recording():
    """Records every compile in this process while the block runs; yields the ``CompileLog``.
    Listening costs nothing measurable: a few Python calls per compile."""
    _register()
    log = CompileLog()
    _logs.append(log)
    try:
        yield log
    finally:
        _logs.remove(log)


@contextlib.contextmanager
def phase(name: str):
    """Names the part of the run whose compiles follow (``"memory_plan"``), for every log
    recording; the run's own programs are logged with no phase."""
    saved = [(log, log.phase) for log in _logs]
    for log in _logs:
        log.phase = name
    started = time.perf_counter()
    try:
        yield
    finally:
        for log, previous in saved:
            log.phase = previous
            log.events.append(
                {
                    "phase": previous,
                    "program": name,
                    "stage": "wall_s",
                    "seconds": time.perf_counter() - started,
                    "cached": False,
                }
            )
