"""Groups: sub-populations of one sweep that differ in what cannot be an array.

Width and depth, the optimizer family, the loss, batch normalization: each group has its own
compiled round, and PBT copies only within a group. A config declares them as

    [[groups]]
    name = "wide"
    population = 8
    model = {hidden = [512, 512]}

    [[groups]]
    name = "adam"
    population = 8
    loss = "squared_error"
    space = {optimizer = "adam"}

Each group starts from the sweep's own ``model``, ``loss`` and ``space`` and changes what it
names. Members are numbered through the groups in order.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from popjax.amounts import MAX_COUNT
from popjax.errors import PopjaxError, shown, unknown_name_error

if TYPE_CHECKING:
    from popjax.config import SweepConfig

GROUP_KEYS = ("name", "population", "model", "loss", "space")


@dataclass(frozen=True)
class Group:
    name: str
    config: SweepConfig  # the group's own: its population, model, loss, space
    offset: int  # the sweep index of its first member

    @property
    def members(self) -> range:
        return range(self.offset, self.offset + self.config.population)


def member_ranges(groups: list[Group]) -> dict[str, list[int]]:
    """``{name: [first member, end)}``, as results and the lineage report the groups."""
    return {g.name: [g.members.start, g.members.stop] for g in groups}


def resolve_groups(config) -> list[Group]:
    """The sweep's groups; a sweep without ``groups`` is one group of everyone. ``config`` is
    a plan's, its space resolved (``popjax.plan``): each group's space is that space updated.

    Raises:
      PopjaxError: a group that cannot run, with what to change.
    """
    if not config.groups:
        return [Group("all", config, 0)]
    if not isinstance(config.groups, list):
        raise PopjaxError("groups must be a list of tables ([[groups]] in TOML)")
    groups, offset = [], 0
    for index, table in enumerate(config.groups):
        if not isinstance(table, dict):
            raise PopjaxError(f"group {index}: expected a table like {{population = 8}}")
        for key in table:
            if key not in GROUP_KEYS:
                raise PopjaxError(
                    f"group {index}: " + unknown_name_error("group key", key, GROUP_KEYS)
                )
        name = str(table.get("name", f"group{index}"))
        if name in (g.name for g in groups):
            raise PopjaxError(f"two groups are named '{name}': give each its own name")
        size = table.get("population")
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_COUNT:
            raise PopjaxError(
                f"group '{name}' needs population = a whole number in 1..{MAX_COUNT} "
                f"(got {shown(size)})"
            )
        for key in ("model", "space"):
            if not isinstance(table.get(key, {}), dict):
                raise PopjaxError(
                    f"group '{name}': {key} must be a table like {{...}} (got {shown(table[key])})"
                )
        model = dict(table.get("model", {}))
        base = (
            config.model
            if model.get("name", config.model.get("name")) == config.model.get("name")
            else {}
        )
        group_config = dataclasses.replace(
            config,
            population=size,
            model={**base, **model},
            loss=table.get("loss", config.loss),
            space=config.space.updated(table.get("space", {})),
            groups=[],
        )
        groups.append(Group(name, group_config, offset))
        offset += size
    return groups
