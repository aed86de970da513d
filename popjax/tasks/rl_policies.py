"""PPO's actor-critics: a categorical policy for discrete actions, a Gaussian one for continuous
actions, behind one small interface (``Policy``) that the PPO update uses without knowing which.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def _dense(features, scale):
    """Kernels drawn normal with the scales of single-file PPO's orthogonal init. Not the
    orthogonal init itself: its QR decomposition, sharded over several CPU devices, never
    returns on jax 0.10."""
    return nn.Dense(
        features, kernel_init=nn.initializers.variance_scaling(scale**2, "fan_in", "normal")
    )


def _mlp(x, hidden):
    x = nn.tanh(_dense(hidden, np.sqrt(2))(x))
    return nn.tanh(_dense(hidden, np.sqrt(2))(x))


class ActorCritic(nn.Module):
    """Separate tanh MLPs for the policy's logits and the state's value.

    The logits' layer starts at scale 0.01, so the first policy is near uniform.
    """

    num_actions: int
    hidden: int = 64

    @nn.compact
    def __call__(self, obs):
        # Layers are named in the order they are made: hidden layers first, as before.
        actor = _mlp(obs, self.hidden)
        logits = _dense(self.num_actions, 0.01)(actor)
        critic = _mlp(obs, self.hidden)
        return logits, _dense(1, 1.0)(critic)[..., 0]


class GaussianActorCritic(nn.Module):
    """A diagonal Gaussian policy and a value, as separate tanh MLPs.

    The mean's layer starts at scale 0.01 (the first policy is centred on 0); the log standard
    deviation is one learned parameter per action dimension, independent of the state, as in
    single-file JAX PPO for continuous control. It starts at 0 here; ``gaussian_policy``'s
    ``init`` writes the member's ``init_log_std`` into it.
    """

    action_dim: int
    hidden: int = 64

    @nn.compact
    def __call__(self, obs):
        actor = _mlp(obs, self.hidden)
        mean = _dense(self.action_dim, 0.01)(actor)
        log_std = self.param("log_std", nn.initializers.zeros, (self.action_dim,))
        critic = _mlp(obs, self.hidden)
        return mean, log_std, _dense(1, 1.0)(critic)[..., 0]


class Policy(NamedTuple):
    """What PPO needs of an actor-critic, for a batch of observations.

    Attributes:
      init: ``init(key, obs, hparams) -> params``.
      sample: ``sample(params, obs, key) -> (action, log_prob, value)``, for rollouts.
      judge: ``judge(params, obs, action) -> (log_prob, entropy, value)``, for the loss.
      act: ``act(params, obs, key) -> action``, for evaluation episodes.
      value: ``value(params, obs) -> value``.
    """

    init: Callable
    sample: Callable
    judge: Callable
    act: Callable
    value: Callable


def categorical_policy(num_actions: int, hidden: int) -> Policy:
    """A softmax over ``num_actions``; evaluation samples from it, as training does."""
    network = ActorCritic(num_actions, hidden)

    def init(key, obs, hparams):
        return network.init(key, obs)

    def sample(params, obs, key):
        logits, value = network.apply(params, obs)
        action = jax.random.categorical(key, logits)
        log_prob = jax.nn.log_softmax(logits)[jnp.arange(obs.shape[0]), action]
        return action, log_prob, value

    def judge(params, obs, action):
        logits, value = network.apply(params, obs)
        log_probs = jax.nn.log_softmax(logits)
        log_prob = jnp.take_along_axis(log_probs, action[:, None], axis=-1)[:, 0]
        entropy = -(jnp.exp(log_probs) * log_probs).sum(-1)
        return log_prob, entropy, value

    def act(params, obs, key):
        return jax.random.categorical(key, network.apply(params, obs)[0])

    return Policy(init, sample, judge, act, lambda params, obs: network.apply(params, obs)[1])


def _gaussian_log_prob(mean, log_std, action):
    z = (action - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi), axis=-1)


def gaussian_policy(action_dim: int, hidden: int) -> Policy:
    """A diagonal Gaussian over ``action_dim`` unbounded actions (the environment clips them to
    its bounds; the log-probability is the unclipped sample's, as in single-file JAX PPO).
    Evaluation plays the mean action."""
    network = GaussianActorCritic(action_dim, hidden)

    def init(key, obs, hparams):
        params = network.init(key, obs)
        log_std = jnp.full((action_dim,), hparams["init_log_std"], jnp.float32)
        return {**params, "params": {**params["params"], "log_std": log_std}}

    def sample(params, obs, key):
        mean, log_std, value = network.apply(params, obs)
        action = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
        return action, _gaussian_log_prob(mean, log_std, action), value

    def judge(params, obs, action):
        mean, log_std, value = network.apply(params, obs)
        entropy = jnp.sum(log_std + 0.5 * math.log(2 * math.pi * math.e))
        return _gaussian_log_prob(mean, log_std, action), jnp.full(value.shape, entropy), value

    def act(params, obs, key):
        return network.apply(params, obs)[0]

    return Policy(init, sample, judge, act, lambda params, obs: network.apply(params, obs)[2])
