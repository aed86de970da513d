"""Any task's members trained together: the vmapped step, the scanned segment, evaluation.

``vmap`` is applied once, here, so a member's step reads only its own state, hyperparameters
and key stream. Each call of a task function gets a fresh key split from the member's stream.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from popjax.population import Population

# Folded into a member's key stream for its test evaluation, which must not advance the stream.
TEST_KEY_DATA = 0x7E57


def _data_args(task, split):
    return (split,) if task.data is not None else ()


def make_segment(task, steps: int):
    """``segment(population, train_data) -> (population, metrics {name: [P]})``.

    Trains every member ``steps`` steps: a ``lax.scan`` over the vmapped ``task.train``; each
    metric is averaged over the steps.
    """

    def member_step(state, hparams, rng, step, train_data):
        rng, key = jax.random.split(rng)
        state, metrics = task.train(state, hparams, key, step, *_data_args(task, train_data))
        return state, rng, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}

    step_all = jax.vmap(member_step, in_axes=(0, 0, 0, 0, None))

    def segment(population: Population, train_data=None):
        def body(carry, offset):
            state, rng = carry
            state, rng, metrics = step_all(
                state, population.hparams, rng, population.step + offset, train_data
            )
            return (state, rng), metrics

        (state, rng), metrics = jax.lax.scan(
            body, (population.state, population.rng), jnp.arange(steps)
        )
        population = population._replace(state=state, rng=rng, step=population.step + steps)
        return population, {k: v.mean(axis=0) for k, v in metrics.items()}

    return segment


def make_evaluate(task):
    """``evaluate(population, split, advance=True) -> (population, metrics {name: [P]})``.

    Every member's ``task.evaluate`` on ``split``. ``advance`` draws the members' keys from
    their streams (the round's validation); otherwise a key is derived without advancing them
    (the final test, which must leave the population as it was).
    """

    def member_evaluate(state, hparams, rng, split, advance: bool):
        if advance:
            rng, key = jax.random.split(rng)
        else:
            key = jax.random.fold_in(rng, TEST_KEY_DATA)
        metrics = task.evaluate(state, hparams, key, *_data_args(task, split))
        return rng, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}

    def evaluate(population: Population, split=None, advance: bool = True):
        rng, metrics = jax.vmap(
            lambda state, hparams, rng, split: member_evaluate(state, hparams, rng, split, advance),
            in_axes=(0, 0, 0, None),
        )(population.state, population.hparams, population.rng, split)
        return population._replace(rng=rng), metrics

    return evaluate
