"""Search spaces: a prior and bounds for every per-member hyperparameter.

A prior samples a ``[P]`` float32 array (one value per member), perturbs values by a factor and
clips them to its bounds. Everything here is jittable: PBT calls ``explore`` inside the compiled
round, so new hyperparameters are written as arrays and never trigger a recompilation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import jax
import jax.numpy as jnp

from popjax.errors import PopjaxError, unknown_name_error

# The hyperparameters the training step reads. Anything else in a space is a typo.
KNOWN_HPARAMS = ("learning_rate", "momentum", "dropout", "weight_decay")

# Hyperparameters a space may add; each does nothing at its neutral value, which is what a run
# without it does. Where each acts: optim.py (grad_clip, b1/b2/eps for adam), train.py (l1,
# label_smoothing, batch_fraction), nn.py (activation, init_*), data.py (sampling),
# augment.py (shift, noise, scale, flip), sweep.py (patience).
NEUTRAL_VALUES = {
    "grad_clip": math.inf,  # global-norm clipping threshold
    "l1": 0.0,  # L1 penalty on the weights, added to the loss
    "label_smoothing": 0.0,
    "activation": 0,  # index into NAMED_CHOICES["activation"]
    "init_scale": 1.0,  # multiplies the initial weights
    "init_mode": 0,  # lecun, he or glorot
    "init_distribution": 0,  # truncated normal or uniform
    "shift": 0.0,  # augmentation: largest random shift, in positions
    "noise": 0.0,  # augmentation: std of added Gaussian noise
    "scale": 0.0,  # augmentation: inputs multiplied by U(1 - scale, 1 + scale)
    "flip": 0.0,  # augmentation: probability of reversing an example along its last axis
    "sampling": 0,  # mini-batches drawn uniformly or class-balanced
    "batch_fraction": 1.0,  # effective batch: this share of batch_size (the rest masked)
    "patience": math.inf,  # early stopping: rounds without a better validation figure
}
OPTIMIZER_HPARAMS = {"sgd": ("momentum",), "adam": ("b1", "b2", "eps")}
# Choices made by name in a config; members carry the index.
NAMED_CHOICES = {
    "activation": ("relu", "gelu", "tanh", "silu"),
    "init_mode": ("lecun", "he", "glorot"),
    "init_distribution": ("normal", "uniform"),
    "sampling": ("uniform", "balanced"),
}

# Each learning-rate schedule's own hyperparameters (``learning_rate`` is its peak); see
# ``popjax.schedules.learning_rate_at``.
SCHEDULE_HPARAMS = {
    "constant": (),
    "warmup_cosine": ("warmup_steps",),
    "warmup_linear": ("warmup_steps",),
    "warmup_exponential": ("warmup_steps", "decay_rate"),
    "step_decay": ("decay_every", "decay_factor"),
}


class SpaceError(PopjaxError):
    """A search space that cannot be sampled; the message says what to change."""


@dataclass(frozen=True)
class LogUniform:
    """Uniform in log space between ``low`` and ``high`` (both > 0)."""

    low: float
    high: float

    def validate(self, name: str) -> None:
        _check_bounds(name, self.low, self.high)
        if self.low <= 0:
            raise SpaceError(
                f"{name}: a log_uniform prior needs low > 0 (got {self.low}); "
                "use a uniform prior to include 0"
            )

    def sample(self, key, shape):
        log_value = jax.random.uniform(
            key, shape, minval=math.log(self.low), maxval=math.log(self.high)
        )
        return jnp.exp(log_value)

    def clip(self, values):
        return jnp.clip(values, self.low, self.high)


@dataclass(frozen=True)
class Uniform:
    """Uniform between ``low`` and ``high``."""

    low: float
    high: float

    def validate(self, name: str) -> None:
        _check_bounds(name, self.low, self.high)

    def sample(self, key, shape):
        return jax.random.uniform(key, shape, minval=self.low, maxval=self.high)

    def clip(self, values):
        return jnp.clip(values, self.low, self.high)


@dataclass(frozen=True)
class Choice:
    """One of a fixed list of numbers. Perturbing moves to a neighbouring value in the list."""

    values: tuple[float, ...]

    def __post_init__(self):
        object.__setattr__(self, "values", tuple(float(v) for v in self.values))

    def validate(self, name: str) -> None:
        if len(self.values) == 0:
            raise SpaceError(f"{name}: a choice prior needs at least one value")

    def sample(self, key, shape):
        index = jax.random.randint(key, shape, 0, len(self.values))
        return jnp.asarray(self.values, jnp.float32)[index]

    def index_of(self, values):
        options = jnp.asarray(self.values, jnp.float32)
        return jnp.argmin(jnp.abs(values[..., None] - options), axis=-1)

    def clip(self, values):
        # Snap to the nearest listed value: a choice has no values in between.
        return jnp.asarray(self.values, jnp.float32)[self.index_of(values)]


@dataclass(frozen=True)
class Fixed:
    """The same value for every member; PBT never changes it."""

    value: float

    def validate(self, name: str) -> None:
        if not math.isfinite(self.value):
            raise SpaceError(f"{name}: a fixed value must be finite (got {self.value})")

    def sample(self, key, shape):
        return jnp.full(shape, self.value, jnp.float32)

    def clip(self, values):
        return jnp.full_like(values, self.value)


Prior = LogUniform | Uniform | Choice | Fixed

# Defaults that train the built-in models well; a user's space replaces them name by name.
DEFAULT_PRIORS: dict[str, Prior] = {
    "learning_rate": LogUniform(1e-3, 0.5),
    "b1": Uniform(0.8, 0.95),
    "b2": Uniform(0.99, 0.9999),
    "eps": LogUniform(1e-8, 1e-6),
    "momentum": Uniform(0.0, 0.99),
    "dropout": Uniform(0.0, 0.5),
    "weight_decay": LogUniform(1e-6, 1e-2),
    "warmup_steps": Uniform(0.0, 1000.0),
    "decay_rate": LogUniform(0.05, 0.9),  # per 1000 steps
    "decay_every": Uniform(500.0, 3000.0),
    "decay_factor": Uniform(0.1, 0.9),
}


# Adam wants smaller steps than SGD.
ADAM_DEFAULT_PRIORS: dict[str, Prior] = {"learning_rate": LogUniform(1e-4, 1e-2)}


def _check_bounds(name: str, low: float, high: float) -> None:
    if not (math.isfinite(low) and math.isfinite(high)):
        raise SpaceError(f"{name}: bounds must be finite numbers (got low={low}, high={high})")
    if low >= high:
        raise SpaceError(f"{name}: low must be below high (got low={low}, high={high})")


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

    def __init__(self, priors: Mapping[str, Prior] | None = None, schedule: str = "constant",
                 optimizer: str = "sgd", *, builtin: bool = True):
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
        if schedule not in SCHEDULE_HPARAMS:
            raise SpaceError(unknown_name_error("schedule", str(schedule),
                                               tuple(SCHEDULE_HPARAMS)))
        if optimizer not in OPTIMIZER_HPARAMS:
            raise SpaceError(unknown_name_error("optimizer", str(optimizer),
                                               tuple(OPTIMIZER_HPARAMS)))
        self.schedule, self.optimizer = schedule, optimizer
        required = ("learning_rate", *OPTIMIZER_HPARAMS[optimizer], "dropout", "weight_decay",
                    *SCHEDULE_HPARAMS[schedule])
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
        defaults = ADAM_DEFAULT_PRIORS if optimizer == "adam" else {}
        self.priors: dict[str, Prior] = {
            **{name: priors.get(name, defaults.get(name, DEFAULT_PRIORS[name]))
               for name in required},
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
            return {name: prior_to_dict(prior, name, named_choices=False) for name, prior in self.priors.items()}
        statics = {key: value for key, value in (("schedule", self.schedule),
                                                  ("optimizer", self.optimizer))
                   if value != {"schedule": "constant", "optimizer": "sgd"}[key]}
        return {**statics,
                **{name: prior_to_dict(prior, name) for name, prior in self.priors.items()}}

    @classmethod
    def from_dict(cls, table: Mapping, builtin: bool = True) -> "SearchSpace":
        if not isinstance(table, Mapping):
            raise SpaceError("[space] must be a table of priors")
        table = dict(table)
        if not builtin:
            return cls({name: prior_from_dict(name, spec, named_choices=False)
                        for name, spec in table.items()}, builtin=False)
        schedule = table.pop("schedule", "constant")
        optimizer = table.pop("optimizer", "sgd")
        return cls({name: prior_from_dict(name, spec) for name, spec in table.items()},
                   schedule=schedule, optimizer=optimizer)

    def updated(self, table: Mapping) -> "SearchSpace":
        """This space with a config table's changes (a group's ``space``). Another optimizer or
        schedule drops the old one's own hyperparameters and default learning rate."""
        table = dict(table)
        if not self.builtin:
            return SearchSpace({**self.priors, **{name: prior_from_dict(name, spec, False)
                                                  for name, spec in table.items()}},
                               builtin=False)
        schedule = table.pop("schedule", self.schedule)
        optimizer = table.pop("optimizer", self.optimizer)
        dropped = set()
        if optimizer != self.optimizer:
            dropped |= set(OPTIMIZER_HPARAMS.get(self.optimizer, ()))
            old_default = (ADAM_DEFAULT_PRIORS if self.optimizer == "adam" else DEFAULT_PRIORS)
            if self.priors["learning_rate"] == old_default["learning_rate"]:
                dropped.add("learning_rate")
        if schedule != self.schedule:
            dropped |= set(SCHEDULE_HPARAMS.get(self.schedule, ()))
        priors = {name: prior for name, prior in self.priors.items() if name not in dropped}
        priors.update({name: prior_from_dict(name, spec) for name, spec in table.items()})
        return SearchSpace(priors, schedule=schedule, optimizer=optimizer)

    def __repr__(self) -> str:
        if not self.builtin:
            return f"SearchSpace({self.priors!r}, builtin=False)"
        return (f"SearchSpace({self.priors!r}, schedule={self.schedule!r}, "
                f"optimizer={self.optimizer!r})")


def _explain_unknown(name: str, known, schedule: str, optimizer: str):
    for kind, table, current in (("schedule", SCHEDULE_HPARAMS, schedule),
                                 ("optimizer", OPTIMIZER_HPARAMS, optimizer)):
        wanted = [k for k, names in table.items() if name in names]
        if wanted:
            raise SpaceError(f"{name} is a parameter of the {' or '.join(wanted)} {kind}, not "
                             f"of '{current}': set {kind} = \"{wanted[0]}\" or remove {name}")
    raise SpaceError(unknown_name_error("hyperparameter", name, known))


def _check_choice_indices(name: str, prior) -> None:
    options = NAMED_CHOICES[name]
    values = prior.values if isinstance(prior, Choice) else (prior.value,)
    for value in values:
        if value not in range(len(options)):
            raise SpaceError(f"{name}: choose among {', '.join(options)} (got {value:g})")


_PRIOR_KINDS = {"log_uniform": LogUniform, "uniform": Uniform, "choice": Choice, "fixed": Fixed}


def prior_to_dict(prior: Prior, name: str = "", named_choices: bool = True) -> dict:
    kind = {v: k for k, v in _PRIOR_KINDS.items()}[type(prior)]
    names = NAMED_CHOICES.get(name) if named_choices else None
    if isinstance(prior, Choice):
        return {"prior": kind, "values": [names[int(v)] for v in prior.values] if names
                else list(prior.values)}
    if isinstance(prior, Fixed):
        return {"prior": kind, "value": names[int(prior.value)] if names else prior.value}
    return {"prior": kind, "low": prior.low, "high": prior.high}


def _choice_names_to_indices(name: str, spec):
    options = NAMED_CHOICES[name]

    def index(value):
        if isinstance(value, str):
            if value not in options:
                raise SpaceError(f"{name}: " + unknown_name_error("option", value, options))
            return options.index(value)
        return value

    if isinstance(spec, Mapping):
        spec = dict(spec)
        if "values" in spec and isinstance(spec["values"], (list, tuple)):
            spec["values"] = [index(v) for v in spec["values"]]
        if "value" in spec:
            spec["value"] = index(spec["value"])
        return spec
    return index(spec)


def prior_from_dict(name: str, spec, named_choices: bool = True) -> Prior:
    """Reads ``{prior = "log_uniform", low = 1e-3, high = 0.1}`` or a bare number (fixed).

    Named choices (``activation``, ``init_mode``, ...) take their option names.
    """
    if named_choices and name in NAMED_CHOICES:
        spec = _choice_names_to_indices(name, spec)
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return Fixed(float(spec))
    if not isinstance(spec, Mapping):
        raise SpaceError(f"{name}: expected a table like {{prior = \"uniform\", low = 0, high = 1}}")
    spec = dict(spec)
    kind = spec.pop("prior", None)
    if kind not in _PRIOR_KINDS:
        raise SpaceError(
            f"{name}: " + unknown_name_error("prior", str(kind), tuple(_PRIOR_KINDS))
        )
    fields = {"log_uniform": ("low", "high"), "uniform": ("low", "high"),
              "choice": ("values",), "fixed": ("value",)}[kind]
    extra = set(spec) - set(fields)
    if extra:
        raise SpaceError(
            f"{name}: " + unknown_name_error(f"{kind} field", sorted(extra)[0], fields)
        )
    missing = [f for f in fields if f not in spec]
    if missing:
        raise SpaceError(f"{name}: a {kind} prior needs {', '.join(fields)}")
    try:
        if kind == "choice":
            return Choice(tuple(float(v) for v in spec["values"]))
        if kind == "fixed":
            return Fixed(float(spec["value"]))
        return _PRIOR_KINDS[kind](float(spec["low"]), float(spec["high"]))
    except (TypeError, ValueError) as error:
        raise SpaceError(f"{name}: prior fields must be numbers ({error})") from None
