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

FAMILIES = ("sgd", "adam")


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

    ``learning_rate`` is this step's rate when a schedule sets it; the member's
    ``learning_rate`` hyperparameter otherwise. With a ``grad_clip`` hyperparameter the gradient
    is first clipped to that global norm.
    """
    if learning_rate is None:
        learning_rate = hparams["learning_rate"]
    if family == "adam":
        update = adamw(
            learning_rate, hparams["b1"], hparams["b2"], hparams["eps"], hparams["weight_decay"]
        )
    else:
        update = sgdw(learning_rate, hparams["momentum"], hparams["weight_decay"])
    if "grad_clip" in hparams:
        return optax.chain(optax.clip_by_global_norm(hparams["grad_clip"]), update)
    return update


def init_state(params, hparams: Mapping[str, jax.Array] | None = None, family: str = "sgd"):
    """Optimizer state for ``params``: its shape depends on the family and on which
    hyperparameters there are (``grad_clip`` adds a stage), never on their values."""
    coefficients = ("learning_rate", "momentum", "b1", "b2", "eps", "weight_decay")
    zeros = {name: 0.0 for name in (*coefficients, *(hparams or ()))}
    return member_optimizer(zeros, family=family).init(params)
