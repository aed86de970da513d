"""Search spaces: the priors of every per-member hyperparameter, and the schedule and optimizer
family of the built-in tasks. Which hyperparameters exist is ``popjax.hyperparameters``'s."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from popjax.errors import PopjaxError, shown, unknown_name_error
from popjax.hyperparameters import (
    DEFAULT_PRIORS,
    NAMED_CHOICES,
    NEUTRAL_VALUES,
    OPTIMIZER_HPARAMS,
    learning_rate_prior,
)
from popjax.optim import resolve_family
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
from popjax.schedules import KINDS, schedule_parameters


class SearchSpace:
    """The priors of every tuned hyperparameter, in a fixed order, and their schedules.

    For the built-in tasks (``builtin=True``), names missing from ``priors`` take popjax's
    defaults, so a space always covers every hyperparameter the training step reads. A task of
    one's own (``builtin=False``) has exactly the priors given, under any names.

    ``schedule`` gives hyperparameters a schedule over the run: a kind for the learning rate
    ("warmup_cosine"), or ``{name: kind}`` for any of them. A scheduled hyperparameter's member
    value is the schedule's peak, and the schedule's own parameters
    (``popjax.schedules.KINDS``; ``warmup_steps`` for the learning rate's,
    ``<name>_warmup_steps`` for another's) are tuned per member like the rest, with popjax's
    default priors where the space names none. The task's ``train`` reads the value at each
    step (``popjax.schedules.at_step``).

    Example:
        >>> space = SearchSpace({"learning_rate": LogUniform(1e-3, 1e-1), "dropout": Fixed(0.0)})
        >>> hparams = space.sample(jax.random.key(0), 8)   # {"learning_rate": f32[8], ...}
        >>> SearchSpace({"warmup_steps": Uniform(0, 500)}, schedule="warmup_cosine")
    """

    def __init__(
        self,
        priors: Mapping[str, Prior] | None = None,
        schedule: str | Mapping[str, str] | None = None,
        optimizer: str = "sgd",
        *,
        builtin: bool = True,
    ):
        self.builtin = builtin
        self.given: dict[str, Prior] = dict(priors or {})  # as the user named them
        self.schedules = schedule_kinds(schedule)
        parameters = schedule_parameters(self.schedules)
        for name, prior in self.given.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise SpaceError(f"hyperparameter names must be identifiers (got {name!r})")
            if not isinstance(prior, (LogUniform, Uniform, Choice, Fixed)):
                raise SpaceError(f"{name}: expected a prior, got {prior!r}")
            prior.validate(name)
        # A schedule's parameters default to popjax's priors for them.
        parameter_priors = {
            name: self.given.get(name, DEFAULT_PRIORS[parameter])
            for name, parameter in parameters.items()
        }
        if not builtin:  # a task of one's own: the priors given, any names
            # (a scheduled one may get its prior from the task's own space: see ``check``)
            self.optimizer = optimizer
            self.priors = {**self.given, **parameter_priors}
            return
        self.optimizer = optimizer
        family, required, reads = optimizer_hparams(optimizer)
        known = (*required, *reads, *NEUTRAL_VALUES, *parameters)
        for name in self.schedules:
            if name not in known:
                raise SpaceError(unknown_name_error("scheduled hyperparameter", name, known))
        for name, prior in self.given.items():
            if name not in known:
                _explain_unknown(name, known, self.schedule, family)
            if name in NAMED_CHOICES and isinstance(prior, (Choice, Fixed)):
                _check_choice_indices(name, prior)
        for name in set(reads) & set(parameters):
            raise SpaceError(
                f"{name} is both a parameter of the {family} optimizer and of the schedule: "
                f'fix the optimizer\'s, optimizer = {{name = "{family}", {name} = ...}}, '
                "or choose another schedule"
            )
        defaults = {"learning_rate": learning_rate_prior(family)}
        self.priors: dict[str, Prior] = {
            **{
                name: self.given.get(name, defaults.get(name, DEFAULT_PRIORS[name]))
                for name in required
            },
            **parameter_priors,
            **{name: prior for name, prior in self.given.items() if name not in required},
        }
        self.check()

    def check(self) -> None:
        """Every scheduled hyperparameter has a prior."""
        for name in self.schedules:
            if name not in self.priors:
                raise SpaceError(
                    f"schedule: {name} has no prior in the space: give it one, such as "
                    f'{name} = {{prior = "log_uniform", low = 1e-4, high = 1e-2}}'
                )

    def scheduled(self) -> dict[str, str]:
        """``{name: kind}`` of the hyperparameters that change over the run."""
        return {name: kind for name, kind in self.schedules.items() if kind != "constant"}

    @property
    def schedule(self) -> str:
        """The learning rate's schedule kind ("constant" when it has none)."""
        return self.schedules.get("learning_rate", "constant")

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

    def _schedule_entry(self) -> dict:
        # A task of one's own may have a default schedule that "constant" overrides.
        kinds = self.schedules if not self.builtin else self.scheduled()
        if not kinds:
            return {}
        if set(kinds) == {"learning_rate"}:
            return {"schedule": kinds["learning_rate"]}
        return {"schedule": dict(kinds)}

    def to_dict(self) -> dict:
        """The space as plain data, the shape a TOML config writes it."""
        if not self.builtin:
            return {
                **self._schedule_entry(),
                **{name: prior_to_dict(prior) for name, prior in self.priors.items()},
            }
        statics = {"optimizer": optimizer_data(self.optimizer)} if self.optimizer != "sgd" else {}
        return {
            **self._schedule_entry(),
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
        schedule = table.pop("schedule", None)
        if not builtin:
            return cls(
                {name: prior_from_dict(name, spec) for name, spec in table.items()},
                schedule=schedule,
                builtin=False,
            )
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
        schedules = schedule_kinds(table.pop("schedule")) if "schedule" in table else self.schedules
        dropped = {
            name
            for name in schedule_parameters(self.schedules)
            if name not in schedule_parameters(schedules)
        }
        if not self.builtin:
            priors = {name: p for name, p in self.given.items() if name not in dropped}
            priors.update({name: prior_from_dict(name, spec) for name, spec in table.items()})
            return SearchSpace(priors, schedule=schedules, builtin=False)
        optimizer = table.pop("optimizer", self.optimizer)
        if optimizer != self.optimizer:
            family, required, reads = optimizer_hparams(self.optimizer)
            dropped |= {*required, *reads} - {"learning_rate", "weight_decay", "dropout"}
            if self.priors.get("learning_rate") == learning_rate_prior(family):
                dropped.add("learning_rate")
        priors = {name: prior for name, prior in self.priors.items() if name not in dropped}
        priors.update({name: _builtin_prior(name, spec) for name, spec in table.items()})
        return SearchSpace(priors, schedule=schedules, optimizer=optimizer)

    def __repr__(self) -> str:
        schedule = f", schedule={self.schedules!r}" if self.schedules else ""
        if not self.builtin:
            return f"SearchSpace({self.priors!r}{schedule}, builtin=False)"
        return f"SearchSpace({self.priors!r}{schedule}, optimizer={self.optimizer!r})"


def schedule_kinds(schedule) -> dict[str, str]:
    """``{hyperparameter: kind}`` from a kind (the learning rate's) or a table of them."""
    if schedule is None:
        return {}
    if isinstance(schedule, str):
        schedule = {"learning_rate": schedule}
    if not isinstance(schedule, Mapping):
        raise SpaceError(
            f'schedule must be a kind such as "warmup_cosine", or a table '
            f'{{learning_rate = "warmup_cosine"}} (got {shown(schedule)})'
        )
    for name, kind in schedule.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise SpaceError(f"schedule: hyperparameter names must be identifiers (got {name!r})")
        if not isinstance(kind, str) or kind not in KINDS:
            raise SpaceError(unknown_name_error("schedule", str(kind), tuple(KINDS)))
    return dict(schedule)


def optimizer_hparams(optimizer) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """``(family name, required, optional)``: the hyperparameters a built-in task's space
    holds for an optimizer (always), and those it may name (otherwise the family's default).
    popjax's sgd and adam require all theirs; an optax optimizer requires its learning rate and
    weight decay, when it takes them."""
    try:
        family = resolve_family(optimizer)
    except PopjaxError as error:
        raise SpaceError(str(error)) from None
    if family.own:
        return (
            family.name,
            ("learning_rate", *OPTIMIZER_HPARAMS[family.name], "dropout", "weight_decay"),
            (),
        )
    required = (*(n for n in ("learning_rate", "weight_decay") if n in family.reads), "dropout")
    return family.name, required, tuple(n for n in family.reads if n not in required)


def optimizer_data(optimizer):
    """An optimizer as a config writes it: a name, an import path, or a table of one."""
    if isinstance(optimizer, Mapping):
        return {**optimizer, "name": optimizer_data(optimizer["name"])}
    return optimizer if isinstance(optimizer, str) else resolve_family(optimizer).name


def _explain_unknown(name: str, known, schedule: str, optimizer: str):
    for kind, table, current in (
        ("schedule", KINDS, schedule),
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


def _builtin_prior(name: str, spec) -> Prior:
    """A built-in hyperparameter's prior from a config's table; named choices by name."""
    return prior_from_dict(name, spec, NAMED_CHOICES.get(name, ()))
