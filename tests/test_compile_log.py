"""Compile times read from JAX's monitoring events: each jitted program's compiles, named by
its function, with the persistent cache's hits attributed to the compile they served."""

import jax
import jax.numpy as jnp

from popjax import compile_log


def test_each_program_compiled_is_logged_once_by_name_under_its_phase():
    def double(x):
        # Many operations, so that tracing takes well over the millisecond the log rounds to.
        for _ in range(200):
            x = x * 2.0 - x
        return 2 * x

    def halve(x):
        return x / 2

    with compile_log.recording() as log:
        jax.jit(double)(jnp.arange(3.0))
        jax.jit(double)(jnp.arange(3.0))  # a new jit of the same function: in memory already
        with compile_log.phase("planning"):
            jax.jit(halve).lower(jnp.arange(5.0)).compile()
    summary = log.summary()
    assert summary["double"]["count"] == 1 and summary["planning/halve"]["count"] == 1
    assert summary["double"]["compile_s"] > 0 and summary["double"]["trace_s"] > 0
    assert summary["planning"]["wall_s"] >= summary["planning/halve"]["compile_s"]
    assert "halve" not in summary
    with compile_log.recording() as after:
        jax.jit(double)(jnp.arange(3.0))
    assert after.summary() == {}  # nothing compiled; the first log no longer records
    assert summary == log.summary()


def test_a_cache_hit_marks_the_compile_it_served_and_no_other():
    with compile_log.recording() as log:
        compile_log._on_event(compile_log.CACHE_HIT_EVENT)
        compile_log._on_duration(compile_log.COMPILE_EVENT, 0.5, fun_name="jit_round_fn")
        compile_log._on_duration(compile_log.COMPILE_EVENT, 2.0, fun_name="jit(round_fn)")
    assert log.summary()["round_fn"] == {
        "count": 2,
        "trace_s": 0.0,
        "lower_s": 0.0,
        "compile_s": 2.5,
        "cached": 1,
    }
