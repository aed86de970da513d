"""A sweep's configuration: defaults, TOML reading and writing, and validation.

Every check here runs before anything is trained or written, so bad input costs nothing.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from popjax.errors import PopjaxError, unknown_name_error
from popjax.nn import MODELS
from popjax.pbt import EXPLOIT_METHODS, PBTConfig
from popjax.space import SearchSpace

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

METRICS = ("accuracy", "loss")
DATA_KEYS = ("name", "path", "val_fraction")


class ConfigError(PopjaxError):
    """A config that cannot run; the message says what to change."""


@dataclass
class SweepConfig:
    """Everything a sweep needs. The defaults are the built-in run: 32 MLPs on MNIST-1D.

    Attributes:
      name: names the run folder, ``runs/<name>-<timestamp>``; ``<data>-<model>`` if empty.
      population: members trained together.
      steps: SGD steps per member in the whole run.
      epochs: the run's length in passes over the training split instead (0: use ``steps``);
        rounded to whole rounds once the data is known.
      interval: steps between PBT rounds; ``steps`` must be a multiple of it.
      batch_size: examples per member per step.
      metric: what PBT selects on, on the validation split: "accuracy" or "loss".
      checkpoint_every: rounds between checkpoints (one is always taken at the end).
      keep_checkpoints: how many of the newest checkpoints to keep.
      data: ``{"name": "mnist1d" | "digits" | "npz", "path": ..., "val_fraction": 0.1}``.
      model: ``{"name": "mlp" | "cnn", **fields of that flax module}``.
      loss: "cross_entropy" or "squared_error" (to one-hot targets).
      pbt: exploit and explore settings.
      space: the priors of every hyperparameter.
      groups: sub-populations that differ in model, loss or optimizer family (see
        ``popjax.groups``); ``population`` is then their sum.
    """

    name: str = ""
    seed: int = 0
    population: int = 32
    steps: int = 6000
    epochs: float = 0.0
    interval: int = 250
    batch_size: int = 128
    metric: str = "accuracy"
    checkpoint_every: int = 4
    keep_checkpoints: int = 3
    data: dict = field(default_factory=lambda: {"name": "mnist1d", "val_fraction": 0.1})
    model: dict = field(default_factory=lambda: {"name": "mlp", "hidden": [256, 256]})
    loss: str = "cross_entropy"
    pbt: PBTConfig = field(default_factory=PBTConfig)
    space: SearchSpace = field(default_factory=SearchSpace)
    groups: list = field(default_factory=list)

    @property
    def rounds(self) -> int:
        return self.steps // self.interval

    def replace(self, **changes) -> "SweepConfig":
        """A copy with some fields changed; ``None`` values are ignored (unset CLI flags)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        for key in changes:
            if key not in _FIELDS:
                raise ConfigError(unknown_name_error("config key", key, _FIELDS))
        return dataclasses.replace(self, **changes)

    def validate(self) -> "SweepConfig":
        """Checks every field; returns the config with its name filled in."""
        for key in ("seed", *_COUNTS):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"{key} must be a whole number (got {value!r})")
        for key in _COUNTS:
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be at least 1 (got {getattr(self, key)})")
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
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, (int, float)) \
                or self.epochs < 0:
            raise ConfigError(f"epochs must be a number >= 0 (got {self.epochs!r}); 0 uses steps")
        if self.metric not in METRICS:
            raise ConfigError(unknown_name_error("metric", self.metric, METRICS))
        _check_pbt(self.pbt)
        _check_data(self.data)
        config = self
        if self.groups:
            from popjax.groups import resolve_groups

            groups = resolve_groups(self)
            config = dataclasses.replace(self, population=sum(g.config.population
                                                              for g in groups))
            for group in groups:
                _check_model(group.config.model)
                _check_loss(group.config.loss)
        else:
            _check_model(self.model)
            _check_loss(self.loss)
        if not config.name:
            return dataclasses.replace(config,
                                       name=f"{self.data['name']}-{self.model['name']}")
        return config

    def with_budget(self, num_train: int) -> "SweepConfig":
        """Turns an ``epochs`` budget into whole rounds of steps for ``num_train`` examples."""
        if not self.epochs:
            return self
        rounds = max(1, round(self.epochs * num_train / (self.batch_size * self.interval)))
        return dataclasses.replace(self, steps=rounds * self.interval)

    def to_dict(self) -> dict[str, Any]:
        plain = {f: getattr(self, f) for f in _FIELDS if f not in ("pbt", "space")}
        pbt = dataclasses.asdict(self.pbt)
        pbt["perturb_factors"] = list(pbt["perturb_factors"])
        return {**plain, "pbt": pbt, "space": self.space.to_dict()}

    @classmethod
    def from_dict(cls, table: dict[str, Any]) -> "SweepConfig":
        table = dict(table)
        for key in table:
            if key not in _FIELDS:
                raise ConfigError(unknown_name_error("config key", key, _FIELDS))
        if "pbt" in table:
            table["pbt"] = _pbt_from_dict(table["pbt"])
        if "space" in table:
            table["space"] = SearchSpace.from_dict(table["space"])
        defaults = cls()
        for key in ("data", "model"):
            if key in table:
                if not isinstance(table[key], dict):
                    raise ConfigError(f"[{key}] must be a table")
                base = getattr(defaults, key)
                # A different model or dataset starts from its own defaults, not the MLP's.
                if table[key].get("name", base["name"]) != base["name"]:
                    base = {}
                table[key] = {**base, **table[key]}
        return dataclasses.replace(defaults, **table)

    @classmethod
    def from_toml(cls, path) -> "SweepConfig":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist: give the path of a .toml file")
        try:
            table = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path} is not valid TOML: {error}") from None
        return cls.from_dict(table)

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.to_dict())


_FIELDS = tuple(f.name for f in dataclasses.fields(SweepConfig))
# Whole numbers that must be at least 1.
_COUNTS = ("population", "steps", "interval", "batch_size", "checkpoint_every",
           "keep_checkpoints")


def _pbt_from_dict(table) -> PBTConfig:
    if not isinstance(table, dict):
        raise ConfigError("[pbt] must be a table")
    known = tuple(f.name for f in dataclasses.fields(PBTConfig))
    for key in table:
        if key not in known:
            raise ConfigError(unknown_name_error("pbt key", key, known))
    table = dict(table)
    if "perturb_factors" in table:
        table["perturb_factors"] = tuple(float(f) for f in table["perturb_factors"])
    return PBTConfig(**table)


def _check_pbt(pbt: PBTConfig) -> None:
    if pbt.exploit not in EXPLOIT_METHODS:
        raise ConfigError(unknown_name_error("exploit method", pbt.exploit, EXPLOIT_METHODS))
    if not 0.0 < pbt.fraction <= 0.5:
        raise ConfigError(f"pbt.fraction must be in (0, 0.5] (got {pbt.fraction})")
    if not 0.0 <= pbt.resample_probability <= 1.0:
        raise ConfigError(
            f"pbt.resample_probability must be in [0, 1] (got {pbt.resample_probability})"
        )
    if not pbt.perturb_factors or min(pbt.perturb_factors) <= 0:
        raise ConfigError(f"pbt.perturb_factors must be positive (got {pbt.perturb_factors})")


# Weights stay float32 whatever the compute dtype: the optimizer updates float32 masters.
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


def _check_model(model: dict) -> None:
    name = model.get("name")
    if name not in MODELS:
        raise ConfigError(unknown_name_error("model", str(name), tuple(MODELS)))
    module_fields = [f.name for f in dataclasses.fields(MODELS[name])
                     if f.name not in ("parent", "name", "num_classes")]
    for key in model:
        if key != "name" and key not in module_fields:
            raise ConfigError(unknown_name_error(f"{name} model field", key, module_fields))
    if model.get("dtype", "float32") not in COMPUTE_DTYPES:
        raise ConfigError(unknown_name_error("model dtype", str(model["dtype"]), COMPUTE_DTYPES))


def _check_loss(loss: str) -> None:
    from popjax.train import LOSSES

    if loss not in LOSSES:
        raise ConfigError(unknown_name_error("loss", str(loss), tuple(LOSSES)))


def _check_data(data: dict) -> None:
    for key in data:
        if key not in DATA_KEYS:
            raise ConfigError(unknown_name_error("data key", key, DATA_KEYS))
