"""Optimizers whose hyperparameters are read from the member's own arrays at every step.

The optimizer is rebuilt inside the traced step from the member's hyperparameters, so its state
holds only moments and the hyperparameters have one home: ``Population.hparams``. PBT changes
them by writing arrays, which never retraces the step.
"""

from __future__ import annotations

from typing import Mapping

import jax
import optax


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


def member_optimizer(hparams: Mapping[str, jax.Array],
                     learning_rate=None) -> optax.GradientTransformation:
    """The optimizer of one member, built from its (traced, scalar) hyperparameters.

    ``learning_rate`` is this step's rate when a schedule sets it; the member's
    ``learning_rate`` hyperparameter otherwise.
    """
    if learning_rate is None:
        learning_rate = hparams["learning_rate"]
    return sgdw(learning_rate, hparams["momentum"], hparams["weight_decay"])


def init_state(params):
    """Optimizer state for ``params``: its shape never depends on hyperparameter values."""
    return sgdw(0.0, 0.0, 0.0).init(params)
