"""Each group's compiled program: its data placed on the devices once, its jitted init, round
and test, and the fit of its round in a device's memory (slices of members, ``population =
"auto"``) from XLA's memory plan.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from popjax import cache as caches
from popjax import compile_log, memory
from popjax import mesh as meshes
from popjax.amounts import format_bytes
from popjax.distributed import is_main_process
from popjax.groups import Group
from popjax.pbt_settings import check_frequencies
from popjax.plan import GroupTask, Plan
from popjax.population import init_population
from popjax.round import SelectionState, make_round
from popjax.stream import Stream, WindowFeed
from popjax.task import Task, TaskData
from popjax.train import make_evaluate


class ReplicatedArrays:
    """Host arrays replicated over the mesh, each once: groups built from one dataset share
    its arrays, so they share one copy on the devices."""

    def __init__(self, mesh):
        self.mesh, self.placed, self.feeds = mesh, {}, {}

    def __call__(self, array):
        if id(array) not in self.placed:  # the tasks keep their arrays alive meanwhile
            self.placed[id(array)] = meshes.put_replicated(array, self.mesh)
        return self.placed[id(array)]

    def feed(self, stream: Stream) -> WindowFeed:
        """The one feed of ``stream``'s windows, shared by the groups that train on it."""
        if id(stream) not in self.feeds:

            def put(window):
                return jax.tree_util.tree_map(lambda a: meshes.put_replicated(a, self.mesh), window)

            self.feeds[id(stream)] = WindowFeed(stream, put)
        return self.feeds[id(stream)]

    def abstract(self, stream: Stream):
        """A window's shapes and dtypes, replicated over the mesh as the feed places it."""
        sharding = meshes.replicated(self.mesh)
        return jax.tree_util.tree_map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), stream.shapes()
        )


# Below this many elements in a population's first state, its init compiles with LLVM's
# optimizations off on the CPU: about a quarter of the compile (mostly the random initializers'
# threefry loops), for a run that takes some 0.1 s more per million elements, once.
ONCE_ELEMENTS = 1 << 23


def run_once_options(shapes, platform: str) -> dict:
    """XLA options for a program that runs once (a population's init): on the CPU, LLVM's
    optimizations off when its output is small enough that compiling costs more than running."""
    elements = sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(shapes))
    return memory.planning_options(platform) if elements <= ONCE_ELEMENTS else {}


class Keyed:
    """A jitted program whose last argument is a random key held here: the key reaches the
    program as an argument, not as a constant compiled into it, so a run with another seed
    finds the same program in the persistent cache."""

    def __init__(self, jitted, key):
        self.jitted, self.key = jitted, key

    def __call__(self, *args):
        return self.jitted(*args, self.key)

    def lower(self, *args) -> jax.stages.Lowered:
        return self.jitted.lower(*args, self.key)

    def eval_shape(self, *args):
        return jax.eval_shape(self.jitted, *args, self.key)

    def __getattr__(self, name):  # the jitted function's own (``_cache_size``, ...)
        return getattr(self.jitted, name)


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
    # A streamed training split's windows; ``data.train`` then holds a window's shapes only.
    feed: WindowFeed | None = None

    @property
    def train_data(self):
        """The training data ``init`` sees: a streamed split's first window."""
        return self.round_data(0).train if self.data is not None else None

    def round_data(self, round_index: int):
        """The data of round ``round_index``: a streamed split's window of that round."""
        if self.feed is None:
            return self.data
        return self.data._replace(train=self.feed.get(round_index))

    def prefetch(self, round_index: int) -> None:
        """Starts placing round ``round_index``'s window while the devices train."""
        if self.feed is not None:
            self.feed.prefetch(round_index)

    def abstract_state(self, members):
        """The shapes, dtypes and sharding of ``(population, selection)``, nothing allocated."""
        train = self.data.train if self.data is not None else None
        return jax.tree_util.tree_map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=members),
            self.init.eval_shape(train),
        )

    def compile_init(self) -> None:
        """Compiles ``init`` for the group's data; its first call then finds it compiled."""
        train = self.data.train if self.data is not None else None
        self.init.lower(train).compile()

    def compile_test(self, members) -> None:
        """Compiles ``test`` for the population and the test split (for a task without data,
        one more evaluation); the call at the sweep's end then finds it compiled."""
        if self.data is not None and self.data.test is None:
            return  # nothing to test on
        population = self.abstract_state(members)[0]
        self.test.lower(population, self.data.test if self.data is not None else None).compile()

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
        feed = None
        if task.data is not None and isinstance(task.data.train, Stream):
            feed = place.feed(task.data.train)
            data = TaskData(
                place.abstract(task.data.train),
                *(jax.tree_util.tree_map(place, split) for split in task.data[1:]),
            )
        else:
            data = jax.tree_util.tree_map(place, task.data) if task.data is not None else None

        def init(train_data, key):
            population = init_population(key, task, space, config.population, train_data)
            return population, SelectionState.initial(
                config.population, space, config.pbt, config.rounds
            )

        shards = members.mesh.size
        evaluate = make_evaluate(task, slices, shards)
        once = run_once_options(
            jax.eval_shape(init, data.train if data is not None else None, init_key),
            members.mesh.devices.flat[0].platform,
        )

        def test(population, split):
            return evaluate(population, split, False)[1]

        return cls(
            group=group,
            task=task,
            space=space,
            data=data,
            init=Keyed(jax.jit(init, out_shardings=members, compiler_options=once), init_key),
            round_fn=Keyed(
                jax.jit(
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
                pbt_key,
            ),
            test=jax.jit(test, out_shardings=members),
            feed=feed,
        )


def program_within_budget(
    group_task, index, keys, members, place, num_groups, budget, background=None
) -> GroupProgram:
    """The group's program in the fewest slices of members whose round fits in ``budget``
    bytes per device (one slice, the whole population at once, when it fits).

    With ``background`` (a ``concurrent.futures`` executor), the population's ``init``
    compiles there while the round compiles here: two programs at once where there are cores
    for both."""
    budget -= memory.prefetched_bytes(group_task.task)
    built = {}

    def bytes_with(slices):
        built[slices] = GroupProgram.build(
            group_task, index, *keys, members, place, num_groups, slices
        )
        if background is not None and len(built) == 1:
            background.submit(built[slices].compile_init)
        return built[slices].round_bytes(members)

    population = group_task.group.config.population
    slices, planned = memory.choose_slices(
        bytes_with, population // members.mesh.size, budget, population
    )
    # Every slicing has the same init: the first one built, which may be compiling already.
    first = next(iter(built.values()))
    return dataclasses.replace(
        built[slices], slices=slices, round_bytes_planned=planned, init=first.init
    )


def group_programs(
    group_tasks, keys, members, place, budget: int, population: int, with_init: bool = True
) -> list[GroupProgram]:
    """Every group's program within its share of ``budget`` (its members' share of the
    ``population``), the round compiled. ``with_init``: the population's init compiles too, in
    a second thread beside the rounds (XLA compiles much of a program without Python's lock).
    It returns once init has compiled too; a compile that failed there fails again, with its
    error, where init is called."""
    threads = ThreadPoolExecutor(1) if with_init else contextlib.nullcontext()
    with threads as background:
        return [
            program_within_budget(
                group_task,
                index,
                keys,
                members,
                place,
                len(group_tasks),
                budget * group_task.group.config.population // population,
                background,
            )
            for index, group_task in enumerate(group_tasks)
        ]


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

    budget -= memory.prefetched_bytes(group_task.task)

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


def compiled_programs(plan, data, model, loss_fn, task, devices, stages, with_init):
    """``(plan, programs, member sharding)``: the data loaded, the population sized where it
    is "auto" (the two resolution steps that need the data and the devices, see
    ``popjax.sweep.run_plan``), and every group's program compiled, ``init`` too
    ``with_init``; each step timed in ``stages`` (``popjax.startup.StartUp``)."""
    with stages.stage("data"):
        plan, group_tasks = plan.build(data=data, model=model, loss_fn=loss_fn, task=task)
    mesh = meshes.population_mesh(devices)
    members = meshes.member_sharding(mesh)
    keys = tuple(jax.random.split(jax.random.PRNGKey(plan.config.seed)))  # init's, PBT's
    place = ReplicatedArrays(mesh)
    budget = memory.device_budget(plan.config.memory_limit)  # this process's devices
    memory.check_data_fits([group_task.task for group_task in group_tasks], budget)
    if plan.config.auto_population:
        with compile_log.phase("memory_plan"), stages.stage("memory_plan"):
            plan, group_tasks = size_population(plan, group_tasks[0], members, place, budget)
        check_frequencies(plan.config.pbt, plan.config.population)
    for group_task in group_tasks:
        meshes.check_population_size(group_task.group.config.population, len(devices))
    with stages.stage("compile"):
        programs = group_programs(
            group_tasks, keys, members, place, budget, plan.config.population, with_init
        )
    return plan, programs, members
