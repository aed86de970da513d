"""optax-compatible schedules, with per-member parameters: the schedule functions, the kinds a
search space can give a hyperparameter, and replayed schedules rebuilt from plain data.

Every schedule here is ``Callable[[step], value]``, the optax signature, so it serves as the
``learning_rate`` of any optax optimizer. Parameters may be arrays with a member axis: under
``vmap`` each member evaluates its own schedule.

A PBT run changes a member's hyperparameters at every exploit; ``popjax.replay`` follows a
member's ancestry in a run and exports, for each hyperparameter, the piecewise schedule its
weights actually trained with. ``load`` reads such a file back as plain jax functions; this
module reads no run folder, so it needs jax alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp

from popjax.errors import PopjaxError

FORMAT = "popjax-schedules/2"
FORMATS = ("popjax-schedules/1", FORMAT)  # the first had the learning rate's schedule only


def constant(value):
    """``value`` at every step."""
    return lambda step: jnp.asarray(value, jnp.float32) + 0.0 * jnp.asarray(step, jnp.float32)


def _with_warmup(peak, warmup_steps, decayed):
    """Linear warmup from 0 to ``peak``, then ``decayed(step)``; a warmup of 0 starts at peak."""

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        warmup = jnp.asarray(warmup_steps, jnp.float32)
        fraction = jnp.where(warmup > 0, step / jnp.maximum(warmup, 1.0), 1.0)
        warming = peak * jnp.clip(fraction, 0.0, 1.0)
        return jnp.where(step < warmup, warming, decayed(step, step - warmup))

    return schedule


def _decay_fraction(since, decay_steps):
    return jnp.clip(since / jnp.maximum(jnp.asarray(decay_steps, jnp.float32), 1.0), 0.0, 1.0)


def warmup_cosine(peak, warmup_steps, decay_steps, end_value=0.0):
    """Linear warmup to ``peak``, then cosine decay to ``end_value`` over ``decay_steps``."""

    def decayed(step, since):
        t = _decay_fraction(since, decay_steps)
        return end_value + (peak - end_value) * 0.5 * (1.0 + jnp.cos(jnp.pi * t))

    return _with_warmup(peak, warmup_steps, decayed)


def warmup_linear(peak, warmup_steps, decay_steps, end_value=0.0):
    """Linear warmup to ``peak``, then linear decay to ``end_value`` over ``decay_steps``."""

    def decayed(step, since):
        return peak + (end_value - peak) * _decay_fraction(since, decay_steps)

    return _with_warmup(peak, warmup_steps, decayed)


def warmup_exponential(peak, warmup_steps, decay_rate, transition_steps):
    """Linear warmup to ``peak``, then ``peak * decay_rate ** (steps since / transition_steps)``."""

    def decayed(step, since):
        exponent = jnp.maximum(since, 0.0) / jnp.asarray(transition_steps, jnp.float32)
        return peak * jnp.power(decay_rate, exponent)

    return _with_warmup(peak, warmup_steps, decayed)


def step_decay(value, every, factor):
    """``value * factor ** floor(step / every)``: e.g. halve the rate every 1000 steps."""

    def schedule(step):
        drops = jnp.floor(jnp.asarray(step, jnp.float32) / jnp.asarray(every, jnp.float32))
        return value * jnp.power(factor, drops)

    return schedule


def piecewise(boundaries, values):
    """``values[i]`` on steps ``[boundaries[i-1], boundaries[i])``; the last value after.

    ``len(values) == len(boundaries) + 1``. The replay of a PBT lineage is one of these.
    """
    boundaries = jnp.asarray(boundaries, jnp.int32)
    values = jnp.asarray(values, jnp.float32)

    def schedule(step):
        return values[jnp.searchsorted(boundaries, jnp.asarray(step, jnp.int32), side="right")]

    return schedule


# Schedules a search space can give any hyperparameter. The member's value of the
# hyperparameter is the schedule's peak; the schedule's own parameters are hyperparameters of
# their own, tuned per member like the rest (named as ``parameter_name`` says). Decays run over
# the rest of the run, ``total_steps``.
KINDS = {
    "constant": (),
    "warmup_cosine": ("warmup_steps",),
    "warmup_linear": ("warmup_steps",),
    "warmup_exponential": ("warmup_steps", "decay_rate"),
    "step_decay": ("decay_every", "decay_factor"),
}


def parameter_name(hyperparameter: str, parameter: str) -> str:
    """The hyperparameter that holds ``parameter`` of ``hyperparameter``'s schedule:
    ``warmup_steps`` for the learning rate's, ``momentum_warmup_steps`` for momentum's."""
    return parameter if hyperparameter == "learning_rate" else f"{hyperparameter}_{parameter}"


def schedule_parameters(kinds) -> dict[str, str]:
    """``{hyperparameter holding it: parameter}`` for every parameter of ``kinds``'s schedules
    (``kinds`` maps a hyperparameter to its schedule kind)."""
    return {
        parameter_name(name, parameter): parameter
        for name, kind in kinds.items()
        for parameter in KINDS[kind]
    }


def value_at(kind: str, name: str, hparams, step, total_steps: int):
    """Hyperparameter ``name`` of a member with ``hparams`` at ``step`` under schedule ``kind``."""
    if kind not in KINDS:
        raise PopjaxError(f"unknown schedule '{kind}': choose among {', '.join(KINDS)}")
    peak = hparams[name]

    def parameter(p):
        return hparams[parameter_name(name, p)]

    if kind == "constant":
        return constant(peak)(step)
    if kind in ("warmup_cosine", "warmup_linear"):
        warmup = parameter("warmup_steps")
        decay = warmup_cosine if kind == "warmup_cosine" else warmup_linear
        return decay(peak, warmup, total_steps - warmup)(step)
    if kind == "warmup_exponential":
        # decay_rate is the factor per 1000 steps, so its range reads the same for any run length
        return warmup_exponential(peak, parameter("warmup_steps"), parameter("decay_rate"), 1000)(
            step
        )
    return step_decay(peak, parameter("decay_every"), parameter("decay_factor"))(step)


def at_step(hparams, kinds, step, total_steps: int) -> dict:
    """``hparams`` with every scheduled hyperparameter (``kinds``: ``{name: kind}``) at its value
    at ``step``; the others, the schedules' own parameters among them, as they are.

    This is what a task's ``train`` sees: popjax applies it at every step, so a task reads the
    current rate as ``hparams["learning_rate"]`` whatever the schedule.
    """
    return {
        **hparams,
        **{
            name: value_at(kind, name, hparams, step, total_steps)
            for name, kind in kinds.items()
            if kind != "constant"
        },
    }


def _kinds(trajectories: dict) -> tuple[dict, int | None]:
    """The schedule kinds and run length of an export, of this format or the first."""
    if "schedule_kinds" in trajectories:
        return trajectories["schedule_kinds"], trajectories["total_steps"]
    old = trajectories.get("learning_rate_schedule", {"kind": "constant"})
    return {"learning_rate": old["kind"]}, old.get("total_steps")


def from_trajectories(trajectories: dict, name: str):
    """The schedule of hyperparameter ``name`` from a member's trajectories (the data that
    ``popjax.replay.trajectories`` returns and ``popjax.replay.export`` writes)."""
    schedules = trajectories["schedules"]
    if name not in schedules:
        raise PopjaxError(f"no hyperparameter '{name}' in the run: known: {', '.join(schedules)}")
    kinds, total_steps = _kinds(trajectories)
    kind = kinds.get(name, "constant")
    if kind == "constant":
        return piecewise(schedules[name]["boundaries"], schedules[name]["values"])
    # Each round's schedule parameters, evaluated at the step itself.
    rounds = {n: piecewise(s["boundaries"], s["values"]) for n, s in schedules.items()}

    def schedule(step):
        hparams = {n: per_round(step) for n, per_round in rounds.items()}
        return value_at(kind, name, hparams, step, total_steps)

    return schedule


def load(path) -> dict:
    """Reads an exported file: ``{name: schedule}``, plain functions of jax arrays.

    The values are float32 as they were trained with; JSON keeps them exactly.
    """
    try:
        trajectories = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise PopjaxError(f"cannot read schedules from {path} ({error})") from None
    if trajectories.get("format") not in FORMATS:
        raise PopjaxError(f"{path} is not a file written by popjax export-schedule")
    return {name: from_trajectories(trajectories, name) for name in trajectories["schedules"]}
