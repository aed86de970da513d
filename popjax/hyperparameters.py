"""Every built-in hyperparameter in one place: its default prior or neutral value, its options,
what it belongs to, and where it acts.

A *required* hyperparameter (one with a default prior) is in every space of the built-in tasks;
an *optional* one (with a neutral value) is in a space only when named there, and at its neutral
value it changes nothing, exactly as if popjax did not have it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from popjax.priors import LogUniform, Prior, Uniform


@dataclass(frozen=True)
class Hyperparameter:
    acts_in: str  # where it acts: "optimizer", "schedule", "loss", "model", "init", ...
    prior: Prior | None = None  # the default prior of a required hyperparameter
    neutral: float | None = None  # the do-nothing value of an optional one
    options: tuple[str, ...] = ()  # a choice made by name; members carry the index
    belongs_to: tuple[str, ...] = ()  # the optimizer families or schedules that have it


HYPERPARAMETERS: dict[str, Hyperparameter] = {
    # optim.py: the member's optimizer, rebuilt from these every step
    "learning_rate": Hyperparameter("optimizer", LogUniform(1e-3, 0.5)),
    "momentum": Hyperparameter("optimizer", Uniform(0.0, 0.99), belongs_to=("sgd",)),
    "b1": Hyperparameter("optimizer", Uniform(0.8, 0.95), belongs_to=("adam",)),
    "b2": Hyperparameter("optimizer", Uniform(0.99, 0.9999), belongs_to=("adam",)),
    "eps": Hyperparameter("optimizer", LogUniform(1e-8, 1e-6), belongs_to=("adam",)),
    "weight_decay": Hyperparameter("optimizer", LogUniform(1e-6, 1e-2)),
    "grad_clip": Hyperparameter("optimizer", neutral=math.inf),  # global-norm threshold
    # schedules.py: the learning rate's schedule (learning_rate is its peak)
    "warmup_steps": Hyperparameter(
        "schedule",
        Uniform(0.0, 1000.0),
        belongs_to=("warmup_cosine", "warmup_linear", "warmup_exponential"),
    ),
    "decay_rate": Hyperparameter(  # per 1000 steps
        "schedule", LogUniform(0.05, 0.9), belongs_to=("warmup_exponential",)
    ),
    "decay_every": Hyperparameter("schedule", Uniform(500.0, 3000.0), belongs_to=("step_decay",)),
    "decay_factor": Hyperparameter("schedule", Uniform(0.1, 0.9), belongs_to=("step_decay",)),
    # tasks/supervised.py and nn.py: the model and its loss
    "dropout": Hyperparameter("model", Uniform(0.0, 0.5)),
    "activation": Hyperparameter("model", neutral=0, options=("relu", "gelu", "tanh", "silu")),
    "l1": Hyperparameter("loss", neutral=0.0),  # L1 penalty on the weights, added to the loss
    "label_smoothing": Hyperparameter("per-example loss", neutral=0.0),
    "batch_fraction": Hyperparameter("per-example loss", neutral=1.0),  # effective batch share
    "init_mode": Hyperparameter("init", neutral=0, options=("lecun", "he", "glorot")),
    "init_distribution": Hyperparameter("init", neutral=0, options=("normal", "uniform")),
    "init_scale": Hyperparameter("init", neutral=1.0),  # multiplies the initial weights
    # data.py and augment.py: what a member's batches hold
    "sampling": Hyperparameter("sampling", neutral=0, options=("uniform", "balanced")),
    "shift": Hyperparameter("augmentation", neutral=0.0),  # largest shift, in positions
    "noise": Hyperparameter("augmentation", neutral=0.0),  # std of added Gaussian noise
    "scale": Hyperparameter("augmentation", neutral=0.0),  # inputs times U(1 - s, 1 + s)
    "flip": Hyperparameter("augmentation", neutral=0.0),  # chance of reversing the last axis
    # round.py: early stopping, rounds without a better validation figure
    "patience": Hyperparameter("round", neutral=math.inf),
}

# Adam wants smaller steps than SGD, and sign-based optimizers smaller still (Lion's authors
# take its rate 3-10x below AdamW's).
ADAM_LEARNING_RATE = LogUniform(1e-4, 1e-2)
SIGN_LEARNING_RATE = LogUniform(1e-5, 1e-3)
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "warmup_cosine", "warmup_linear", "warmup_exponential", "step_decay")


def acting_in(where: str) -> tuple[str, ...]:
    """The hyperparameters that act in one place, e.g. ``acting_in("augmentation")``."""
    return tuple(name for name, h in HYPERPARAMETERS.items() if h.acts_in == where)


def owned_by(owner: str) -> tuple[str, ...]:
    """The hyperparameters of one optimizer family or schedule."""
    return tuple(name for name, h in HYPERPARAMETERS.items() if owner in h.belongs_to)


NEUTRAL_VALUES = {n: h.neutral for n, h in HYPERPARAMETERS.items() if h.neutral is not None}
DEFAULT_PRIORS = {n: h.prior for n, h in HYPERPARAMETERS.items() if h.prior is not None}
NAMED_CHOICES = {n: h.options for n, h in HYPERPARAMETERS.items() if h.options}
OPTIMIZER_HPARAMS = {family: owned_by(family) for family in OPTIMIZERS}
SCHEDULE_HPARAMS = {schedule: owned_by(schedule) for schedule in SCHEDULES}


def learning_rate_prior(family: str) -> Prior:
    """The default learning-rate prior of an optimizer family, by its name: SGD's for the SGDs,
    a smaller one for the sign-based (Lion, signum), Adam's for every other (adaptive) one."""
    bare = family.removeprefix("optax.").removeprefix("contrib.")
    if bare in ("sgd", "noisy_sgd"):
        return DEFAULT_PRIORS["learning_rate"]
    if bare in ("lion", "signum", "sign_sgd"):
        return SIGN_LEARNING_RATE
    return ADAM_LEARNING_RATE
