"""Optimizers whose hyperparameters are read from the member's own arrays at every step.

The optimizer is rebuilt inside the traced step from the member's hyperparameters, so its state
holds only moments and the hyperparameters have one home: ``Population.hparams``. PBT changes
them by writing arrays, which never retraces the step. The family (SGD or Adam) is a static
choice of the sweep; its coefficients are per-member arrays.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import optax

from popjax.errors import PopjaxError

FAMILIES = ("sgd", "adam")
# What each family reads of a member's hyperparameters, and the value it takes when the space
# does not name one (None: the space must). ``grad_clip`` (any family) clips the gradient's
# global norm first when the space names it.
FAMILY_HPARAMS = {
    "sgd": {"learning_rate": None, "momentum": 0.0, "weight_decay": 0.0},
    "adam": {"learning_rate": None, "b1": 0.9, "b2": 0.999, "eps": 1e-8, "weight_decay": 0.0},
}


def sgdw(learning_rate, momentum, weight_decay) -> optax.GradientTransformation:
    """SGD with heavy-ball momentum and decoupled weight decay.

    The update is ``-lr * (m + wd * w)`` with ``m = momentum * m + g``: the decay is kept out of
    the momentum buffer (decoupled, as in SGDW), so with zero gradients a weight shrinks by
    ``1 - lr * wd`` per step. Momentum 0 is plain SGD.
    """
    return optax.chain(
        optax.trace(decay=momentum),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )


def adamw(learning_rate, b1, b2, eps, weight_decay) -> optax.GradientTransformation:
    """Adam with decoupled weight decay (AdamW), every coefficient possibly traced."""
    return optax.chain(
        optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )


def member_optimizer(
    hparams: Mapping[str, jax.Array], learning_rate=None, family: str = "sgd"
) -> optax.GradientTransformation:
    """The optimizer of one member, built from its (traced, scalar) hyperparameters.

    Args:
      hparams: the member's hyperparameters. The family reads those of ``FAMILY_HPARAMS``; a
        missing one takes its default there (``learning_rate`` has none). With a ``grad_clip``
        hyperparameter the gradient is first clipped to that global norm.
      learning_rate: this step's rate, instead of ``hparams["learning_rate"]``. Under a
        schedule in the search space, popjax already puts the step's rate in ``hparams``.
      family: "sgd" (heavy-ball momentum, decoupled weight decay) or "adam" (AdamW).

    Example:
      >>> update = member_optimizer({"learning_rate": lr, "b1": b1}, family="adam")
    """
    if family not in FAMILY_HPARAMS:
        raise PopjaxError(
            f"unknown optimizer family '{family}': choose among {', '.join(FAMILIES)}"
        )
    if learning_rate is None and "learning_rate" not in hparams:
        raise PopjaxError(
            f"the {family} optimizer reads learning_rate, which the member's hyperparameters "
            "lack: add learning_rate to the search space"
        )
    read = {name: hparams.get(name, default) for name, default in FAMILY_HPARAMS[family].items()}
    if learning_rate is not None:
        read["learning_rate"] = learning_rate
    if family == "adam":
        update = adamw(
            read["learning_rate"], read["b1"], read["b2"], read["eps"], read["weight_decay"]
        )
    else:
        update = sgdw(read["learning_rate"], read["momentum"], read["weight_decay"])
    if "grad_clip" in hparams:
        return optax.chain(optax.clip_by_global_norm(hparams["grad_clip"]), update)
    return update


def init_state(params, hparams: Mapping[str, jax.Array] | None = None, family: str = "sgd"):
    """Optimizer state for ``params``: its shape depends on the family and on which
    hyperparameters there are (``grad_clip`` adds a stage), never on their values."""
    zeros = {name: 0.0 for name in (*FAMILY_HPARAMS.get(family, ()), *(hparams or ()))}
    return member_optimizer(zeros, family=family).init(params)
