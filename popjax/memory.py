"""How many members a device holds: XLA's memory analysis of the compiled round, per device,
against the memory one device may use, and whether the data fits beside it.

A round that would not fit runs its members in slices, one after another
(``popjax.train.in_slices``): the weights and optimizer state of every member stay on the
device, the activations and gradients of one slice at a time. ``population = "auto"`` picks the
largest population whose round fits whole, that is at full speed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import jax
import numpy as np

from popjax.amounts import format_bytes, parse_bytes
from popjax.errors import PopjaxError
from popjax.stream import Stream
from popjax.task import Task

# The members a device holds in the two rounds ``largest_population`` measures first.
MEASURED = (4, 8)

# XLA's plan leaves out the runtime's own buffers and fragmentation.
HEADROOM = 0.9


def device_budget(limit: str | int = "", devices=None) -> int:
    """Bytes one device may use: ``limit`` if given, else what the device reports (an
    accelerator's memory), else the machine's memory shared by its CPU devices."""
    if limit:
        return parse_bytes(limit)
    devices = devices if devices is not None else jax.local_devices()
    stats = devices[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"] * HEADROOM)
    machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(machine * HEADROOM / max(1, len(devices)))


def planning_options(platform: str) -> dict:
    """XLA options for a compile whose memory plan alone is read: on the CPU, LLVM's
    optimizations off. They come after XLA's buffer assignment, so the plan is the same (checked:
    the same bytes to the byte) and the compile takes about half the time."""
    return {"xla_backend_optimization_level": 0} if platform == "cpu" else {}


def compiled_bytes(compiled) -> int | None:
    """Bytes XLA plans for one device's share of a compiled call: arguments, outputs and
    temporaries, less the outputs written over donated arguments. None where the backend does
    not report it."""
    try:
        stats = compiled.memory_analysis()
        return int(
            stats.argument_size_in_bytes
            + stats.output_size_in_bytes
            + stats.temp_size_in_bytes
            - stats.alias_size_in_bytes
        )
    except Exception:  # backends without a memory analysis
        return None


def slice_counts(local_members: int) -> list[int]:
    """How many slices a device's members may run in: 1, then doubling, then one at a time."""
    counts, count = [], 1
    while count < local_members:
        if local_members % count == 0:
            counts.append(count)
        count *= 2
    return [*counts, local_members]


def choose_slices(
    bytes_with: Callable[[int], int | None], local_members: int, budget: int, population: int
) -> tuple[int, int | None]:
    """``(slices, bytes)``: the fewest slices whose round fits in ``budget`` per device.

    ``bytes_with(slices)`` compiles the round in that many slices and returns its bytes.
    """
    tried = []
    for slices in slice_counts(local_members):
        size = bytes_with(slices)
        if size is None or size <= budget:
            return slices, size
        tried.append(size)
    # Even one member at a time is too much: the state of every member alone does not fit.
    raise PopjaxError(
        f"population {population} needs {format_bytes(tried[-1])} per device even one member "
        f"at a time, more than the {format_bytes(budget)} a device may use: use fewer members "
        'or a smaller model (population = "auto" finds how many fit)'
    )


def largest_population(
    bytes_at: Callable[[int], int | None], num_devices: int, budget: int, threads: int = 2
) -> tuple[int, int]:
    """``(population, bytes a member)``: the most members whose whole round fits.

    ``bytes_at(population)`` compiles the round for that many members (a multiple of
    ``num_devices``) and returns its bytes per device. The footprint is measured at 4 and 8
    members a device and extrapolated; compiling around that guess then finds the exact
    answer in a few steps. Rounds needed together compile side by side, ``threads`` at a
    time (XLA compiles much of a program without Python's lock): the first two, then the
    guess and the size after it, usually the answer's bracket.
    """
    measured = {}

    def measure(*counts: int) -> None:
        missing = [n for n in dict.fromkeys(counts) if n >= 1 and n not in measured]
        if not missing:
            return
        with ThreadPoolExecutor(min(threads, len(missing))) as pool:
            sizes = pool.map(lambda local: bytes_at(local * num_devices), missing)
            measured.update(zip(missing, sizes))
        if None in measured.values():
            raise PopjaxError(
                "this backend reports no memory analysis, so popjax cannot size the "
                "population: give population as a number"
            )

    def fits(local: int) -> bool:
        measure(local)
        return measured[local] <= budget

    low_count, high_count = MEASURED
    measure(low_count, high_count)
    per_member = max(1.0, (measured[high_count] - measured[low_count]) / (high_count - low_count))
    fixed = measured[low_count] - low_count * per_member
    guess = max(1, int((budget - fixed) // per_member))
    measure(guess, guess + 1)
    # Gallop from the guess (usually one off at most) to a bracket: ``low`` fits, ``high``
    # does not; then halve it.
    low, high, step = (guess, None, 1) if fits(guess) else (None, guess, 1)
    while low is None or high is None:
        if high is None:
            low, high = (low + step, None) if fits(low + step) else (low, low + step)
        elif high - step < 1:
            if not fits(1):
                raise PopjaxError(
                    f"not one member a device fits in {format_bytes(budget)} (about "
                    f"{format_bytes(per_member)} a member): raise memory_limit or use a "
                    "smaller model"
                )
            low = 1
        else:
            low, high = (high - step, high) if fits(high - step) else (None, high - step)
        step *= 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low * num_devices, int(per_member)


def _bytes(tree) -> int:
    leaves = jax.tree_util.tree_leaves(tree)
    return sum(int(getattr(leaf, "nbytes", None) or np.asarray(leaf).nbytes) for leaf in leaves)


def prefetched_bytes(task: Task) -> int:
    """Bytes per device of the window prepared while a round trains on another (0 unless the
    task's training split is a ``Stream``): the one place the round's own plan misses."""
    train = task.data.train if task.data is not None else None
    return train.window_bytes() if isinstance(train, Stream) else 0


def check_data_fits(tasks: list[Task], budget: int) -> None:
    """Refuses, before anything is placed, data that cannot be on a device: a resident
    training split counts whole, a streamed one as the two windows it keeps there."""
    seen, total, resident_train = set(), 0, None
    for task in tasks:
        for split in task.data or ():
            if split is None or id(split) in seen:
                continue
            seen.add(id(split))
            if isinstance(split, Stream):
                total += 2 * split.window_bytes()
            else:
                total += _bytes(split)
        train = task.data.train if task.data is not None else None
        if train is not None and not isinstance(train, Stream):
            resident_train = train
    if total <= budget:
        return
    if resident_train is None:
        raise PopjaxError(
            f"the data takes {format_bytes(total)} on each device (two windows of the "
            f"training split, the validation and test splits), more than the "
            f"{format_bytes(budget)} a device may use: lower data.window or raise memory_limit"
        )
    train_bytes = _bytes(resident_train)
    count = max(
        1,
        max(
            (np.shape(a)[0] for a in jax.tree_util.tree_leaves(resident_train) if np.ndim(a)),
            default=1,
        ),
    )
    fits = (budget - (total - train_bytes)) // 4 // max(1, 2 * train_bytes // count)
    advice = (
        f"data.window = {fits} (examples), or window= in popjax.data.from_arrays"
        if fits > 0
        else "a popjax.stream.Stream for the training split"
    )
    raise PopjaxError(
        f"the data takes {format_bytes(total)} on each device, more than the "
        f"{format_bytes(budget)} a device may use (memory_limit): keep the training split on "
        f"the host and stream it with {advice}, or raise memory_limit"
    )
