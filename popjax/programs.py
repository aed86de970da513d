"""Each group's compiled program: its data placed on the devices once, its jitted init, round
and test, and the fit of its round in a device's memory (slices of members, ``population =
"auto"``) from XLA's memory plan.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax

from popjax import cache as caches
from popjax import memory
from popjax import mesh as meshes
from popjax.amounts import format_bytes
from popjax.distributed import is_main_process
from popjax.groups import Group
from popjax.plan import GroupTask, Plan
from popjax.population import init_population
from popjax.round import SelectionState, make_round
from popjax.task import Task
from popjax.train import make_evaluate


class ReplicatedArrays:
    """Host arrays replicated over the mesh, each once: groups built from one dataset share
    its arrays, so they share one copy on the devices."""

    def __init__(self, mesh):
        self.mesh, self.placed = mesh, {}

    def __call__(self, array):
        if id(array) not in self.placed:  # the tasks keep their arrays alive meanwhile
            self.placed[id(array)] = meshes.put_replicated(array, self.mesh)
        return self.placed[id(array)]


@dataclass
class GroupProgram:
    """One group's compiled pieces: init, the round, the test; and its data on the devices."""

    group: Group
    task: Task
    space: Any
    data: Any  # the task's TaskData, replicated over the mesh (None without data)
    init: Callable
    round_fn: Callable
    test: Callable
    slices: int = 1  # slices of members the round runs one after another
    round_bytes_planned: int | None = None  # XLA's plan of the round's memory per device

    @property
    def train_data(self):
        return self.data.train if self.data is not None else None

    def abstract_state(self, members):
        """The shapes, dtypes and sharding of ``(population, selection)``, nothing allocated."""
        return jax.tree_util.tree_map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=members),
            jax.eval_shape(self.init, self.train_data),
        )

    def lower_round(self, members) -> jax.stages.Lowered:
        """The round lowered for ``members``' shapes and sharding; nothing compiled yet."""
        return self.round_fn.lower(*self.abstract_state(members), 0, self.data)

    def round_bytes(self, members, lowered=None, planning=False) -> int | None:
        """XLA's plan of the round's memory on one device. Compiling it here costs nothing
        later: the first round's call finds the program compiled. ``planning`` compiles a
        program only to read its plan, more cheaply (``memory.planning_options``)."""
        lowered = lowered if lowered is not None else self.lower_round(members)
        if planning:
            options = memory.planning_options(members.mesh.devices.flat[0].platform)
            return memory.compiled_bytes(lowered.compile(compiler_options=options))
        return memory.compiled_bytes(lowered.compile())

    @classmethod
    def build(
        cls,
        group_task: GroupTask,
        index: int,
        init_key,
        pbt_key,
        members,
        place,
        num_groups: int,
        slices: int = 1,
    ) -> GroupProgram:
        group, task, space = group_task.group, group_task.task, group_task.space
        config = group.config
        if num_groups > 1:  # one group keeps the sweep's own keys
            init_key, pbt_key = (jax.random.fold_in(k, index) for k in (init_key, pbt_key))
        data = jax.tree_util.tree_map(place, task.data) if task.data is not None else None

        def init(train_data):
            population = init_population(init_key, task, space, config.population, train_data)
            return population, SelectionState.initial(
                config.population, space, config.pbt, config.rounds
            )

        shards = members.mesh.size
        evaluate = make_evaluate(task, slices, shards)

        def test(population, split):
            return evaluate(population, split, False)[1]

        return cls(
            group=group,
            task=task,
            space=space,
            data=data,
            init=jax.jit(init, out_shardings=members),
            round_fn=jax.jit(
                make_round(
                    task,
                    config.interval,
                    space,
                    config.pbt,
                    pbt_key,
                    slices,
                    members.mesh,
                    total_steps=config.steps,
                ),
                out_shardings=members,
                donate_argnums=(0, 1),
            ),
            test=jax.jit(test, out_shardings=members),
        )


def program_within_budget(
    group_task, index, keys, members, place, num_groups, budget
) -> GroupProgram:
    """The group's program in the fewest slices of members whose round fits in ``budget``
    bytes per device (one slice, the whole population at once, when it fits)."""
    built = {}

    def bytes_with(slices):
        built[slices] = GroupProgram.build(
            group_task, index, *keys, members, place, num_groups, slices
        )
        return built[slices].round_bytes(members)

    population = group_task.group.config.population
    slices, planned = memory.choose_slices(
        bytes_with, population // members.mesh.size, budget, population
    )
    return dataclasses.replace(built[slices], slices=slices, round_bytes_planned=planned)


def size_population(plan: Plan, group_task: GroupTask, members, place, budget):
    """The plan with ``population = "auto"`` replaced by the most members whose whole round
    fits in ``budget`` bytes per device; says what it chose."""

    def resized(size):
        config = dataclasses.replace(plan.config, population=size)
        return dataclasses.replace(
            plan,
            config=config,
            groups=tuple(dataclasses.replace(g, config=config) for g in plan.groups),
        )

    def task_of(sized: Plan) -> GroupTask:
        return dataclasses.replace(group_task, group=sized.groups[0])

    built = {}

    def program_at(size):
        if size not in built:  # sized with fixed keys: the choice must not depend on the seed
            key = jax.random.PRNGKey(0)
            built[size] = GroupProgram.build(task_of(resized(size)), 0, key, key, members, place, 1)
        return built[size]

    devices = list(members.mesh.devices.flat)
    first = memory.MEASURED[0] * len(devices)
    first_lowered = program_at(first).lower_round(members)

    def bytes_at(size):
        lowered = first_lowered if size == first else program_at(size).lower_round(members)
        return program_at(size).round_bytes(members, lowered, planning=True)

    def choose():
        size, per_member = memory.largest_population(bytes_at, len(devices), budget)
        return {"population": size, "per_member": per_member}

    # The same round (its program text), devices and budget choose the same size again.
    key = {
        "round": hashlib.sha256(first_lowered.as_text().encode()).hexdigest(),
        "budget": budget,
        "devices": [len(devices), devices[0].platform, devices[0].device_kind],
        "jax": jax.__version__,
    }
    choice, remembered = caches.cached_json("population", key, choose)
    size, per_member = choice["population"], choice["per_member"]
    if is_main_process():
        print(
            f"popjax: population auto: {size} members fit in {format_bytes(budget)} "
            f"per device at full speed (about {format_bytes(per_member)} a member)"
            + (", as measured before" if remembered else ""),
            file=sys.stderr,
        )
    sized = resized(size)
    return sized, [task_of(sized)]
