"""Search spaces: the priors of every per-member hyperparameter, and the schedule and optimizer
family of the built-in tasks. Which hyperparameters exist is ``popjax.hyperparameters``'s."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from popjax.errors import unknown_name_error
from popjax.hyperparameters import (
    ADAM_LEARNING_RATE,
    DEFAULT_PRIORS,
    NAMED_CHOICES,
    NEUTRAL_VALUES,
    OPTIMIZER_HPARAMS,
    SCHEDULE_HPARAMS,
)
from popjax.priors import (  # noqa: F401  (re-exported: the priors are part of a space)
    Choice,
    Fixed,
    LogUniform,
    Prior,
    SpaceError,
    Uniform,
    prior_from_dict,
    prior_to_dict,
)


class SearchSpace:
    """The priors of every tuned hyperparameter, in a fixed order, and the learning-rate schedule.

    Names missing from ``priors`` take popjax's defaults, so a space always covers every
    hyperparameter the training step reads. With a ``schedule`` other than "constant", the
    member's ``learning_rate`` is the schedule's peak and the schedule's own parameters
    (``SCHEDULE_HPARAMS``) are tuned per member like the rest.

    Example:
        >>> space = SearchSpace({"learning_rate": LogUniform(1e-3, 1e-1), "dropout": Fixed(0.0)})
        >>> hparams = space.sample(jax.random.key(0), 8)   # {"learning_rate": f32[8], ...}
        >>> SearchSpace({"warmup_steps": Uniform(0, 500)}, schedule="warmup_cosine")
    """

    def __init__(
        self,
        priors: Mapping[str, Prior] | None = None,
        schedule: str = "constant",
        optimizer: str = "sgd",
        *,
        builtin: bool = True,
    ):
        self.builtin = builtin
        self.given: dict[str, Prior] = dict(priors or {})  # as the user named them
        if not builtin:  # a task of one's own: exactly the priors given, any names
            self.schedule, self.optimizer = schedule, optimizer
            for name, prior in self.given.items():
                if not isinstance(name, str) or not name.isidentifier():
                    raise SpaceError(f"hyperparameter names must be identifiers (got {name!r})")
                if not isinstance(prior, (LogUniform, Uniform, Choice, Fixed)):
                    raise SpaceError(f"{name}: expected a prior, got {prior!r}")
                prior.validate(name)
            self.priors = dict(self.given)
            return
        if not isinstance(schedule, str) or schedule not in SCHEDULE_HPARAMS:
            raise SpaceError(unknown_name_error("schedule", str(schedule), tuple(SCHEDULE_HPARAMS)))
        if not isinstance(optimizer, str) or optimizer not in OPTIMIZER_HPARAMS:
            raise SpaceError(
                unknown_name_error("optimizer", str(optimizer), tuple(OPTIMIZER_HPARAMS))
            )
        self.schedule, self.optimizer = schedule, optimizer
        required = (
            "learning_rate",
            *OPTIMIZER_HPARAMS[optimizer],
            "dropout",
            "weight_decay",
            *SCHEDULE_HPARAMS[schedule],
        )
        known = (*required, *NEUTRAL_VALUES)
        priors = dict(priors or {})
        for name, prior in priors.items():
            if name not in known:
                _explain_unknown(name, known, schedule, optimizer)
            if not isinstance(prior, (LogUniform, Uniform, Choice, Fixed)):
                raise SpaceError(f"{name}: expected a prior, got {prior!r}")
            prior.validate(name)
            if name in NAMED_CHOICES and isinstance(prior, (Choice, Fixed)):
                _check_choice_indices(name, prior)
        defaults = {"learning_rate": ADAM_LEARNING_RATE} if optimizer == "adam" else {}
        self.priors: dict[str, Prior] = {
            **{
                name: priors.get(name, defaults.get(name, DEFAULT_PRIORS[name]))
                for name in required
            },
            **{name: prior for name, prior in priors.items() if name not in required},
        }

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.priors)

    def sample(self, key, size: int) -> dict[str, jax.Array]:
        """Draws ``size`` values of every hyperparameter: a dict of ``[size]`` float32 arrays."""
        keys = jax.random.split(key, len(self.priors))
        return {
            name: prior.sample(k, (size,)).astype(jnp.float32)
            for k, (name, prior) in zip(keys, self.priors.items())
        }

    def clip(self, hparams: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
        return {name: self.priors[name].clip(value) for name, value in hparams.items()}

    def to_dict(self) -> dict:
        """The space as plain data, the shape a TOML config writes it."""
        if not self.builtin:
            return {name: prior_to_dict(prior) for name, prior in self.priors.items()}
        statics = {
            key: value
            for key, value in (("schedule", self.schedule), ("optimizer", self.optimizer))
            if value != {"schedule": "constant", "optimizer": "sgd"}[key]
        }
        return {
            **statics,
            **{
                name: prior_to_dict(prior, NAMED_CHOICES.get(name, ()))
                for name, prior in self.priors.items()
            },
        }

    @classmethod
    def from_dict(cls, table: Mapping, builtin: bool = True) -> SearchSpace:
        if not isinstance(table, Mapping):
            raise SpaceError("[space] must be a table of priors")
        table = dict(table)
        if not builtin:
            return cls(
                {name: prior_from_dict(name, spec) for name, spec in table.items()},
                builtin=False,
            )
        schedule = table.pop("schedule", "constant")
        optimizer = table.pop("optimizer", "sgd")
        return cls(
            {name: _builtin_prior(name, spec) for name, spec in table.items()},
            schedule=schedule,
            optimizer=optimizer,
        )

    def updated(self, table: Mapping) -> SearchSpace:
        """This space with a config table's changes (a group's ``space``). Another optimizer or
        schedule drops the old one's own hyperparameters and default learning rate."""
        table = dict(table)
        if not self.builtin:
            return SearchSpace(
                {
                    **self.priors,
                    **{name: prior_from_dict(name, spec) for name, spec in table.items()},
                },
                builtin=False,
            )
        schedule = table.pop("schedule", self.schedule)
        optimizer = table.pop("optimizer", self.optimizer)
        dropped = set()
        if optimizer != self.optimizer:
            dropped |= set(OPTIMIZER_HPARAMS.get(self.optimizer, ()))
            old_default = (
                ADAM_LEARNING_RATE if self.optimizer == "adam" else DEFAULT_PRIORS["learning_rate"]
            )
            if self.priors["learning_rate"] == old_default:
                dropped.add("learning_rate")
        if schedule != self.schedule:
            dropped |= set(SCHEDULE_HPARAMS.get(self.schedule, ()))
        priors = {name: prior for name, prior in self.priors.items() if name not in dropped}
        priors.update({name: _builtin_prior(name, spec) for name, spec in table.items()})
        return SearchSpace(priors, schedule=schedule, optimizer=optimizer)

    def __repr__(self) -> str:
        if not self.builtin:
            return f"SearchSpace({self.priors!r}, builtin=False)"
        return (
            f"SearchSpace({self.priors!r}, schedule={self.schedule!r}, "
            f"optimizer={self.optimizer!r})"
        )


def _explain_unknown(name: str, known, schedule: str, optimizer: str):
    for kind, table, current in (
        ("schedule", SCHEDULE_HPARAMS, schedule),
        ("optimizer", OPTIMIZER_HPARAMS, optimizer),
    ):
        wanted = [k for k, names in table.items() if name in names]
        if wanted:
            raise SpaceError(
                f"{name} is a parameter of the {' or '.join(wanted)} {kind}, not "
                f"of '{current}': set {kind} = \"{wanted[0]}\" or remove {name}"
            )
    raise SpaceError(unknown_name_error("hyperparameter", name, known))


def _check_choice_indices(name: str, prior) -> None:
    options = NAMED_CHOICES[name]
    values = prior.values if isinstance(prior, Choice) else (prior.value,)
    for value in values:
        if value not in range(len(options)):
            raise SpaceError(f"{name}: choose among {', '.join(options)} (got {value:g})")


def _check_choice_indices(name: str, prior) -> None:
    options = NAMED_CHOICES[name]
    values = prior.values if isinstance(prior, Choice) else (prior.value,)
    for value in values:
        if value not in range(len(options)):
            raise SpaceError(f"{name}: choose among {', '.join(options)} (got {value:g})")


def _builtin_prior(name: str, spec) -> Prior:
    """A built-in hyperparameter's prior from a config's table; named choices by name."""
    return prior_from_dict(name, spec, NAMED_CHOICES.get(name, ()))
