"""CPU device setup: how many JAX devices the CPU shows, decided before JAX starts.

On an accelerator the devices are the chips; on a CPU JAX shows one device unless told
otherwise. This is the one place that reads the environment and sets JAX's configuration for
it; the mesh (``popjax.mesh``) then spreads the members over whatever devices JAX shows.
"""

from __future__ import annotations

import math
import os

import jax


def cpu_cores() -> int:
    """The CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def use_cpu_cores(population: int | None = None) -> int | None:
    """Makes JAX show one CPU device per core, so members spread over cores as over chips.

    XLA runs one CPU device's small ops on one thread; a population sharded over one device per
    core keeps every core busy. Uses ``gcd(cores, population)`` devices, so that they divide the
    population. Must run before JAX's first operation; does nothing (returns None) if JAX has
    started or the user already chose a device count (``JAX_NUM_CPU_DEVICES`` or ``XLA_FLAGS``).
    Accelerators are unaffected: only the CPU backend's device count changes.
    """
    if "JAX_NUM_CPU_DEVICES" in os.environ or "device_count" in os.environ.get("XLA_FLAGS", ""):
        return None
    count = math.gcd(cpu_cores(), population) if population else cpu_cores()
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:  # JAX already started: keep its devices
        return None
    return count


def device_divisor(plan) -> int | None:
    """What the CPU's device count must divide: the population, or with groups the greatest
    common divisor of theirs; None for ``population = "auto"``, sized to a multiple of them."""
    if plan.config.auto_population:
        return None
    return math.gcd(*(g.config.population for g in plan.groups))
