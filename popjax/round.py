"""The compiled round: PBT, then ``interval`` training steps of every member, then validation.

One jitted call per round; the round index is traced, so every round runs the same program.
The task's data comes in as an argument, never as constants baked into the program.
``SelectionState`` is what each member carries between rounds for PBT and early stopping to read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp

from popjax import halving, pb2
from popjax.halving import at_rung, restart_members
from popjax.pbt import pbt_step
from popjax.population import Population, init_members, member_keys, strongly_typed
from popjax.schedules import at_step
from popjax.train import make_evaluate, make_segment

if TYPE_CHECKING:
    from popjax.pbt_settings import PBTConfig
    from popjax.space import SearchSpace
    from popjax.task import Task


class RoundOutput(NamedTuple):
    """What a round reports for each member, all ``[P]``."""

    parents: (
        jax.Array
    )  # each member's parent: the member it copied at the round's start (itself if kept)
    train: dict  # each training metric, averaged over the round's steps
    val: dict  # each metric of the task's evaluate on the validation data
    fitness: jax.Array  # what PBT selects on, higher is better; -inf if diverged
    stopped: jax.Array  # early-stopped: frozen this round, replaced first at the next
    restarted: jax.Array  # began again as a new trial at the round's start (halving)


class SelectionState(NamedTuple):
    """Each member's record across rounds, all ``[P]``: what PBT and early stopping read."""

    fitness: jax.Array  # the last validation figure; -inf if diverged
    best: jax.Array  # the best so far of the weights it carries
    stale: jax.Array  # rounds since ``best`` last improved
    observed: pb2.Observations | None = None  # what PB2 learns from, when it explores
    rungs: halving.RungRecords | None = None  # what successive halving judges trials against

    @classmethod
    def initial(
        cls,
        size: int,
        space: SearchSpace | None = None,
        pbt: PBTConfig | None = None,
        rounds: int | None = None,
    ) -> SelectionState:
        """Before the first round; with PB2's (empty) observations if ``pbt`` explores so, and
        successive halving's (empty) rung records for a run of ``rounds`` if it restarts
        trials."""
        observed = records = None
        if pbt is not None and pbt.enabled and pbt.explore == "pb2":
            observed = pb2.Observations.empty(size, pbt.window, len(pb2.searched(space)))
        if pbt is not None and pbt.enabled and restarts_trials(pbt):
            if rounds is None:
                raise ValueError("successive halving's rung records need the run's rounds")
            records = halving.RungRecords.empty(size, pbt.rungs, rounds)
        return cls(
            jnp.zeros(size, jnp.float32),
            jnp.full(size, -jnp.inf, jnp.float32),
            jnp.zeros(size, jnp.int32),
            observed,
            records,
        )


def restarts_trials(pbt: PBTConfig) -> bool:
    """Whether ``pbt`` is successive halving that begins stopped slots again from the priors
    (ASHA's random search); with copies it is PBT at the rungs."""
    return pbt.exploit == "halving" and pbt.restart == "prior"


class Selected(NamedTuple):
    """What a round's selection hands its training, all ``[P]``."""

    parents: jax.Array  # each member's parent (itself if kept)
    restarted: jax.Array  # began again as a new trial (halving)
    stopped: jax.Array  # early-stopped: frozen this round
    start_fitness: jax.Array  # the fitness of the weights each member trains on this round


def make_round(*args, **kwargs):
    """``round(population, selection, round_index, data) -> (population, selection, output)``:
    ``make_round_parts``'s selection, then its training, as one function to compile (arguments
    as there). One program, not two: XLA's CPU compiler keeps about 1.6 cores busy with one
    program, so the default round's two parts compiled side by side took 2.0-2.1 s against
    2.3 s for the round, on two cores."""
    select_fn, train_fn = make_round_parts(*args, **kwargs)

    def round_fn(
        population: Population, selection: SelectionState, round_index, data=None, key=None
    ):
        population, selection, selected = select_fn(population, selection, round_index, data, key)
        population, selection, output = train_fn(population, selection, selected, round_index, data)
        # What the round gives back, it takes at its next call: the same types, one program.
        return *strongly_typed((population, selection)), output

    return round_fn


def make_round_parts(
    task: Task,
    interval: int,
    space: SearchSpace,
    pbt: PBTConfig,
    pbt_key,
    slices: int = 1,
    mesh=None,
    total_steps: int | None = None,
):
    """``(select_fn, train_fn)``: a round as two functions, its selection and its training.

    - ``select_fn(population, selection, round_index, data, key) -> (population, selection,
      selected)``: PBT's exploit and explore (or successive halving's restarts) and early
      stopping; what it chose is ``selected``, a ``Selected``.
    - ``train_fn(population, selection, selected, round_index, data) -> (population,
      selection, output)``: ``interval`` training steps of every member, then validation.

    ``data`` is the task's ``TaskData`` (None for a task without data). The round index is
    traced, so every round runs the same compiled program. ``mesh``: the devices the member
    axis is split over, if several. Training and validation run ``slices`` slices of the
    members one after another, each spread over those devices (see
    ``popjax.train.in_slices``). ``total_steps``: the run's length, which the space's schedules
    decay over (needed when it has any). ``key``, if given to ``select_fn``, replaces
    ``pbt_key``: a key passed as an argument rather than compiled in, so another seed runs the
    same program.
    """
    shards = mesh.size if mesh is not None else 1
    hparams_at = None
    if space.scheduled():
        if total_steps is None:
            raise ValueError("a space with schedules needs the run's total_steps")

        def hparams_at(hparams, step):
            return at_step(hparams, space.scheduled(), step, total_steps)

    segment = make_segment(task, interval, slices, shards, hparams_at)
    evaluate = make_evaluate(task, slices, shards)

    def select_fn(
        population: Population, selection: SelectionState, round_index, data=None, key=None
    ):
        stopped = early_stopped(population.hparams, selection)
        start_fitness = selection.fitness  # of the weights each member trains on this round
        identity = jnp.arange(population.size, dtype=jnp.int32)
        parents, restarted = identity, jnp.zeros(population.size, bool)
        if pbt.enabled:
            # Stopped members rank as diverged: replaced first, never copied. The first round
            # has no fitness to select on yet, nor has any round within the burn-in.
            fitness = jnp.where(stopped, -jnp.inf, selection.fitness)
            key = jax.random.fold_in(pbt_key if key is None else key, round_index)
            if restarts_trials(pbt):
                # A trial's own rounds: a restart set its step count back to 0.
                age = population.step // interval
                halted, records = halving.judge(
                    selection.rungs, age, fitness, pbt.rungs, pbt.fraction
                )
                restarted = (halted | ~jnp.isfinite(fitness)) & (round_index > 0)
                train_data = data.train if data is not None else None

                def fresh_state(key, hparams):
                    keys = member_keys(key, population.size)
                    return init_members(task, keys, hparams, train_data).state

                population = restart_members(key, population, restarted, space, fresh_state)
                replaced = restarted
                start_fitness = jnp.where(restarted, jnp.nan, selection.fitness)
                selection = selection._replace(
                    best=jnp.where(restarted, -jnp.inf, selection.best),
                    stale=jnp.where(restarted, 0, selection.stale),
                    rungs=records,
                )
            else:
                # With copies every member is as old as the run: its rungs are the run's rounds.
                rung = at_rung(round_index, pbt.rungs) if pbt.exploit == "halving" else True
                population, parents, replaced = pbt_step(
                    key,
                    population,
                    fitness,
                    space,
                    pbt,
                    active=(round_index > 0) & (round_index * interval >= pbt.burn_in),
                    mesh=mesh,
                    observations=selection.observed,
                    now=round_index,
                    rung=rung,
                )
                start_fitness = jnp.where(replaced, selection.fitness[parents], selection.fitness)
                selection = selection._replace(
                    best=jnp.where(replaced, selection.best[parents], selection.best),
                    stale=jnp.where(replaced, 0, selection.stale),
                )
            stopped = stopped & ~replaced
        return population, selection, Selected(parents, restarted, stopped, start_fitness)

    def train_fn(
        population: Population,
        selection: SelectionState,
        selected: Selected,
        round_index,
        data=None,
    ):
        parents, restarted, stopped, start_fitness = selected
        trained, train_metrics = segment(population, data.train if data is not None else None)
        if "patience" in population.hparams:  # a stopped member stays frozen as it was
            trained = jax.tree_util.tree_map(
                lambda new, old: jnp.where(
                    stopped.reshape((-1,) + (1,) * (new.ndim - 1)), old, new
                ),
                trained,
                population,
            )
        population, val_metrics = evaluate(trained, data.val if data is not None else None)
        value = val_metrics[task.fitness]
        fitness = -value if task.minimize else value
        # NaN weights may still give a finite metric (argmax of NaN logits); any non-finite
        # figure marks the member as diverged.
        diverged = jnp.zeros(population.size, bool)
        for metric in (*train_metrics.values(), *val_metrics.values()):
            diverged = diverged | ~jnp.isfinite(metric)
        fitness = jnp.where(diverged, -jnp.inf, fitness)
        improved = fitness > selection.best
        observed = selection.observed
        if observed is not None:  # the gain of each member's hyperparameters this round
            observed = observed.added(
                pb2.to_unit(population.hparams, space),
                round_index,
                fitness - start_fitness,
                (round_index > 0) & ~stopped,
            )
        selection = SelectionState(
            fitness,
            jnp.maximum(fitness, selection.best),
            jnp.where(improved, 0, selection.stale + 1),
            observed,
            selection.rungs,
        )
        return (
            population,
            selection,
            RoundOutput(parents, train_metrics, val_metrics, fitness, stopped, restarted),
        )

    return select_fn, train_fn


def early_stopped(hparams, selection: SelectionState):
    """Members whose validation figure has not improved for ``patience`` rounds."""
    if "patience" not in hparams:
        return jnp.zeros(selection.stale.shape, bool)
    return selection.stale >= hparams["patience"]
