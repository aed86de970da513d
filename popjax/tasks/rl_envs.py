"""Environments for PPO, gymnax's and Brax's behind one interface (``Environments``): a batch of
environments that reset themselves, and that tell an episode's end by termination apart from
its end at the time limit (truncation), with the observation the episode ended on.

PPO bootstraps a truncated episode from that last observation: the environment did not end,
only the episode did. gymnax (1.0) reports ``terminated`` and ``truncated`` apart and keeps the
last observation in ``info["final_observation"]``; Brax's ``EpisodeWrapper`` marks truncation
in ``state.info["truncation"]``, and ``FinalObservation`` keeps the observation before its
``AutoResetWrapper`` replaces it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from popjax.errors import PopjaxError

BRAX_PREFIX = "brax:"
BRAX_BACKENDS = ("spring", "positional", "generalized", "mjx")
# Fastest on a CPU of those that ship with Brax (inverted_pendulum, 4 environments: spring
# 85k steps/s, positional 20k, generalized 19k on 2 cores); Brax's envs default to generalized.
BRAX_DEFAULT_BACKEND = "spring"


class Environments(NamedTuple):
    """A batch of self-resetting environments, as pure functions.

    Attributes:
      reset: ``reset(keys [n, 2]) -> (obs [n, ...], env_state)``.
      step: ``step(keys [n, 2], env_state, action [n, ...]) -> (obs, env_state, reward,
        terminated, truncated, final_obs)``; ``obs`` starts the next episode where one ended,
        ``final_obs`` is the observation the ended one reached (``obs`` elsewhere); rewards and
        flags are float32 ``[n]``.
      obs_shape: one observation's shape.
      num_actions: the number of discrete actions, or None for continuous ones.
      action_shape: one continuous action's shape (``()`` for discrete actions).
      max_episode: the longest episode, in steps (evaluation plays this many).
    """

    reset: Callable
    step: Callable
    obs_shape: tuple
    num_actions: int | None
    action_shape: tuple
    max_episode: int


def make_env(env_name: str):
    """A gymnax environment and its parameters; a one-line error if gymnax or the name is
    missing."""
    try:
        import gymnax
    except ImportError as error:
        raise PopjaxError(
            f"the PPO task needs gymnax ({error}): pip install 'popjax[rl]'"
        ) from None
    if env_name not in gymnax.registered_envs:
        raise PopjaxError(
            f"unknown gymnax environment '{env_name}': known include "
            + ", ".join(e for e in gymnax.registered_envs if "-v" in e)[:300]
        )
    return gymnax.make(env_name)


def gymnax_environments(env_name: str, episode_length: int | None = None) -> Environments:
    """gymnax's ``env_name``, batched with ``vmap``; continuous actions are clipped to the
    action space's bounds. ``episode_length``, when given, replaces the environment's time
    limit (``max_steps_in_episode``)."""
    environment, params = make_env(env_name)
    if episode_length is not None:
        params = params.replace(max_steps_in_episode=episode_length)
    space = environment.action_space(params)
    discrete = hasattr(space, "n")
    step_batch = jax.vmap(environment.step, in_axes=(0, 0, 0, None))
    if not discrete:
        low, high = jnp.asarray(space.low, jnp.float32), jnp.asarray(space.high, jnp.float32)

    def step(keys, env_state, action):
        if not discrete:
            action = jnp.clip(action, low, high)
        out = step_batch(keys, env_state, action, params)
        if len(out) == 6:
            obs, env_state, reward, terminated, truncated, info = out
            final_obs = info["final_observation"]
        else:  # gymnax before 1.0: one done flag, taken as termination
            obs, env_state, reward, terminated, _ = out
            truncated, final_obs = jnp.zeros_like(terminated), obs
        flag = lambda x: x.astype(jnp.float32)
        return obs, env_state, reward, flag(terminated), flag(truncated), final_obs

    return Environments(
        reset=lambda keys: jax.vmap(environment.reset, in_axes=(0, None))(keys, params),
        step=step,
        obs_shape=tuple(environment.observation_space(params).shape),
        num_actions=int(space.n) if discrete else None,
        action_shape=() if discrete else tuple(space.shape),
        max_episode=int(params.max_steps_in_episode),
    )


def brax_environments(
    env_name: str, episode_length: int = 1000, backend: str = BRAX_DEFAULT_BACKEND
) -> Environments:
    """Brax's ``env_name`` (without the ``brax:`` prefix) on ``backend``, wrapped the way
    ``brax.envs.create`` and Brax's trainers wrap it: ``VmapWrapper``, ``EpisodeWrapper``
    (episodes end after ``episode_length`` steps, marked as truncation) and
    ``AutoResetWrapper`` (a done environment restarts from its first state), with
    ``FinalObservation`` between the last two."""
    try:
        from brax import envs
        from brax.envs.wrappers import training
    except ImportError as error:
        raise PopjaxError(
            f"Brax environments need brax ({error}): pip install 'popjax[brax]'"
        ) from None
    if env_name not in envs._envs:
        raise PopjaxError(
            f"unknown Brax environment '{env_name}': choose among "
            + ", ".join(f"brax:{name}" for name in sorted(envs._envs))
        )
    if backend not in BRAX_BACKENDS:
        raise PopjaxError(
            f"unknown Brax backend '{backend}': choose among {', '.join(BRAX_BACKENDS)}"
        )

    class FinalObservation(envs.Wrapper):
        """Keeps each step's observation in ``info``, before ``AutoResetWrapper`` puts the
        first one of the next episode in its place."""

        def reset(self, rng):
            state = self.env.reset(rng)
            state.info["final_obs"] = state.obs
            return state

        def step(self, state, action):
            state = self.env.step(state, action)
            state.info["final_obs"] = state.obs
            return state

    with warnings.catch_warnings():  # Brax's notice that MJX is maintained and it is not
        warnings.simplefilter("ignore", UserWarning)
        try:
            env = envs.get_environment(env_name, backend=backend)
        except Exception as error:
            raise PopjaxError(
                f"Brax cannot build '{env_name}' on backend '{backend}': "
                f"{str(error).strip().splitlines()[0] if str(error).strip() else error!r}"
            ) from None
    env = training.VmapWrapper(env)
    env = training.EpisodeWrapper(env, episode_length, action_repeat=1)
    env = training.AutoResetWrapper(FinalObservation(env))

    def step(keys, env_state, action):
        # Brax's physics is deterministic: the keys go unused.
        env_state = env.step(env_state, jnp.clip(action, -1.0, 1.0))
        truncated = env_state.info["truncation"]
        return (
            env_state.obs,
            env_state,
            env_state.reward,
            env_state.done * (1.0 - truncated),
            truncated,
            env_state.info["final_obs"],
        )

    return Environments(
        reset=lambda keys: (lambda state: (state.obs, state))(env.reset(keys)),
        step=step,
        obs_shape=(int(env.observation_size),),
        num_actions=None,
        action_shape=(int(env.action_size),),
        max_episode=int(episode_length),
    )


def environments(env_name: str, episode_length: int | None, backend: str | None) -> Environments:
    """gymnax's ``env_name``, or Brax's when it starts with ``brax:``. ``episode_length``: the
    time limit (None: the environment's own; Brax's 1000 steps); ``backend``: Brax's physics
    (None: ``BRAX_DEFAULT_BACKEND``)."""
    if env_name.startswith(BRAX_PREFIX):
        return brax_environments(
            env_name[len(BRAX_PREFIX) :],
            1000 if episode_length is None else episode_length,
            BRAX_DEFAULT_BACKEND if backend is None else backend,
        )
    if backend is not None:
        raise PopjaxError(
            f"backend is for Brax environments ('brax:...'), not gymnax's '{env_name}': remove it"
        )
    return gymnax_environments(env_name, episode_length)
