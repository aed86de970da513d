"""PB2's explore (Parker-Holder et al., 2020) as jittable functions: a replaced member's new
hyperparameters maximise an upper confidence bound of a time-varying Gaussian process fitted
to the population's recent (hyperparameters, round) -> fitness improvement.

Hyperparameters live in a unit box for the GP: a log-scaled prior in log space, a choice as
its option's index over the last index (candidates snap to the options, so each option is
scored exactly). Observations sit in fixed-size arrays with a ``valid`` mask, so the
number of rounds seen so far never changes a shape and nothing recompiles.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp

from popjax.space import Choice, Fixed, LogUniform, SearchSpace

JITTER = 1e-6


class Observations(NamedTuple):
    """Each member's last ``W`` rounds for PB2's model, member axis first (it is sharded like
    the members): the unit coordinates of the hyperparameters it trained with, the round, the
    fitness it gained in that round, and whether that gain counts (not the first round, not
    diverged)."""

    x: jax.Array  # [P, W, D]
    t: jax.Array  # [P, W]
    y: jax.Array  # [P, W]
    valid: jax.Array  # [P, W] bool

    @classmethod
    def empty(cls, size: int, window: int, dims: int) -> Observations:
        return cls(
            jnp.zeros((size, window, dims), jnp.float32),
            jnp.zeros((size, window), jnp.float32),
            jnp.zeros((size, window), jnp.float32),
            jnp.zeros((size, window), bool),
        )

    def added(self, x, t, y, valid) -> Observations:
        """The window moved on by one round: ``x [P, D]``, ``t`` a scalar, ``y`` and
        ``valid`` ``[P]``; the oldest round drops out."""

        def push(old, new):
            return jnp.concatenate([old[:, 1:], new[:, None]], axis=1)

        t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), self.t.shape[:1])
        valid = valid & jnp.isfinite(y)
        return Observations(
            push(self.x, x), push(self.t, t), push(self.y, jnp.where(valid, y, 0.0)),
            push(self.valid, valid),
        )  # fmt: skip

    def flat(self):
        """``(x [N, D], t [N], y [N], valid [N])`` with ``N = P * W``, as ``propose`` takes."""
        dims = self.x.shape[-1]
        return self.x.reshape(-1, dims), self.t.ravel(), self.y.ravel(), self.valid.ravel()


def searched(space: SearchSpace) -> list[str]:
    """The names of the hyperparameters PB2 chooses (the fixed ones are left alone)."""
    return [name for name, prior in space.priors.items() if not isinstance(prior, Fixed)]


def to_unit(hparams: Mapping[str, jax.Array], space: SearchSpace) -> jax.Array:
    """``[..., D]`` coordinates in [0, 1] of the searched hyperparameters, in ``searched``'s
    order."""
    columns = []
    for name in searched(space):
        value, prior = jnp.asarray(hparams[name], jnp.float32), space.priors[name]
        if isinstance(prior, Choice):
            last = max(len(prior.values) - 1, 1)
            columns.append(prior.index_of(value).astype(jnp.float32) / last)
        elif isinstance(prior, LogUniform):
            low, high = math.log(prior.low), math.log(prior.high)
            columns.append((jnp.log(value) - low) / (high - low))
        else:
            columns.append((value - prior.low) / (prior.high - prior.low))
    return jnp.clip(jnp.stack(columns, axis=-1), 0.0, 1.0)


def from_unit(unit: jax.Array, space: SearchSpace) -> dict[str, jax.Array]:
    """The hyperparameter values at ``[..., D]`` unit coordinates; choices snap to an option."""
    values = {}
    for column, name in enumerate(searched(space)):
        u, prior = unit[..., column], space.priors[name]
        if isinstance(prior, Choice):
            index = jnp.round(u * (len(prior.values) - 1)).astype(jnp.int32)
            values[name] = jnp.asarray(prior.values, jnp.float32)[index]
        elif isinstance(prior, LogUniform):
            low, high = math.log(prior.low), math.log(prior.high)
            values[name] = jnp.exp(low + u * (high - low))
        else:
            values[name] = prior.low + u * (prior.high - prior.low)
    return values


def snap(unit: jax.Array, space: SearchSpace) -> jax.Array:
    """``unit`` with each choice's coordinate moved to its nearest option."""
    columns = []
    for column, name in enumerate(searched(space)):
        u, prior = unit[..., column], space.priors[name]
        if isinstance(prior, Choice) and len(prior.values) > 1:
            last = len(prior.values) - 1
            u = jnp.round(u * last) / last
        columns.append(u)
    return jnp.stack(columns, axis=-1)


def kernel(x1, t1, x2, t2, lengthscale, forgetting):
    """The time-varying kernel: a squared exponential in the hyperparameters times
    ``(1 - forgetting) ** (|t1 - t2| / 2)``, so older observations count less."""
    scaled = (x1[:, None, :] - x2[None, :, :]) / lengthscale
    space_part = jnp.exp(-0.5 * jnp.sum(scaled**2, axis=-1))
    time_part = (1.0 - forgetting) ** (jnp.abs(t1[:, None] - t2[None, :]) / 2.0)
    return space_part * time_part


# Cholesky factors and triangular solves in plain XLA operations: on CPU devices, LAPACK's
# (what jnp.linalg calls) can wait forever for threads that another device's part of the
# round holds. The matrices are small (the population times the window), so loops suffice.


def cholesky(matrix):
    """The lower Cholesky factor of a symmetric positive definite ``[N, N]`` matrix."""
    size = matrix.shape[0]
    index = jnp.arange(size)

    def column(j, lower):
        known = jnp.where(index < j, lower[j], 0.0)  # row j's entries left of the diagonal
        rest = matrix[:, j] - lower @ known
        pivot = jnp.sqrt(jnp.maximum(rest[j], JITTER))
        return lower.at[:, j].set(jnp.where(index > j, rest / pivot, 0.0).at[j].set(pivot))

    return jax.lax.fori_loop(0, size, column, jnp.zeros_like(matrix))


def solve_lower(lower, right):
    """``x`` with ``lower @ x = right``, ``lower`` lower triangular; ``right`` ``[N]`` or
    ``[N, Q]``."""

    def row(i, x):  # rows of x from i on are still 0
        return x.at[i].set((right[i] - lower[i] @ x) / lower[i, i])

    return jax.lax.fori_loop(0, right.shape[0], row, jnp.zeros_like(right))


def solve_upper_transposed(lower, right):
    """``x`` with ``lower.T @ x = right``."""
    size = right.shape[0]

    def row(k, x):  # rows of x up to i are still 0
        i = size - 1 - k
        return x.at[i].set((right[i] - lower[:, i] @ x) / lower[i, i])

    return jax.lax.fori_loop(0, size, row, jnp.zeros_like(right))


def cholesky_solve(lower, right):
    """``x`` with ``lower @ lower.T @ x = right``."""
    return solve_upper_transposed(lower, solve_lower(lower, right))


def _masked_gram(x, t, valid, lengthscale, forgetting, noise):
    """The Gram matrix of the valid observations plus noise; an invalid one is decoupled
    (a 1 on the diagonal, 0 elsewhere), which leaves the posterior of the valid ones as is."""
    both = valid[:, None] & valid[None, :]
    gram = jnp.where(both, kernel(x, t, x, t, lengthscale, forgetting), 0.0)
    diagonal = jnp.where(valid, noise + JITTER, 1.0)
    return gram + jnp.diag(diagonal)


def posterior(x, t, y, valid, x_query, t_query, lengthscale, forgetting, noise):
    """The GP's posterior mean ``[Q]`` and covariance ``[Q, Q]`` at the queries, given the
    ``valid`` observations ``(x [N, D], t [N]) -> y [N]`` (a zero-mean prior of unit scale)."""
    chol = cholesky(_masked_gram(x, t, valid, lengthscale, forgetting, noise))
    cross = jnp.where(valid[:, None], kernel(x, t, x_query, t_query, lengthscale, forgetting), 0)
    alpha = cholesky_solve(chol, jnp.where(valid, y, 0.0))
    mean = cross.T @ alpha
    half = solve_lower(chol, cross)
    prior = kernel(x_query, t_query, x_query, t_query, lengthscale, forgetting)
    return mean, prior - half.T @ half


def log_marginal_likelihood(x, t, y, valid, lengthscale, forgetting, noise):
    """``log p(y | x, t)`` of the valid observations."""
    chol = cholesky(_masked_gram(x, t, valid, lengthscale, forgetting, noise))
    y = jnp.where(valid, y, 0.0)
    alpha = cholesky_solve(chol, y)
    log_det = 2.0 * jnp.sum(jnp.where(valid, jnp.log(jnp.diagonal(chol)), 0.0))
    count = jnp.sum(valid)
    return -0.5 * (y @ alpha) - 0.5 * log_det - 0.5 * count * math.log(2.0 * math.pi)


def standardized(y, valid):
    """``y`` with mean 0 and standard deviation 1 over the valid entries."""
    count = jnp.maximum(jnp.sum(valid), 1)
    mean = jnp.sum(jnp.where(valid, y, 0.0)) / count
    spread = jnp.sqrt(jnp.sum(jnp.where(valid, (y - mean) ** 2, 0.0)) / count)
    return jnp.where(valid, (y - mean) / jnp.where(spread > 0, spread, 1.0), 0.0)


def fitted_settings(x, t, y, valid, lengthscales, forgettings, noise):
    """The lengthscale and forgetting of the given grids that best explain the data (the
    largest marginal likelihood)."""
    grid_l, grid_f = jnp.meshgrid(jnp.asarray(lengthscales), jnp.asarray(forgettings))
    grid_l, grid_f = grid_l.ravel(), grid_f.ravel()
    scores = jax.vmap(lambda ls, f: log_marginal_likelihood(x, t, y, valid, ls, f, noise))(
        grid_l, grid_f
    )
    best = jnp.argmax(jnp.where(jnp.isfinite(scores), scores, -jnp.inf))
    return grid_l[best], grid_f[best]


def choose_batch(mean, covariance, count_limit, kappa, noise):
    """Indices of the candidates picked one after another by UCB, ``mean + kappa * std``;
    after each pick the covariance is conditioned on an observation there (its mean stays),
    so the next pick goes where the GP is still unsure (GP-BUCB). Picks ``count_limit``
    candidates, a static number; the caller uses as many as it needs."""

    def pick(covariance, _):
        spread = jnp.sqrt(jnp.maximum(jnp.diagonal(covariance), 0.0))
        best = jnp.argmax(mean + kappa * spread)
        column = covariance[:, best]
        covariance = covariance - jnp.outer(column, column) / (column[best] + noise)
        return covariance, best

    _, picks = jax.lax.scan(pick, covariance, None, length=count_limit)
    return picks


def propose(
    key,
    observations,
    hparams: Mapping[str, jax.Array],
    space: SearchSpace,
    replaced,
    now,
    kappa: float = 2.0,
    random_candidates: int = 256,
    local_candidates: int = 4,
    local_spread: float = 0.1,
    noise: float = 0.1,
    lengthscales=(0.1, 0.2, 0.5, 1.0),
    forgettings=(0.0, 0.1, 0.3),
):
    """New hyperparameters for the ``replaced`` members (``[P]`` bool); the others keep theirs.

    ``observations`` is ``(x [N, D] unit coordinates, t [N] rounds, y [N] fitness improvement,
    valid [N] bool)``; ``now`` is the round the new values will train in. The candidates are
    uniform draws over the box plus a few near each member's present values (those it copied);
    the replaced members take the UCB picks in member order. Returns ``(hparams, any_data)``:
    with no valid observation yet the GP knows nothing, and the caller explores another way.
    """
    x, t, y, valid = observations
    size = replaced.shape[0]
    dims = x.shape[-1]
    y = standardized(y, valid)
    lengthscale, forgetting = fitted_settings(x, t, y, valid, lengthscales, forgettings, noise)

    uniform_key, local_key = jax.random.split(key)
    present = to_unit(hparams, space)
    near = present[:, None, :] + local_spread * jax.random.normal(
        local_key, (size, local_candidates, dims)
    )
    candidates = jnp.concatenate(
        [jax.random.uniform(uniform_key, (random_candidates, dims)), near.reshape(-1, dims)]
    )
    candidates = snap(jnp.clip(candidates, 0.0, 1.0), space)
    now = jnp.full(candidates.shape[0], now, jnp.float32)
    mean, covariance = posterior(x, t, y, valid, candidates, now, lengthscale, forgetting, noise)
    picks = choose_batch(mean, covariance, size, kappa, noise)
    order = jnp.clip(jnp.cumsum(replaced) - 1, 0, size - 1)  # the i-th replaced member
    chosen = from_unit(candidates[picks[order]], space)
    new = {
        name: jnp.where(replaced, chosen[name], value) if name in chosen else value
        for name, value in hparams.items()
    }
    return new, jnp.any(valid)
