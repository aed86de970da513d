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
from popjax.augment import augment
from popjax.data import DeviceSplit, make_batch_sampler, sample_batch
from popjax.population import Population

LossFn = Callable[[jax.Array, jax.Array], jax.Array]


def cross_entropy(logits, labels):
    """Mean softmax cross-entropy against integer labels: the default loss."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def squared_error(logits, labels):
    """Mean squared distance between the outputs and one-hot targets (a regression loss)."""
    targets = jax.nn.one_hot(labels, logits.shape[-1])
    return jnp.mean(jnp.sum((logits - targets) ** 2, axis=-1))


LOSSES = {"cross_entropy": cross_entropy, "squared_error": squared_error}


class Metrics(NamedTuple):
    """Per-member figures, each ``[P]``."""

    loss: jax.Array
    accuracy: jax.Array


def constant_learning_rate(hparams, step):
    return hparams["learning_rate"]


# Hyperparameters that need per-example losses, so only the built-in cross-entropy takes them.
PER_EXAMPLE_HPARAMS = ("label_smoothing", "batch_fraction")


# Hyperparameters that change the model's function, passed to ``model.apply`` by name.
MODEL_HPARAMS = ("activation",)


def model_kwargs(hparams) -> dict:
    """What a member's hyperparameters pass to ``model.apply`` besides the dropout rate."""
    return {name: hparams[name] for name in MODEL_HPARAMS if name in hparams}


def make_member_step(model, loss_fn: LossFn, train: DeviceSplit, batch_size: int,
                     learning_rate: Callable = constant_learning_rate, optimizer: str = "sgd"):
    """One step of one member: ``(params, opt_state, hparams, rng, step) -> (..., loss)``.

    ``learning_rate(hparams, step)`` gives the step's rate (see ``popjax.schedules``);
    ``optimizer`` is the family. Each optional hyperparameter in ``hparams`` (see
    ``popjax.space.NEUTRAL_VALUES``) switches its part of the step on.
    """
    sampler = {}

    def sample(key, hparams):
        if "sampling" not in hparams:
            return sample_batch(key, train, batch_size)
        if "balanced" not in sampler:  # built once, when first traced
            sampler["balanced"] = make_batch_sampler(train, batch_size)
        return sampler["balanced"](key, hparams["sampling"])

    def batch_loss(logits, y, hparams):
        if loss_fn is not cross_entropy:
            return loss_fn(logits, y)
        if "label_smoothing" in hparams:
            targets = optax.smooth_labels(jax.nn.one_hot(y, logits.shape[-1]),
                                          hparams["label_smoothing"])
            per_example = optax.softmax_cross_entropy(logits, targets)
        else:
            per_example = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        if "batch_fraction" in hparams:
            # The effective batch: the first ``used`` examples count, the rest are masked out.
            used = jnp.clip(jnp.round(hparams["batch_fraction"] * batch_size), 1, batch_size)
            return jnp.sum(jnp.where(jnp.arange(batch_size) < used, per_example, 0.0)) / used
        return per_example.mean()

    def member_step(params, opt_state, hparams, rng, step):
        rng, batch_key, dropout_key = jax.random.split(rng, 3)
        x, y = sample(batch_key, hparams)
        x = augment(jax.random.fold_in(batch_key, 2), x, hparams)

        def objective(p):
            logits = model.apply({"params": p}, x, dropout_rate=hparams["dropout"], train=True,
                                 rngs={"dropout": dropout_key}, **model_kwargs(hparams))
            loss = batch_loss(logits, y, hparams)
            if "l1" in hparams:
                l1 = sum(jnp.abs(leaf).sum() for leaf in jax.tree_util.tree_leaves(p))
                return loss + hparams["l1"] * l1, loss
            return loss, loss

        (_, loss), grads = jax.value_and_grad(objective, has_aux=True)(params)
        member_optimizer = optim.member_optimizer(hparams, learning_rate(hparams, step),
                                                  optimizer)
        updates, opt_state = member_optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, rng, loss

    return member_step


def make_train_segment(model, loss_fn: LossFn, train: DeviceSplit, batch_size: int, steps: int,
                       learning_rate: Callable = constant_learning_rate, optimizer: str = "sgd"):
    """Trains every member ``steps`` steps: a ``lax.scan`` over the vmapped step.

    Returns ``segment(population) -> (population, mean_train_loss [P])``.
    """
    step_all = jax.vmap(make_member_step(model, loss_fn, train, batch_size, learning_rate,
                                         optimizer))

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
    """``evaluate(params [P, ...], split, hparams) -> Metrics``: every member on the whole split.

    ``hparams`` matters only for what changes the model's function (the activation).
    """

    def member_metrics(params, hparams, split: DeviceSplit):
        logits = model.apply({"params": params}, split.x, train=False, **model_kwargs(hparams))
        accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == split.y)
        return loss_fn(logits, split.y), accuracy

    def evaluate(params, split: DeviceSplit, hparams=None) -> Metrics:
        hparams = model_kwargs(hparams or {})
        loss, accuracy = jax.vmap(member_metrics, in_axes=(0, 0, None))(params, hparams, split)
        return Metrics(loss=loss, accuracy=accuracy)

    return evaluate
