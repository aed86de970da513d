"""Which of a config's settings a task uses: the built-in tasks' defaults, filled in where a
config is silent, and a task of one's own, which takes none of them but may take the run's.

A setting that the run's task would not use is refused, so that nothing given is ignored, and a
run folder's config.toml records only what the run used.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from popjax.errors import ConfigError

# Each function here takes a ``popjax.config.SweepConfig`` and reads its fields alone: the config
# imports this module, so this one does not import the config.

# The run's settings that a task of one's own receives, each when its factory's signature names
# it; a [task] field cannot repeat one.
RUN_SETTINGS = ("steps", "interval", "seed", "batch_size")
# The built-in tasks' own settings, filled in when a config is silent. A task of one's own has no
# use for them, so there they are refused; a factory's parameter of the same name (PPO's
# ``epochs``) is an ordinary [task] field.
DEFAULT_BATCH_SIZE = 128
DEFAULT_MODEL = {"name": "mlp", "hidden": [256, 256]}
DEFAULT_LOSS = "cross_entropy"


def builtin_defaults(config):
    """A classification's or regression's model, loss and batch size where the config is
    silent; a loss that a regression would not train on is refused."""
    model = config.model or dict(DEFAULT_MODEL)
    if not isinstance(model.get("name"), str):
        raise ConfigError(
            f'model needs a name, "mlp", "cnn" or "package.module:Name" (got {model})'
        )
    loss = config.loss
    if config.task["name"] == "regression":
        losses = [loss] + [g.get("loss") for g in config.groups if isinstance(g, dict)]
        if any(given not in (None, "squared_error") for given in losses):
            raise ConfigError(
                'a regression trains on the squared error: remove loss (or give "squared_error")'
            )
    elif loss is None:
        loss = DEFAULT_LOSS
    batch_size = DEFAULT_BATCH_SIZE if config.batch_size is None else config.batch_size
    return dataclasses.replace(config, model=model, loss=loss, batch_size=batch_size)


def own_task_settings(config):
    """The config of a task of one's own, which brings its model, loss, data and fitness and
    counts its length in steps: those settings given for it would do nothing, so they are
    refused. Its [task] fields cannot repeat the run's settings, which its factory receives."""
    name = config.task["name"]
    for key in RUN_SETTINGS:
        if key in config.task:
            raise ConfigError(f"[task] {key}: set {key} at the top level; the factory receives it")
    if config.metric:
        raise ConfigError(f"task {name} names its own fitness: remove metric")
    if config.epochs is not None:
        raise ConfigError(
            f"epochs counts passes over a built-in task's data: remove epochs and set steps "
            f"for task {name}"
        )
    given = [key for key in ("model", "loss", "data") if getattr(config, key)]
    for index, group in enumerate(config.groups):
        if isinstance(group, dict):
            label = group.get("name", f"group{index}")
            given += [f"the {key} of group {label}" for key in ("model", "loss") if key in group]
    if given:
        raise ConfigError(
            f"task {name} brings its own model, loss and data: remove {given[0]} (a field of "
            "its factory goes in [task])"
        )
    return config


def factory_settings(factory, config) -> dict[str, Any]:
    """The run's settings that ``factory``'s signature names (by name: ``**kwargs`` receives
    none). A ``batch_size`` given to a task that does not take it would change nothing, so it
    is refused; one that the factory needs and the config lacks is asked for."""
    try:
        parameters = dict(inspect.signature(factory).parameters)
    except (TypeError, ValueError):  # a Task, or a function without a signature to read
        parameters = {}
    named = {
        name: parameter
        for name, parameter in parameters.items()
        if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
    }
    settings = {key: getattr(config, key) for key in RUN_SETTINGS if key in named}
    name = config.task["name"]
    if config.batch_size is not None and "batch_size" not in named:
        raise ConfigError(
            f"batch_size {config.batch_size} would change nothing: task {name} takes no "
            "batch_size (a factory takes it as a parameter named batch_size): remove batch_size"
        )
    if config.batch_size is None and "batch_size" in named:
        del settings["batch_size"]
        if named["batch_size"].default is inspect.Parameter.empty:
            raise ConfigError(f"task {name} needs batch_size: set batch_size at the top level")
    return settings
