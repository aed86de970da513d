"""The vmapped train step, the scanned training segment, and evaluation.

Everything here is a pure function on a ``Population``; ``vmap`` is applied once, here, so a
member's step reads only its own weights, hyperparameters and key stream.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from popjax import optim
from popjax.data import DeviceSplit, sample_batch
from popjax.population import Population

LossFn = Callable[[jax.Array, jax.Array], jax.Array]


def cross_entropy(logits, labels):
    """Mean softmax cross-entropy against integer labels: the default loss."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


class Metrics(NamedTuple):
    """Per-member figures, each ``[P]``."""

    loss: jax.Array
    accuracy: jax.Array


def constant_learning_rate(hparams, step):
    return hparams["learning_rate"]


def make_member_step(model, loss_fn: LossFn, train: DeviceSplit, batch_size: int,
                     learning_rate: Callable = constant_learning_rate):
    """One SGD step of one member: ``(params, opt_state, hparams, rng, step) -> (..., loss)``.

    ``learning_rate(hparams, step)`` gives the step's rate (see ``popjax.schedules``).
    """

    def member_step(params, opt_state, hparams, rng, step):
        rng, batch_key, dropout_key = jax.random.split(rng, 3)
        x, y = sample_batch(batch_key, train, batch_size)

        def batch_loss(p):
            logits = model.apply({"params": p}, x, dropout_rate=hparams["dropout"], train=True,
                                 rngs={"dropout": dropout_key})
            return loss_fn(logits, y)

        loss, grads = jax.value_and_grad(batch_loss)(params)
        optimizer = optim.member_optimizer(hparams, learning_rate(hparams, step))
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, rng, loss

    return member_step


def make_train_segment(model, loss_fn: LossFn, train: DeviceSplit, batch_size: int, steps: int,
                       learning_rate: Callable = constant_learning_rate):
    """Trains every member ``steps`` steps: a ``lax.scan`` over the vmapped step.

    Returns ``segment(population) -> (population, mean_train_loss [P])``.
    """
    step_all = jax.vmap(make_member_step(model, loss_fn, train, batch_size, learning_rate))

    def segment(population: Population):
        def body(carry, offset):
            params, opt_state, rng = carry
            params, opt_state, rng, loss = step_all(params, opt_state, population.hparams, rng,
                                                    population.step + offset)
            return (params, opt_state, rng), loss

        carry = (population.params, population.opt_state, population.rng)
        (params, opt_state, rng), losses = jax.lax.scan(body, carry, jnp.arange(steps))
        population = population._replace(
            params=params, opt_state=opt_state, rng=rng, step=population.step + steps
        )
        return population, losses.mean(axis=0)

    return segment


def make_evaluate(model, loss_fn: LossFn):
    """``evaluate(params [P, ...], split) -> Metrics``: every member on the whole split."""

    def member_metrics(params, split: DeviceSplit):
        logits = model.apply({"params": params}, split.x, train=False)
        accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == split.y)
        return loss_fn(logits, split.y), accuracy

    def evaluate(params, split: DeviceSplit) -> Metrics:
        loss, accuracy = jax.vmap(member_metrics, in_axes=(0, None))(params, split)
        return Metrics(loss=loss, accuracy=accuracy)

    return evaluate
