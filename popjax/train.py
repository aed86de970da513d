"""Any task's members trained together: the vmapped step, the scanned segment, evaluation.

``vmap`` is applied once, here, so a member's step reads only its own state, hyperparameters
and key stream. Each call of a task function gets a fresh key split from the member's stream.
A population too large for the device's memory runs in slices of members, one after another
(``in_slices``): the same members, the same keys, the same results.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from popjax.population import Population

# Folded into a member's key stream for its test evaluation, which must not advance the stream.
TEST_KEY_DATA = 0x7E57


def _data_args(task, split):
    return (split,) if task.data is not None else ()


def in_slices(fn, slices: int = 1, shards: int = 1):
    """``fn(population, *shared) -> (population, {name: [P]})`` run on ``slices`` slices of the
    members one after another, so that only one slice's temporaries (activations, gradients)
    are live at a time.

    Each slice takes ``P / (slices * shards)`` members from each of the ``shards`` blocks the
    member axis is split into over devices, so every device works on its own members in every
    slice. The population is updated in place, slice by slice, in a ``fori_loop``.
    """
    if slices == 1:
        return fn

    # [P, ...] seen as [shards, slices, members of a slice on one shard, ...]: slice ``index``
    # is ``[:, index]``, a cut along an axis that is not split over devices.
    def split(a):
        return a.reshape((shards, slices, -1) + a.shape[1:])

    def take(a, index):
        part = jax.lax.dynamic_index_in_dim(a, index, axis=1, keepdims=False)
        return part.reshape((-1,) + part.shape[2:])

    def put(whole, part, index):
        part = part.reshape((shards, 1, -1) + part.shape[1:])
        return jax.lax.dynamic_update_slice_in_dim(whole, part, index, axis=1)

    def sliced(population: Population, *shared):
        size = population.size
        if size % (slices * shards):
            raise ValueError(f"{size} members do not split into {slices} x {shards} slices")
        whole = jax.tree_util.tree_map(split, population)
        _, metrics_shape = jax.eval_shape(
            fn, jax.tree_util.tree_map(lambda a: take(a, 0), whole), *shared
        )
        metrics = jax.tree_util.tree_map(
            lambda m: jnp.zeros((shards, slices, m.shape[0] // shards) + m.shape[1:], m.dtype),
            metrics_shape,
        )

        def body(index, carry):
            whole, metrics = carry
            part, part_metrics = fn(
                jax.tree_util.tree_map(lambda a: take(a, index), whole), *shared
            )
            return (
                jax.tree_util.tree_map(lambda w, p: put(w, p, index), whole, part),
                jax.tree_util.tree_map(lambda w, p: put(w, p, index), metrics, part_metrics),
            )

        whole, metrics = jax.lax.fori_loop(0, slices, body, (whole, metrics))
        return jax.tree_util.tree_map(lambda a: a.reshape((-1,) + a.shape[3:]), (whole, metrics))

    return sliced


def make_segment(task, steps: int, slices: int = 1, shards: int = 1, hparams_at=None):
    """``segment(population, train_data) -> (population, metrics {name: [P]})``.

    Trains every member ``steps`` steps: a ``lax.scan`` over the vmapped ``task.train``; each
    metric is averaged over the steps. the members run in ``slices`` slices, one after another
    (see ``in_slices``). ``hparams_at(hparams, step)``, if given, is what ``task.train`` sees
    of a member's hyperparameters at ``step`` (its schedules applied).
    """

    def member_step(state, hparams, rng, step, train_data):
        rng, key = jax.random.split(rng)
        if hparams_at is not None:
            hparams = hparams_at(hparams, step)
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

    return in_slices(segment, slices, shards)


def make_evaluate(task, slices: int = 1, shards: int = 1):
    """``evaluate(population, split, advance=True) -> (population, metrics {name: [P]})``.

    Every member's ``task.evaluate`` on ``split``. ``advance`` draws the members' keys from
    their streams (the round's validation); otherwise a key is derived without advancing them
    (the final test, which must leave the population as it was). ``slices`` as for
    ``make_segment``.
    """

    def member_evaluate(state, hparams, rng, split, advance: bool):
        if advance:
            rng, key = jax.random.split(rng)
        else:
            key = jax.random.fold_in(rng, TEST_KEY_DATA)
        metrics = task.evaluate(state, hparams, key, *_data_args(task, split))
        return rng, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}

    def evaluate_all(population: Population, split, advance: bool):
        rng, metrics = jax.vmap(
            lambda state, hparams, rng, split: member_evaluate(state, hparams, rng, split, advance),
            in_axes=(0, 0, 0, None),
        )(population.state, population.hparams, population.rng, split)
        return population._replace(rng=rng), metrics

    def evaluate(population: Population, split=None, advance: bool = True):
        return in_slices(lambda p, s: evaluate_all(p, s, advance), slices, shards)(
            population, split
        )

    return evaluate
