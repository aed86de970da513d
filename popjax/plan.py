"""The plan: a config read, checked and resolved once (groups, task, space, budget), and each
group's task built from it. The sweep, the report, replay and export all read a plan.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jax

from popjax import data as datasets
from popjax.builtin_tasks import builtin_task, check_arguments, check_loss, check_model
from popjax.config import PYTHON_TASK, SweepConfig
from popjax.errors import PopjaxError
from popjax.groups import Group, resolve_groups
from popjax.pbt_settings import check_frequencies
from popjax.settings import factory_settings
from popjax.space import SearchSpace, schedule_kinds
from popjax.task import Task
from popjax.task_loading import load_task, make_task


@dataclass(frozen=True)
class GroupTask:
    """A group with the task its members run and the space their hyperparameters come from."""

    group: Group
    task: Task
    space: SearchSpace


@dataclass(frozen=True)
class Plan:
    """A config read, checked and resolved once: the validated config (the task's defaults
    filled in) and its groups. ``Plan.from_config`` makes one; the sweep, the report, replay
    and export read it."""

    config: SweepConfig  # validated, with the task's defaults filled in
    groups: tuple[Group, ...]

    @classmethod
    def from_config(cls, config: SweepConfig | str | Path | None = None, **overrides) -> Plan:
        """Reads (a path), applies ``overrides`` and checks everything that needs no data."""
        if config is None:
            config = SweepConfig()
        elif not isinstance(config, SweepConfig):
            config = SweepConfig.from_toml(config)
        config = config.replace(**overrides).validate()
        config = dataclasses.replace(config, space=resolve_space(config))
        groups = tuple(resolve_groups(config))
        for group in groups:  # MF-PBT splits each group's members into its sub-populations
            named = group.name if config.groups else ""
            check_frequencies(config.pbt, group.config.population, named)
        if config.groups:
            config = dataclasses.replace(
                config, population=sum(g.config.population for g in groups)
            )
        if config.builtin_task:
            for group in groups:
                check_model(group.config.model)
                if group.config.loss is not None:  # a regression's is the squared error
                    check_loss(group.config.loss)
        return cls(config, groups)

    @classmethod
    def from_run(cls, run_dir) -> Plan:
        """The plan of a run folder, from the config it wrote."""
        from popjax.runfolder import CONFIG

        run_dir = Path(run_dir)
        if not (run_dir / CONFIG).is_file():
            raise PopjaxError(
                f"{run_dir} is not a run folder (no {CONFIG}): give a folder that popjax run wrote"
            )
        return cls.from_config(run_dir / CONFIG)

    def group_of(self, member: int) -> Group:
        return next(g for g in self.groups if member in g.members)

    def member_ranges(self) -> dict[str, list[int]]:
        return {g.name: [g.members.start, g.members.stop] for g in self.groups}

    def load_data(self) -> datasets.Dataset:
        """The dataset a built-in task's config names, split as the config says."""
        data = self.config.data
        return datasets.load(
            data["name"],
            path=data.get("path"),
            val_fraction=data.get("val_fraction", 0.1),
            seed=self.config.seed,
            regression=self.config.task["name"] == "regression",
            window=data.get("window"),
        )

    def with_budget(self, num_train: int) -> Plan:
        """An ``epochs`` budget turned into whole rounds for ``num_train`` examples."""
        config = self.config.with_budget(num_train)
        if config is self.config:
            return self
        return dataclasses.replace(
            self,
            config=config,
            groups=tuple(
                dataclasses.replace(g, config=dataclasses.replace(g.config, steps=config.steps))
                for g in self.groups
            ),
        )

    def build(
        self,
        *,
        data: datasets.Dataset | None = None,
        model=None,
        loss_fn=None,
        task: Task | None = None,
    ) -> tuple[Plan, list[GroupTask]]:
        """Each group's task, checked on one member's shapes; the plan with its budget.

        Args:
          data, model, loss_fn: for the built-in tasks, what to use instead of the config's.
          task: a ``popjax.Task`` given from Python, or a function that returns one (given the
            run's settings that it names, as a config's factory), run instead of the config's.
        """
        if task is not None or not self.config.builtin_task:
            if data is not None or model is not None or loss_fn is not None:
                raise PopjaxError(
                    "data=, model= and loss_fn= are for the built-in tasks: a "
                    "task of your own brings its own"
                )
            if task is None and self.config.task["name"] == PYTHON_TASK:
                raise PopjaxError(
                    "this run's task was given from Python: pass the same task= to popjax.run"
                )
            group_tasks = [self._own_task(group, task) for group in self.groups]
            return self._with_task_space(group_tasks), group_tasks
        check_arguments(data, model, loss_fn)
        regression = self.config.task["name"] == "regression"
        data = self.load_data() if data is None else datasets.check_dataset(data, regression)
        plan = self.with_budget(len(data.x_train))
        if model is not None and len(plan.groups) > 1:
            raise PopjaxError(
                "a sweep with groups builds each group's model from its config: "
                "drop model= or the groups"
            )
        group_tasks = [
            GroupTask(g, builtin_task(g.config, data, model, loss_fn), g.config.space)
            for g in plan.groups
        ]
        # After the model's own check: inputs it cannot take say more than a batch size.
        plan.config.check_batch_size(len(data.x_train))
        return plan, group_tasks

    def _own_task(self, group: Group, task: Task | Callable | None) -> GroupTask:
        """A task of one's own, its factory given the run's settings that it names."""

        def settings(factory) -> dict:
            return factory_settings(factory, group.config)

        if task is None:
            fields = {k: v for k, v in self.config.task.items() if k != "name"}
            task = load_task(self.config.task["name"], fields, settings)
        elif callable(task) and not isinstance(task, Task):
            task = make_task(task, settings(task), f"task={getattr(task, '__name__', 'factory')}")
        elif isinstance(task, Task):
            settings(None)  # a Task takes no batch_size
        if not isinstance(task, Task):
            raise PopjaxError(
                f"task= takes a popjax.Task or a function that returns one, or a config's task "
                f'by name such as "regression" (got a {type(task).__name__})'
            )
        space = own_space(task, group.config.space)
        check_one_member(task, space)
        return GroupTask(group, task, space)

    def _with_task_space(self, group_tasks: list[GroupTask]) -> Plan:
        """This plan with the task's own priors in its spaces: the config a run folder keeps
        then names every hyperparameter its members had, with its prior (the report, a resume
        and a replay read them there)."""
        space = own_space(group_tasks[0].task, self.config.space)
        return dataclasses.replace(
            self,
            config=dataclasses.replace(self.config, space=space),
            groups=tuple(
                dataclasses.replace(
                    gt.group, config=dataclasses.replace(gt.group.config, space=gt.space)
                )
                for gt in group_tasks
            ),
        )


def resolve_space(config: SweepConfig) -> SearchSpace:
    """The config's space as a ``SearchSpace``: a ``[space]`` table read for the config's task
    (a built-in task's takes popjax's priors for the names it leaves out), one given from
    Python as it is."""
    space = config.space
    if not isinstance(space, SearchSpace):
        return SearchSpace.from_dict(space, builtin=config.builtin_task)
    if not config.builtin_task and space.builtin and space.optimizer == "sgd":
        # A space made for a built-in task (SearchSpace()'s default): only the priors and
        # schedules given are a task of one's own; the built-in defaults for the rest are not.
        return SearchSpace(space.given, schedule=space.schedules, builtin=False)
    return space


def own_space(task: Task, config_space: SearchSpace) -> SearchSpace:
    """A task's own space: its default priors and schedules (``Task.space`` may hold a
    ``"schedule"`` entry, as a config's ``[space]`` does), then the config's, name by name."""
    defaults = dict(task.space or {})
    kinds = schedule_kinds(defaults.pop("schedule", {}))
    space = SearchSpace(
        {**defaults, **config_space.given},
        schedule={**kinds, **config_space.schedules},
        builtin=False,
    )
    space.check()
    return space


def check_one_member(task: Task, space: SearchSpace) -> None:
    """One member's functions traced with hyperparameters drawn from ``space``."""
    from popjax.task import check_task

    hparams = {name: value[0] for name, value in space.sample(jax.random.PRNGKey(0), 1).items()}
    check_task(task, hparams)
