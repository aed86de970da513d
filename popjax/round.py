"""The compiled round: PBT, then ``interval`` training steps of every member, then validation.

One jitted call per round; the round index is traced, so every round runs the same program.
``Standing`` is what each member carries between rounds for PBT and early stopping to read.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from popjax.config import SweepConfig
from popjax.pbt import pbt_step
from popjax.population import Population
from popjax.schedules import learning_rate_at
from popjax.train import make_evaluate, make_train_segment


class RoundOutput(NamedTuple):
    """What a round reports for each member, all ``[P]``."""

    source: jax.Array  # the member it copied at the round's start (itself if kept)
    train_loss: jax.Array
    val_loss: jax.Array
    val_accuracy: jax.Array
    fitness: jax.Array
    stopped: jax.Array  # early-stopped: frozen this round, replaced first at the next


class Standing(NamedTuple):
    """Each member's record across rounds, all ``[P]``: what PBT and early stopping read."""

    fitness: jax.Array  # the last validation figure; -inf if diverged
    best: jax.Array  # the best so far of the weights it carries
    stale: jax.Array  # rounds since ``best`` last improved

    @classmethod
    def initial(cls, size: int) -> "Standing":
        return cls(jnp.zeros(size, jnp.float32), jnp.full(size, -jnp.inf, jnp.float32),
                   jnp.zeros(size, jnp.int32))


def make_round(model, loss_fn, train, val, config: SweepConfig, pbt_key):
    """``round(population, standing, round_index) -> (population, standing, RoundOutput)``.

    The round index is traced, so every round runs the same compiled program.
    """
    schedule, total_steps = config.space.schedule, config.steps

    def learning_rate(hparams, step):
        return learning_rate_at(schedule, hparams, step, total_steps)

    segment = make_train_segment(model, loss_fn, train, config.batch_size, config.interval,
                                 learning_rate, config.space.optimizer)
    evaluate = make_evaluate(model, loss_fn)

    def round_fn(population: Population, standing: Standing, round_index):
        stopped = early_stopped(population.hparams, standing)
        if config.pbt.enabled:
            # Stopped members rank as diverged: replaced first, never copied. The first round
            # has no fitness yet to select on.
            fitness = jnp.where(stopped, -jnp.inf, standing.fitness)
            population, source, replaced = pbt_step(
                jax.random.fold_in(pbt_key, round_index), population, fitness, config.space,
                config.pbt, active=round_index > 0)
            standing = Standing(standing.fitness, jnp.where(replaced, standing.best[source],
                                                            standing.best),
                                jnp.where(replaced, 0, standing.stale))
            stopped = stopped & ~replaced
        else:
            source = jnp.arange(population.size, dtype=jnp.int32)
        trained, train_loss = segment(population)
        if "patience" in population.hparams:  # a stopped member stays frozen as it was
            trained = jax.tree_util.tree_map(
                lambda new, old: jnp.where(stopped.reshape((-1,) + (1,) * (new.ndim - 1)),
                                           old, new), trained, population)
        population = trained
        metrics = evaluate(population.params, val, population.hparams)
        fitness = metrics.accuracy if config.metric == "accuracy" else -metrics.loss
        # NaN weights still give an accuracy (argmax of NaN logits); the loss tells.
        diverged = ~(jnp.isfinite(train_loss) & jnp.isfinite(metrics.loss))
        fitness = jnp.where(diverged, -jnp.inf, fitness)
        improved = fitness > standing.best
        standing = Standing(fitness, jnp.maximum(fitness, standing.best),
                            jnp.where(improved, 0, standing.stale + 1))
        return population, standing, RoundOutput(source, train_loss, metrics.loss,
                                                 metrics.accuracy, fitness, stopped)

    return round_fn


def early_stopped(hparams, standing: Standing):
    """Members whose validation figure has not improved for ``patience`` rounds."""
    if "patience" not in hparams:
        return jnp.zeros(standing.stale.shape, bool)
    return standing.stale >= hparams["patience"]
