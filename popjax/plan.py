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
from popjax.config import MAX_COUNT, PYTHON_TASK, ConfigError, SweepConfig
from popjax.errors import PopjaxError, shown, unknown_name_error
from popjax.groups import Group, resolve_groups
from popjax.settings import factory_settings
from popjax.space import SearchSpace, schedule_kinds
from popjax.task import Task, load_task, make_task

# Weights stay float32 whatever the compute dtype: the optimizer updates float32 masters.
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class GroupTask:
    """A group with the task its members run and the space their hyperparameters come from."""

    group: Group
    task: Task
    space: SearchSpace


@dataclass(frozen=True)
class Plan:
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
        groups = tuple(resolve_groups(config))
        if config.groups:
            config = dataclasses.replace(
                config, population=sum(g.config.population for g in groups)
            )
        if config.builtin_task:
            for group in groups:
                _check_model(group.config.model)
                if group.config.loss is not None:  # a regression's is the squared error
                    _check_loss(group.config.loss)
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
        group_tasks = [plan._builtin_task(g, data, model, loss_fn) for g in plan.groups]
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

    def _builtin_task(self, group: Group, data, model, loss_fn) -> GroupTask:
        from popjax.tasks import supervised

        config = group.config
        regression = config.task["name"] == "regression"
        if loss_fn is None:
            loss_fn = (
                supervised.mean_squared_error if regression else supervised.LOSSES[config.loss]
            )
        if loss_fn is not supervised.cross_entropy:
            needs = [n for n in supervised.PER_EXAMPLE_HPARAMS if n in config.space.priors]
            if needs:
                raise PopjaxError(
                    f"{', '.join(needs)} work with popjax's own cross-entropy "
                    'only: use loss = "cross_entropy" or remove them'
                )
        if model is None:
            model = build_model(config, data.num_classes)
        check_model_fits(model, data.x_train[: config.batch_size], data.num_classes, regression)
        common = dict(batch_size=config.batch_size, loss=loss_fn, optimizer=config.space.optimizer)
        if regression:
            task = supervised.regression(model, data, **common)
        else:
            task = supervised.classification(model, data, metric=config.metric, **common)
        return GroupTask(group, task, config.space)


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


def check_arguments(data, model, loss_fn) -> None:
    """What ``popjax.run`` was given for a built-in task, by type, before anything is built."""
    if data is not None and not isinstance(data, datasets.Dataset):
        raise PopjaxError(
            f"data= takes a popjax.Dataset, such as popjax.data.from_arrays(x, y, x_test, "
            f"y_test) (got a {type(data).__name__}); a config's data table goes in the config: "
            "SweepConfig(data={...})"
        )
    if model is not None and not (
        callable(getattr(model, "init", None))
        and callable(getattr(model, "apply", None))
        and not isinstance(model, type)
    ):
        raise PopjaxError(
            f"model= takes a flax linen module, such as popjax.nn.MLP(hidden=(64, 64)) (got a "
            f"{type(model).__name__}); a config's model table goes in the config: "
            "SweepConfig(model={...})"
        )
    if loss_fn is not None and not callable(loss_fn):
        raise PopjaxError(
            f"loss_fn= takes a function loss_fn(logits, labels) -> scalar (got a "
            f'{type(loss_fn).__name__}); a config names its loss with loss = "squared_error"'
        )


def check_one_member(task: Task, space: SearchSpace) -> None:
    """One member's functions traced with hyperparameters drawn from ``space``."""
    from popjax.task import check_task

    hparams = {name: value[0] for name, value in space.sample(jax.random.PRNGKey(0), 1).items()}
    check_task(task, hparams)


def build_model(config: SweepConfig, num_outputs: int):
    """The flax module a built-in task's config names."""
    from popjax.nn import MODELS

    fields = {k: v for k, v in config.model.items() if k != "name"}
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    return MODELS[config.model["name"]](num_classes=num_outputs, **fields)


def check_model_fits(model, sample_x, num_outputs: int, regression: bool = False) -> None:
    """Runs the model once on one batch: a shape mismatch becomes a one-line error."""
    import jax.numpy as jnp

    sample_x = jnp.asarray(sample_x)
    try:
        variables = jax.eval_shape(
            lambda k: model.init(k, sample_x, train=False), jax.random.PRNGKey(0)
        )
        outputs = jax.eval_shape(lambda v: model.apply(v, sample_x, train=False), variables)
    except Exception as error:  # flax raises many kinds on a shape mismatch
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
        raise PopjaxError(
            f"the model cannot take inputs of shape {tuple(sample_x.shape[1:])}: {first_line}"
        ) from None
    if regression and outputs.shape[-1] != num_outputs:
        raise PopjaxError(
            f"the model outputs {outputs.shape[-1]} values but a target has "
            f"{num_outputs}: give the model {num_outputs} outputs"
        )
    if not regression and outputs.shape[-1] < num_outputs:
        raise PopjaxError(
            f"the model outputs {outputs.shape[-1]} logits but the labels have {num_outputs} "
            "classes: give the model at least as many outputs"
        )


def _check_model(model: dict) -> None:
    from popjax.nn import MODELS

    name = model.get("name")
    if name not in MODELS:
        raise ConfigError(unknown_name_error("model", str(name), tuple(MODELS)))
    module_fields = [
        f.name
        for f in dataclasses.fields(MODELS[name])
        if f.name not in ("parent", "name", "num_classes")
    ]
    for key in model:
        if key != "name" and key not in module_fields:
            raise ConfigError(unknown_name_error(f"{name} model field", str(key), module_fields))
    dtype = model.get("dtype", "float32")
    if not isinstance(dtype, str) or dtype not in COMPUTE_DTYPES:
        raise ConfigError(unknown_name_error("model dtype", str(dtype), COMPUTE_DTYPES))
    defaults = {f.name: f.default for f in dataclasses.fields(MODELS[name])}
    for key, value in model.items():
        _check_model_field(name, key, value, defaults.get(key))


def _check_model_field(model: str, key: str, value, default) -> None:
    """A field of popjax's own models, by the type of its default: sizes are whole numbers."""

    def size(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_COUNT

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{model}.{key} must be true or false (got {shown(value)})")
    elif isinstance(default, int):
        if not size(value):
            raise ConfigError(f"{model}.{key} must be a whole number >= 1 (got {shown(value)})")
    elif isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or not all(map(size, value)):
            raise ConfigError(
                f"{model}.{key} must be a list of whole numbers >= 1, such as "
                f"{list(default)} (got {shown(value)})"
            )


def _check_loss(loss: str) -> None:
    from popjax.tasks.supervised import LOSSES

    if not isinstance(loss, str) or loss not in LOSSES:
        raise ConfigError(unknown_name_error("loss", str(loss), tuple(LOSSES)))
