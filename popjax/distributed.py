"""Several hosts: starting ``jax.distributed`` before any device is touched, and bringing
per-member arrays to every host.

Every process runs the same sweep on the same seed; together they see one global mesh, so the
population spreads over the devices of all hosts. Process 0 writes the run folder's files; every
process writes its own shards of each checkpoint into it, so the folder must be on storage that
all hosts share.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np

from popjax.errors import PopjaxError


@dataclass(frozen=True)
class Distributed:
    """How to join a multi-process run.

    With no fields set, ``jax.distributed`` reads the environment that Cloud TPU, Slurm and
    Kubernetes (and the other clusters jax knows) set; otherwise all three are needed.
    """

    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None

    def check(self) -> None:
        given = [v is not None for v in (self.coordinator, self.num_processes, self.process_id)]
        if any(given) and not all(given):
            raise PopjaxError(
                "give all of --coordinator, --num-processes and --process-id, or none of them "
                "to read the cluster's environment"
            )
        if self.num_processes is not None and not 0 <= self.process_id < self.num_processes:
            raise PopjaxError(
                f"process id {self.process_id} is outside 0..{self.num_processes - 1}"
            )


def start(settings: Distributed) -> None:
    """Joins the other processes; a no-op when this process already has."""
    settings.check()
    if getattr(jax.distributed, "is_initialized", lambda: False)():
        return
    # CPU processes exchange arrays through gloo; accelerators use their own collectives.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            settings.coordinator, settings.num_processes, settings.process_id
        )
    except (ValueError, RuntimeError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
        raise PopjaxError(f"could not start the multi-process run: {message}") from None


def is_main_process() -> bool:
    return jax.process_index() == 0


# What every process must agree on. Each is a no-op with one process.


def main_process_value(value: int) -> int:
    """``value`` as the main process has it (a 32-bit integer), on every process."""
    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


def largest_on_any_process(value: int) -> int:
    """The largest of every process's ``value`` (a 32-bit integer), on every process."""
    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    return int(np.max(multihost_utils.process_allgather(np.int32(value))))


def barrier(name: str) -> None:
    """Waits until every process has reached the barrier of this ``name``."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def to_host(tree):
    """Brings per-member arrays to the host; across processes, every process gets all members."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    leaves, treedef = jax.tree_util.tree_flatten(tree)
    spread = [
        i
        for i, leaf in enumerate(leaves)
        if isinstance(leaf, jax.Array)
        and not leaf.is_fully_addressable
        and isinstance(leaf.sharding, jax.sharding.NamedSharding)
    ]
    # One program replicates every such leaf: one collective exchange a call, where gathering
    # leaf by leaf (process_allgather) exchanges once a leaf, a round's records a dozen times.
    if spread:
        everywhere = [leaves[i].sharding.update(spec=jax.sharding.PartitionSpec()) for i in spread]
        gathered = jax.jit(_identity, out_shardings=everywhere)([leaves[i] for i in spread])
        for i, leaf in zip(spread, gathered):
            leaves[i] = np.asarray(leaf.addressable_data(0))
    for i in sorted(set(range(len(leaves))) - set(spread)):
        # host values, and arrays on other shardings, as process_allgather has them
        leaves[i] = multihost_utils.process_allgather(leaves[i], tiled=True)
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _identity(tree):
    return tree
