"""A sweep's configuration: defaults, TOML reading and writing, and validation.

Every check here runs before anything is trained or written, so bad input costs nothing.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from popjax.amounts import MAX_COUNT, MAX_SEED, is_number, is_whole, parse_bytes
from popjax.errors import ConfigError, PopjaxError, shown, unknown_name_error
from popjax.pbt_settings import PBTConfig, check_pbt, check_rounds, pbt_from_dict, pbt_to_dict
from popjax.settings import DEFAULT_MODEL, builtin_defaults, own_task_settings

# Where these were first defined: ``from popjax.config import ...`` keeps working.
__all__ = ["MAX_COUNT", "MAX_SEED", "ConfigError", "PBTConfig", "SweepConfig"]

DATA_KEYS = ("name", "path", "val_fraction", "window")
# The built-in tasks: what each selects on, and the dataset it trains on unless told otherwise.
TASK_METRICS = {"classification": ("accuracy", "loss"), "regression": ("loss",)}
TASK_DATA = {"classification": "mnist1d", "regression": "diabetes"}
# The task of a run given a ``popjax.Task`` from Python: resuming it needs the same object.
PYTHON_TASK = "custom"
# A run folder is named after the run: a name must be a plain folder name.
MAX_NAME_LENGTH = 200


@dataclass
class SweepConfig:
    """Everything a sweep needs. The defaults are the built-in run: 32 MLPs on MNIST-1D.

    Attributes:
      name: names the run folder, ``runs/<name>-<timestamp>``; ``<data>-<model>`` if empty.
      population: members trained together; "auto" for the most whose round fits in a
        device's memory at full speed (see ``popjax.memory``).
      steps: SGD steps per member in the whole run.
      epochs: the run's length in passes over the training split instead (None: use
        ``steps``); rounded to whole rounds once the data is known. Built-in tasks only.
      interval: steps between PBT rounds; ``steps`` must be a multiple of it.
      batch_size: examples per member per step (128 for a built-in task when None); a task of
        one's own takes it only if its factory has a ``batch_size`` parameter.
      metric: what PBT selects on, on the validation split: "accuracy" or "loss" for a
        classification ("accuracy" by default), "loss" for a regression; a task of one's own
        names its fitness itself.
      checkpoint_every: rounds between checkpoints (one is always taken at the end).
      keep_checkpoints: how many of the newest checkpoints to keep.
      memory_limit: the memory one device may use, e.g. "2GiB"; empty for what the device
        has. A population whose round needs more trains in slices of members.
      task: ``{"name": "classification" | "regression" | "package.module:factory", **fields}``;
        a task of one's own is built as ``factory(**fields, **settings)``, where settings are
        those of ``steps``, ``interval``, ``seed`` and ``batch_size`` that its signature names
        (see ``popjax.Task``).
      data: ``{"name": "mnist1d" | "digits" | "diabetes" | "npz" | "npy", "path": ...,
        "val_fraction": 0.1, "window": ...}``; MNIST-1D for a classification and diabetes for
        a regression by default. ``window`` (examples, or an amount such as "256MiB") keeps the
        training split on the host and streams it to the devices a window a round.
      model: ``{"name": "mlp" | "cnn", **fields of that flax module}``, or a model of one's
        own by import path, ``{"name": "package.module:Name", **its fields}`` (linen, nnx or
        equinox; see ``popjax.models``); the MLP 256-256 when empty.
      loss: "cross_entropy" (when None) or "squared_error" (to one-hot targets) for a
        classification; a regression trains on the squared error.
      pbt: exploit and explore settings.
      space: the priors of every hyperparameter: a ``[space]`` table, or a
        ``popjax.SearchSpace`` given from Python, kept as given; the plan resolves it into a
        ``SearchSpace`` once (``popjax.plan``).
      groups: sub-populations that differ in model, loss or optimizer family (see
        ``popjax.groups``); ``population`` is then their sum.
    """

    name: str = ""
    seed: int = 0
    population: int | str = 32
    steps: int = 6000
    epochs: float | None = None
    interval: int = 250
    batch_size: int | None = None
    metric: str = ""
    checkpoint_every: int = 4
    keep_checkpoints: int = 3
    memory_limit: str = ""
    task: dict = field(default_factory=lambda: {"name": "classification"})
    data: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    loss: str | None = None
    pbt: PBTConfig = field(default_factory=PBTConfig)
    space: Any = field(default_factory=dict)
    groups: list = field(default_factory=list)

    def __post_init__(self):
        if isinstance(self.task, str):  # as a config writes ``task = "regression"``
            self.task = {"name": self.task}
        # From Python, [pbt] may come as a table, as in a TOML config.
        if isinstance(self.pbt, dict):
            self.pbt = pbt_from_dict(self.pbt)

    @property
    def rounds(self) -> int:
        return self.steps // self.interval

    @property
    def auto_population(self) -> bool:
        return isinstance(self.population, str) and self.population == "auto"

    @property
    def builtin_task(self) -> bool:
        """Classification or regression, with popjax's own models and hyperparameters."""
        return self.task.get("name") in TASK_METRICS

    def replace(self, **changes) -> SweepConfig:
        """A copy with some fields changed; ``None`` values are ignored (unset CLI flags)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        if isinstance(changes.get("task"), str):
            changes["task"] = {"name": changes["task"]}
        for key in changes:
            if key not in _FIELDS:
                raise ConfigError(unknown_name_error("config key", key, _FIELDS))
        return dataclasses.replace(self, **changes)

    def validate(self) -> SweepConfig:
        """Checks every field; returns the config with its name filled in. The groups' tables
        are resolved, and ``population`` set to their sum, by the plan (``popjax.plan``)."""
        counts = [
            k
            for k in _COUNTS
            if not (k == "population" and self.auto_population)
            and not (k == "batch_size" and self.batch_size is None)
        ]
        for key in ("seed", *counts):
            value = getattr(self, key)
            if not is_whole(value):
                extra = ', or "auto"' if key == "population" else ""
                raise ConfigError(f"{key} must be a whole number{extra} (got {shown(value)})")
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"seed must be in 0..{MAX_SEED} (2**32 - 1) (got {self.seed})")
        for key in counts:
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be at least 1 (got {getattr(self, key)})")
            if getattr(self, key) > MAX_COUNT:
                raise ConfigError(
                    f"{key} must be at most {MAX_COUNT} (2**31 - 1) (got {getattr(self, key)})"
                )
        _check_name(self.name)
        if self.interval > self.steps:
            raise ConfigError(
                f"interval {self.interval} is longer than the run ({self.steps} steps): "
                f"set interval to at most {self.steps}"
            )
        if self.steps % self.interval:
            below = self.steps - self.steps % self.interval
            raise ConfigError(
                f"steps {self.steps} is not a multiple of interval {self.interval}: "
                f"use steps = {below} or {below + self.interval}"
            )
        if self.epochs is not None:
            if not is_number(self.epochs) or not 0 <= self.epochs < math.inf:
                raise ConfigError(f"epochs must be a finite number > 0 (got {shown(self.epochs)})")
            if self.epochs == 0:
                raise ConfigError("epochs = 0 trains nothing: remove epochs to use steps")
        if not isinstance(self.metric, str):
            raise ConfigError(f'metric must be a name such as "loss" (got {shown(self.metric)})')
        if not isinstance(self.memory_limit, (str, int)) or isinstance(self.memory_limit, bool):
            raise ConfigError(
                f'memory_limit must be an amount such as "2GiB" (got {shown(self.memory_limit)})'
            )
        if self.memory_limit:
            try:
                parse_bytes(self.memory_limit)
            except PopjaxError as error:
                raise ConfigError(str(error)) from None
        if self.auto_population and self.groups:
            raise ConfigError(
                'population "auto" sizes one population: give each group its own population'
            )
        for key in ("data", "model"):
            if not isinstance(getattr(self, key), dict):
                raise ConfigError(
                    f'{key} must be a table like {{name = "..."}} (got {shown(getattr(self, key))})'
                )
        if self.loss is not None and not isinstance(self.loss, str):
            raise ConfigError(
                f'loss must be a name such as "cross_entropy" (got {shown(self.loss)})'
            )
        # A SearchSpace, told by what it does: a config holds one without importing its class.
        if not isinstance(self.space, dict) and not callable(getattr(self.space, "updated", None)):
            raise ConfigError(
                f"space must be a SearchSpace or a [space] table (got {shown(self.space)})"
            )
        if not isinstance(self.groups, list):
            raise ConfigError(
                f"groups must be a list of tables ([[groups]] in TOML) (got {shown(self.groups)})"
            )
        config = self._with_task_defaults()
        check_pbt(self.pbt)
        if self.epochs is None:  # else the run's rounds are known once the data is
            check_rounds(self.pbt, self.rounds, self.interval)
        _check_data(config.data)
        if not config.name:
            name = (
                f"{config.data['name']}-{str(config.model['name']).rpartition(':')[2]}"
                if self.builtin_task
                else str(self.task["name"]).rpartition(":")[2]
            )
            return dataclasses.replace(config, name=name)
        return config

    def _with_task_defaults(self) -> SweepConfig:
        """The task checked, and its metric and dataset filled in where the config is silent."""
        task = self.task
        if not isinstance(task, dict) or not isinstance(task.get("name"), str):
            raise ConfigError(
                'task must be a name ("classification", "regression" or '
                '"package.module:factory") or a table with one'
            )
        name = task["name"]
        if name not in TASK_METRICS:
            if ":" not in name and name != PYTHON_TASK:
                raise ConfigError(
                    unknown_name_error("task", name, tuple(TASK_METRICS))
                    + ', or "package.module:factory" for your own'
                )
            return own_task_settings(self)
        if len(task) > 1:
            raise ConfigError(
                f"the {name} task takes no fields ({', '.join(sorted(task)[:3])}"
                "): set model, data and loss at the top level"
            )
        metric = self.metric or TASK_METRICS[name][0]
        if metric not in TASK_METRICS[name]:
            raise ConfigError(unknown_name_error(f"metric of a {name}", metric, TASK_METRICS[name]))
        data = {"val_fraction": 0.1, **self.data}
        data.setdefault("name", TASK_DATA[name])
        return builtin_defaults(dataclasses.replace(self, metric=metric, data=data))

    def with_budget(self, num_train: int) -> SweepConfig:
        """Turns an ``epochs`` budget into whole rounds of steps for ``num_train`` examples."""
        if self.epochs is None:
            return self
        rounds = max(1, round(self.epochs * num_train / (self.batch_size * self.interval)))
        if rounds * self.interval > MAX_COUNT:
            raise ConfigError(
                f"epochs {self.epochs:g} of {num_train} examples is {rounds * self.interval} "
                f"steps, more than {MAX_COUNT}: use fewer epochs"
            )
        check_rounds(self.pbt, rounds, self.interval)
        return dataclasses.replace(self, steps=rounds * self.interval)

    def check_batch_size(self, num_train: int) -> None:
        """A member's batch is drawn from the training split: it cannot be larger."""
        if self.batch_size > num_train:
            raise ConfigError(
                f"batch_size {self.batch_size} is more than the {num_train} examples of the "
                f"training split: set batch_size to at most {num_train}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The settings given or filled in; those left unset (None, empty) are left out, so a
        task of one's own records none of the built-in tasks' settings."""
        plain = {
            f: getattr(self, f)
            for f in _FIELDS
            if f not in ("pbt", "space") and getattr(self, f) not in (None, "", {}, [])
        }
        space = self.space if isinstance(self.space, dict) else self.space.to_dict()
        return {**plain, "pbt": pbt_to_dict(self.pbt), "space": space}

    @classmethod
    def from_dict(cls, table: dict[str, Any]) -> SweepConfig:
        table = dict(table)
        for key in table:
            if key not in _FIELDS:
                raise ConfigError(unknown_name_error("config key", key, _FIELDS))
        if "pbt" in table:
            table["pbt"] = pbt_from_dict(table["pbt"])
        if isinstance(table.get("task"), str):
            table["task"] = {"name": table["task"]}
        if "task" in table and not isinstance(table["task"], dict):
            raise ConfigError('task must be a name or a table like {name = "regression"}')
        for key in ("data", "model"):
            if key in table and not isinstance(table[key], dict):
                raise ConfigError(f"[{key}] must be a table")
        # A [model] table changes the default MLP's fields; another model starts from its own.
        model = table.get("model")
        if model and model.get("name", DEFAULT_MODEL["name"]) == DEFAULT_MODEL["name"]:
            table["model"] = {**DEFAULT_MODEL, **model}
        return dataclasses.replace(cls(), **table)

    @classmethod
    def from_toml(cls, path) -> SweepConfig:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist: give the path of a .toml file")
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path} is not valid TOML: {error}") from None
        except UnicodeDecodeError as error:
            raise ConfigError(
                f"{path} is not valid TOML: not UTF-8 text ({error.reason})"
            ) from None
        return cls.from_dict(table)

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.to_dict())


_FIELDS = tuple(f.name for f in dataclasses.fields(SweepConfig))
# Whole numbers that must be at least 1.
_COUNTS = ("population", "steps", "interval", "batch_size", "checkpoint_every", "keep_checkpoints")


def _check_data(data: dict) -> None:
    for key in data:
        if key not in DATA_KEYS:
            raise ConfigError(unknown_name_error("data key", str(key), DATA_KEYS))
    if not isinstance(data.get("name", ""), str):
        raise ConfigError(f"data.name must be a dataset's name (got {shown(data['name'])})")
    path = data.get("path")
    if path is not None and (not isinstance(path, str) or not path or "\0" in path):
        raise ConfigError(
            f"data.path must be the path of an .npz file or .npy folder (got {shown(path)})"
        )
    fraction = data.get("val_fraction", 0.1)
    if not is_number(fraction) or not 0.0 < fraction < 1.0:
        raise ConfigError(
            f"data.val_fraction must be a number between 0 and 1 (got {shown(fraction)})"
        )
    window = data.get("window")
    if window is not None and not (
        (is_whole(window) and window >= 1) or (isinstance(window, str) and _is_amount(window))
    ):
        raise ConfigError(
            "data.window must be a number of training examples >= 1 or an amount such as "
            f'"256MiB" (got {shown(window)})'
        )


def _is_amount(text: str) -> bool:
    try:
        return parse_bytes(text) > 0
    except PopjaxError:
        return False


def _check_name(name) -> None:
    if not isinstance(name, str):
        raise ConfigError(f"name must be text (got {shown(name)})")
    if (
        len(name) > MAX_NAME_LENGTH
        or name in (".", "..")
        or not all(c.isprintable() and c not in "/\\" for c in name)
    ):
        raise ConfigError(
            f"name names the run folder: use at most {MAX_NAME_LENGTH} printable characters "
            f"without / or \\ (got {shown(name)})"
        )
