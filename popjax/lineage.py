"""Who copied whom, when, and with which hyperparameters.

Round ``r`` trains steps ``[r * interval, (r + 1) * interval)``. At its start, PBT may replace
member ``m`` by a copy of ``parents[r][m]``; ``hparams[r][name][m]`` is the value member ``m``
then trains with for the whole round. Following parents backwards gives a member's ancestry and
so the hyperparameters its weights actually saw at every step. Successive halving may instead
begin a member again as a new trial (``restarts[r]`` lists those of round ``r``): its ancestry
starts there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Lineage:
    """Who copied whom in every round, and the hyperparameters each member trained with
    (see the module's docstring); ``SweepResult.lineage``, saved as ``lineage.json``.

    Example:
      >>> result.lineage.ancestry(result.best_member)  # whose weights it carried, round by round
    """

    interval: int
    parents: list[list[int]] = field(default_factory=list)
    hparams: list[dict[str, list[float]]] = field(default_factory=list)
    epochs: list[list[float]] = field(default_factory=list)  # passes over the data, per member
    groups: dict[str, list[int]] = field(default_factory=dict)  # name -> [first member, end)
    restarts: dict[int, list[int]] = field(default_factory=dict)  # round -> members restarted

    @property
    def rounds(self) -> int:
        return len(self.parents)

    def record(self, parents, hparams, epochs=None, restarted=None) -> None:
        """Adds one round: ``parents [P]``, a dict of ``[P]`` hyperparameter arrays, the
        epochs each member's weights have trained at the round's end, and which members
        began again as new trials at its start (``[P]`` bool, if any)."""
        if restarted is not None and any(restarted):
            self.restarts[len(self.parents)] = [m for m, r in enumerate(restarted) if r]
        self.parents.append([int(p) for p in np.asarray(parents)])
        # None: a hyperparameter this member's group does not have.
        self.hparams.append(
            {k: [None if x is None else float(x) for x in v] for k, v in hparams.items()}
        )
        if epochs is not None:
            self.epochs.append([float(x) for x in epochs])

    def ancestry(self, member: int) -> list[int]:
        """The member whose weights ``member`` carried in each round, oldest first, from the
        round its trial began (0 unless successive halving restarted it)."""
        slots = [int(member)]
        for round_index in range(self.rounds - 1, 0, -1):
            if slots[-1] in self.restarts.get(round_index, ()):
                break  # a new trial began here: nothing before it is in its weights
            slots.append(self.parents[round_index][slots[-1]])
        return slots[::-1]

    def first_round(self, member: int) -> int:
        """The round ``member``'s present trial began in."""
        return self.rounds - len(self.ancestry(member))

    def history(self, member: int) -> list[dict]:
        """One entry per round along ``member``'s ancestry: steps, carrier, hyperparameters."""
        return [
            {
                "round": r,
                "start_step": r * self.interval,
                "end_step": (r + 1) * self.interval,
                "member": slot,
                "copied_from": self.parents[r][slot] if self.parents[r][slot] != slot else None,
                "hparams": {k: v[slot] for k, v in self.hparams[r].items() if v[slot] is not None},
                **({"epochs": self.epochs[r][slot]} if r < len(self.epochs) else {}),
            }
            for r, slot in enumerate(self.ancestry(member), start=self.first_round(member))
        ]

    def to_dict(self) -> dict:
        return {
            "interval": self.interval,
            "parents": self.parents,
            "hparams": self.hparams,
            "epochs": self.epochs,
            "groups": self.groups,
            "restarts": {str(r): members for r, members in self.restarts.items()},
        }

    @classmethod
    def from_dict(cls, data: dict) -> Lineage:
        return cls(
            int(data["interval"]),
            data["parents"],
            data["hparams"],
            data.get("epochs", []),
            data.get("groups", {}),
            {int(r): members for r, members in data.get("restarts", {}).items()},
        )

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path) -> Lineage:
        return cls.from_dict(json.loads(Path(path).read_text()))
