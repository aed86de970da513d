"""Priors: how one hyperparameter's per-member values are drawn, perturbed and bounded.

A prior samples a ``[P]`` float32 array (one value per member) and clips values to its bounds.
Everything here is jittable: PBT calls it inside the compiled round, so new hyperparameters are
written as arrays and never trigger a recompilation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from popjax.errors import PopjaxError, unknown_name_error


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
        if not all(math.isfinite(v) for v in self.values):
            raise SpaceError(f"{name}: choice values must be finite (got {list(self.values)})")

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


def _check_bounds(name: str, low: float, high: float) -> None:
    if not (math.isfinite(low) and math.isfinite(high)):
        raise SpaceError(f"{name}: bounds must be finite numbers (got low={low}, high={high})")
    if low >= high:
        raise SpaceError(f"{name}: low must be below high (got low={low}, high={high})")


_PRIOR_KINDS = {"log_uniform": LogUniform, "uniform": Uniform, "choice": Choice, "fixed": Fixed}


def prior_to_dict(prior: Prior, options: tuple[str, ...] = ()) -> dict:
    """The prior as a config's table writes it; a choice among named ``options`` by name."""
    kind = {v: k for k, v in _PRIOR_KINDS.items()}[type(prior)]
    names = options
    if isinstance(prior, Choice):
        return {
            "prior": kind,
            "values": [names[int(v)] for v in prior.values] if names else list(prior.values),
        }
    if isinstance(prior, Fixed):
        return {"prior": kind, "value": names[int(prior.value)] if names else prior.value}
    return {"prior": kind, "low": prior.low, "high": prior.high}


def _choice_names_to_indices(name: str, spec, options: tuple[str, ...]):
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


def prior_from_dict(name: str, spec, options: tuple[str, ...] = ()) -> Prior:
    """Reads ``{prior = "log_uniform", low = 1e-3, high = 0.1}`` or a bare number (fixed).

    A choice among named ``options`` (``activation``: relu, gelu, ...) takes their names;
    members carry the option's index.
    """
    if options:
        spec = _choice_names_to_indices(name, spec, options)
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return Fixed(float(spec))
    if not isinstance(spec, Mapping):
        raise SpaceError(f'{name}: expected a table like {{prior = "uniform", low = 0, high = 1}}')
    spec = dict(spec)
    kind = spec.pop("prior", None)
    if kind not in _PRIOR_KINDS:
        raise SpaceError(f"{name}: " + unknown_name_error("prior", str(kind), tuple(_PRIOR_KINDS)))
    fields = {
        "log_uniform": ("low", "high"),
        "uniform": ("low", "high"),
        "choice": ("values",),
        "fixed": ("value",),
    }[kind]
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
