"""Several hosts: starting ``jax.distributed`` before any device is touched.

Every process runs the same sweep on the same seed; together they see one global mesh, so the
population spreads over the devices of all hosts. Only process 0 writes the run folder.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax

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
