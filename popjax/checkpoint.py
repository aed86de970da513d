"""Checkpoints of a whole sweep with orbax: population, fitness, lineage and metrics history.

A checkpoint is taken after a round and named by the number of rounds done. Everything a round
needs to continue is in it: the population (weights, optimizer state, hyperparameters, each
member's key stream, which is also its data order) and the last fitness; PBT's key for a round
is derived from the seed and the round index. So a resumed sweep computes exactly what the
uninterrupted one would have.

Saving is asynchronous: ``save`` returns once the arrays are copied off the device, and the
files are written while the next round trains. A checkpoint becomes visible only once it is
whole (orbax writes it under a temporary name first), so a kill loses at most the rounds since
the last finished one. ``close`` waits for a pending save. With several processes, each writes
the shards of its own devices.
"""

from __future__ import annotations

import importlib
import json
import warnings
from pathlib import Path

from popjax.errors import PopjaxError

DIRNAME = "checkpoints"


class SweepCheckpoints:
    """The checkpoints of one run folder; keeps the last ``keep``."""

    def __init__(self, run_dir, keep: int = 3, asynchronous: bool = True):
        self.directory = (Path(run_dir) / DIRNAME).absolute()
        # orbax takes about a second to import: it loads at the first save (or restore),
        # after the first round, not before it.
        self.keep, self.asynchronous, self._manager = keep, asynchronous, None

    @property
    def manager(self):
        if self._manager is None:
            ocp = _import_orbax()
            options = ocp.CheckpointManagerOptions(
                max_to_keep=self.keep,
                create=True,
                enable_async_checkpointing=self.asynchronous,
            )
            self._manager = ocp.CheckpointManager(self.directory, options=options)
        return self._manager

    def save(self, rounds_done: int, state, meta: dict) -> None:
        """Saves ``state`` (a pytree of arrays) and ``meta`` (plain JSON data); returns before
        the files are written. The sweep may go on changing (or donating) ``state`` and
        ``meta``: both are copied first."""
        meta = json.loads(json.dumps(meta))
        ocp = _import_orbax()
        self.manager.save(
            rounds_done,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )

    def wait(self) -> None:
        """Returns once every save started is written."""
        if self._manager is not None:
            self._manager.wait_until_finished()

    def rounds_saved(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def restore_latest(self, abstract_state):
        """``(rounds_done, state, meta)`` from the newest checkpoint that reads back whole.

        ``abstract_state`` gives shapes, dtypes and shardings: sharded arrays come back sharded.
        A damaged checkpoint is skipped with a warning for the one before it.
        """
        saved = self.rounds_saved()
        damaged = []
        ocp = _import_orbax()
        for rounds_done in reversed(saved):
            try:
                restored = self.manager.restore(
                    rounds_done,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
                    ),
                )
            except Exception as error:  # orbax and tensorstore raise many kinds on bad files
                reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
                warnings.warn(
                    f"checkpoint after round {rounds_done} is damaged ({reason}); "
                    "falling back to the one before",
                    stacklevel=2,
                )
                damaged.append(rounds_done)
                continue
            # The resumed sweep writes these rounds again.
            for rounds in damaged:
                self.manager.delete(rounds)
            return rounds_done, restored["state"], restored["meta"]
        if saved:
            raise PopjaxError(f"every checkpoint in {self.directory} is damaged: start a new run")
        raise PopjaxError(
            f"{self.directory.parent} has no checkpoint to resume from: start a new run"
        )

    def close(self) -> None:
        """Waits for a pending save, then lets go of the folder."""
        if self._manager is not None:
            self._manager.wait_until_finished()
            self._manager.close()


def _import_orbax():
    return importlib.import_module("orbax.checkpoint")
