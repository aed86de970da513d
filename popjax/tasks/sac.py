"""Soft actor-critic as a task: off-policy agents for continuous actions on gymnax
environments, each with its replay buffer in its state on the device.

A member's state is its whole agent: a tanh-squashed Gaussian actor, twin Q critics and their
target copies, the log temperature, three Adam states, a ring buffer of transitions
(``popjax.tasks.transition_buffer``), its environments' states and last observations, and its
counters. One ``train`` call plays ``rollout_steps`` steps in each of ``num_envs`` environments
(uniform random actions until ``learning_starts`` environment steps), stores the transitions,
then makes ``replay_ratio`` gradient updates per environment step, as in CleanRL's SAC (one
critic, actor and temperature update each, then Polyak averaging of the targets).

Per-member batch size and replay ratio are arrays like every other hyperparameter: a member
samples ``max_batch`` transitions and weighs the first ``batch_size`` of them; a ``train`` call
runs ``max_updates`` update slots and keeps the first ``replay_ratio * env steps`` of them. So
the compute follows the maxima, and a search over them never recompiles. PBT copies a member's
whole state, its buffer included (as QDax's PBT-SAC does); see docs/sac.md.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import popjax.tasks.transition_buffer as transition_buffer
from popjax import optim
from popjax.errors import PopjaxError
from popjax.priors import LogUniform, Uniform
from popjax.task import Task
from popjax.tasks.rl import make_env

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
# The usual SAC setting (CleanRL's sac_continuous_action, target entropy -1 per action).
TEXTBOOK = {
    "actor_learning_rate": 3e-4,
    "critic_learning_rate": 1e-3,
    "gamma": 0.99,
    "tau": 0.005,
    "target_entropy": -1.0,
    "batch_size": 256.0,
    "replay_ratio": 1.0,
}


def sac_space(max_batch: int = 256, max_replay_ratio: float = 1.0, autotune: bool = True):
    """Default priors of SAC's hyperparameters, around ``TEXTBOOK``.

    ``target_entropy`` is per action dimension (the agent aims at ``target_entropy *
    action_dim``); with ``autotune=False`` a fixed temperature ``alpha`` replaces it.
    """
    space = {
        "actor_learning_rate": LogUniform(1e-4, 3e-3),
        "critic_learning_rate": LogUniform(1e-4, 3e-3),
        "gamma": Uniform(0.95, 0.995),
        "tau": LogUniform(1e-3, 0.05),
        "batch_size": LogUniform(max(1.0, max_batch / 8), float(max_batch)),
        "replay_ratio": LogUniform(max_replay_ratio / 8, max_replay_ratio),
    }
    if autotune:
        space["target_entropy"] = Uniform(-2.0, 0.0)
    else:
        space["alpha"] = LogUniform(0.01, 1.0)
    return space


class Actor(nn.Module):
    """A ReLU MLP to a Gaussian's mean and log standard deviation (squashed into
    ``[LOG_STD_MIN, LOG_STD_MAX]``) over the pre-tanh action."""

    action_dim: int
    hidden: int = 256

    @nn.compact
    def __call__(self, obs):
        x = nn.relu(nn.Dense(self.hidden)(obs))
        x = nn.relu(nn.Dense(self.hidden)(x))
        log_std = jnp.tanh(nn.Dense(self.action_dim)(x))
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (log_std + 1)
        return nn.Dense(self.action_dim)(x), log_std


class Critic(nn.Module):
    """Q(s, a): a ReLU MLP on the observation and action side by side."""

    hidden: int = 256

    @nn.compact
    def __call__(self, obs, action):
        x = jnp.concatenate([obs, action], axis=-1)
        x = nn.relu(nn.Dense(self.hidden)(x))
        x = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(1)(x)[..., 0]


def _check_counts(least: int = 1, **counts) -> None:
    for name, value in counts.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise PopjaxError(f"sac: {name} must be a whole number >= {least} (got {value!r})")


def sac(
    env: str = "Pendulum-v1",
    *,
    num_envs: int = 4,
    rollout_steps: int = 8,
    buffer_size: int = 50_000,
    learning_starts: int = 1_000,
    max_batch: int = 256,
    max_replay_ratio: float = 1.0,
    hidden: int = 256,
    autotune: bool = True,
    eval_episodes: int = 8,
) -> Task:
    """SAC on a continuous-action gymnax environment; one ``train`` call is ``num_envs *
    rollout_steps`` environment steps and up to ``max_replay_ratio`` gradient updates per
    environment step. Fitness: the mean return of ``eval_episodes`` episodes played with the
    actor's mean action.

    Args:
      env: a gymnax environment with a continuous (box) action space.
      buffer_size: transitions each member's replay buffer holds (the oldest are written over).
      learning_starts: environment steps of uniform random actions before the first update.
      max_batch: the largest ``batch_size`` a member may have (the sampled batch).
      max_replay_ratio: the largest ``replay_ratio`` (updates per environment step).
      autotune: learn the temperature toward ``target_entropy``; else use ``alpha`` as is.
    """
    _check_counts(
        num_envs=num_envs,
        rollout_steps=rollout_steps,
        buffer_size=buffer_size,
        max_batch=max_batch,
        hidden=hidden,
        eval_episodes=eval_episodes,
    )
    _check_counts(least=0, learning_starts=learning_starts)
    if not (isinstance(max_replay_ratio, (int, float)) and 0 < max_replay_ratio <= 1e3):
        raise PopjaxError(f"sac: max_replay_ratio must be a number > 0 (got {max_replay_ratio!r})")
    environment, env_params = make_env(env)
    action_space = environment.action_space(env_params)
    if not hasattr(action_space, "low") or hasattr(action_space, "n"):
        raise PopjaxError(
            f"sac needs continuous actions, and {env} has discrete ones: use "
            "popjax.tasks.rl:ppo, or a continuous environment such as Pendulum-v1"
        )
    action_dim = int(np.prod(action_space.shape))
    low = jnp.broadcast_to(jnp.asarray(action_space.low, jnp.float32), (action_dim,))
    high = jnp.broadcast_to(jnp.asarray(action_space.high, jnp.float32), (action_dim,))
    scale, center = (high - low) / 2, (high + low) / 2
    obs_shape = environment.observation_space(env_params).shape
    max_episode = int(env_params.max_steps_in_episode)
    per_call = num_envs * rollout_steps
    max_updates = math.ceil(max_replay_ratio * per_call)
    actor, critic = Actor(action_dim, hidden), Critic(hidden)

    def twin_q(params, obs, action):
        """Both critics' values, ``[2, batch]``. Two parameter trees, not one stacked tree
        under ``vmap``: XLA's CPU backend at optimization level 0 (the test suite's) computed
        NaN from the stacked form inside the masked update loop."""
        return jnp.stack([critic.apply(params[name], obs, action) for name in ("q1", "q2")])

    step_batch = jax.vmap(environment.step, in_axes=(0, 0, 0, None))
    reset_envs = jax.vmap(environment.reset, in_axes=(0, None))

    def policy(actor_params, obs, key):
        """A sampled action in the environment's bounds and its log-likelihood."""
        mean, log_std = actor.apply(actor_params, obs)
        noise = jax.random.normal(key, mean.shape)
        pre_tanh = mean + jnp.exp(log_std) * noise
        log_prob = -0.5 * noise**2 - log_std - 0.5 * jnp.log(2 * jnp.pi)
        # log(1 - tanh(u)^2) in a form that stays finite: computed from tanh itself it can
        # take the log of a negative number where tanh rounds to just over 1 (seen on XLA's
        # CPU backend at optimization level 0).
        log_det = 2 * (jnp.log(2.0) - pre_tanh - jax.nn.softplus(-2 * pre_tanh))
        log_prob = log_prob - jnp.log(scale) - log_det
        return center + scale * jnp.tanh(pre_tanh), log_prob.sum(-1)

    def optimizer(learning_rate):
        return optim.member_optimizer({"learning_rate": learning_rate}, family="adam")

    def init(key, hparams):
        actor_key, critic_key, env_key = jax.random.split(key, 3)
        obs0, action0 = jnp.zeros(obs_shape), jnp.zeros(action_dim)
        actor_params = actor.init(actor_key, obs0)
        q1_key, q2_key = jax.random.split(critic_key)
        critic_params = {
            "q1": critic.init(q1_key, obs0, action0),
            "q2": critic.init(q2_key, obs0, action0),
        }
        log_alpha = jnp.zeros(())
        obs, env_state = reset_envs(jax.random.split(env_key, num_envs), env_params)
        # gymnax's reset leaves some leaves weakly typed and its step does not: one type for
        # both, or the round compiles twice.
        env_state = jax.tree_util.tree_map(lambda x: jnp.asarray(x, x.dtype), env_state)
        example = {
            "obs": obs0,
            "action": action0,
            "reward": jnp.zeros(()),
            "next_obs": obs0,
            "terminated": jnp.zeros(()),
        }
        return {
            "actor": actor_params,
            "critic": critic_params,
            "target_critic": critic_params,
            "log_alpha": log_alpha,
            "actor_opt": optimizer(0.0).init(actor_params),
            "critic_opt": optimizer(0.0).init(critic_params),
            "alpha_opt": optimizer(0.0).init(log_alpha),
            "buffer": transition_buffer.empty(example, buffer_size),
            "env_state": env_state,
            "obs": obs,
            "episode_return": jnp.zeros(num_envs),
            "last_return": jnp.zeros(()),  # the mean of the episodes that ended last
            "env_steps": jnp.zeros((), jnp.int32),
            "updates": jnp.zeros((), jnp.int32),
            "updates_owed": jnp.zeros(()),  # a fraction of an update carried to the next call
        }

    def collect(state, key):
        def one_step(carry, step_key):
            env_state, obs, episode_return, last_return, env_steps = carry
            action_key, random_key, env_key = jax.random.split(step_key, 3)
            action, _ = policy(state["actor"], obs, action_key)
            explore = jax.random.uniform(random_key, action.shape, minval=low, maxval=high)
            action = jnp.where(env_steps < learning_starts, explore, action)
            next_obs, env_state, reward, terminated, truncated, info = step_batch(
                jax.random.split(env_key, num_envs), env_state, action, env_params
            )
            done = terminated | truncated
            transition = {
                "obs": obs,
                "action": action,
                "reward": reward,
                # The last observation of an episode, not the first of the next one; a time
                # limit is no terminal state, so only ``terminated`` stops the bootstrap.
                "next_obs": info["final_observation"],
                "terminated": terminated.astype(jnp.float32),
            }
            episode_return = episode_return + reward
            ended = jnp.sum(done)
            last_return = jnp.where(
                ended > 0,
                jnp.sum(jnp.where(done, episode_return, 0.0)) / jnp.maximum(ended, 1),
                last_return,
            )
            episode_return = jnp.where(done, 0.0, episode_return)
            carry = (env_state, next_obs, episode_return, last_return, env_steps + num_envs)
            return carry, transition

        carry = (
            state["env_state"],
            state["obs"],
            state["episode_return"],
            state["last_return"],
            state["env_steps"],
        )
        return jax.lax.scan(one_step, carry, jax.random.split(key, rollout_steps))

    def gradient_update(learner, buffer, hparams, key):
        sample_key, next_key, actor_key = jax.random.split(key, 3)
        batch = transition_buffer.sample(buffer, sample_key, max_batch)
        weight = (jnp.arange(max_batch) < jnp.round(hparams["batch_size"])).astype(jnp.float32)
        weight = weight / jnp.maximum(weight.sum(), 1.0)
        alpha = jnp.exp(learner["log_alpha"]) if autotune else hparams["alpha"]

        next_action, next_log_prob = policy(learner["actor"], batch["next_obs"], next_key)
        next_q = twin_q(learner["target_critic"], batch["next_obs"], next_action).min(0)
        target = batch["reward"] + hparams["gamma"] * (1 - batch["terminated"]) * (
            next_q - alpha * next_log_prob
        )

        def critic_loss(params):
            q = twin_q(params, batch["obs"], batch["action"])
            return jnp.sum(weight * (q - jax.lax.stop_gradient(target)) ** 2)

        loss_q, grads = jax.value_and_grad(critic_loss)(learner["critic"])
        critic_tx = optimizer(hparams["critic_learning_rate"])
        updates, critic_opt = critic_tx.update(grads, learner["critic_opt"], learner["critic"])
        critic_params = optax.apply_updates(learner["critic"], updates)

        def actor_loss(params):
            action, log_prob = policy(params, batch["obs"], actor_key)
            q = twin_q(critic_params, batch["obs"], action).min(0)
            return jnp.sum(weight * (alpha * log_prob - q)), log_prob

        (loss_pi, log_prob), grads = jax.value_and_grad(actor_loss, has_aux=True)(learner["actor"])
        actor_tx = optimizer(hparams["actor_learning_rate"])
        updates, actor_opt = actor_tx.update(grads, learner["actor_opt"], learner["actor"])
        entropy = -jnp.sum(weight * log_prob)
        new = {
            **learner,
            "actor": optax.apply_updates(learner["actor"], updates),
            "actor_opt": actor_opt,
            "critic": critic_params,
            "critic_opt": critic_opt,
        }
        if autotune:
            target_entropy = hparams["target_entropy"] * action_dim
            alpha_grad = entropy - target_entropy  # d/d log_alpha of -log_alpha (log_prob + H)
            # The critic's learning rate, as in CleanRL.
            updates, new["alpha_opt"] = critic_tx.update(
                jax.lax.stop_gradient(alpha_grad), learner["alpha_opt"], learner["log_alpha"]
            )
            new["log_alpha"] = learner["log_alpha"] + updates
        tau = hparams["tau"]
        new["target_critic"] = jax.tree_util.tree_map(
            lambda t, c: (1 - tau) * t + tau * c, learner["target_critic"], critic_params
        )
        return new, {"critic_loss": loss_q, "actor_loss": loss_pi, "entropy": entropy}

    learner_keys = ("actor", "critic", "target_critic", "log_alpha")
    learner_keys += ("actor_opt", "critic_opt", "alpha_opt")

    def train(state, hparams, key, step):
        collect_key, update_key = jax.random.split(key)
        carry, transitions = collect(state, collect_key)
        env_state, obs, episode_return, last_return, env_steps = carry
        flat = jax.tree_util.tree_map(lambda x: x.reshape((per_call, *x.shape[2:])), transitions)
        buffer = transition_buffer.add(state["buffer"], flat)
        started = env_steps >= learning_starts
        owed = state["updates_owed"] + jnp.where(started, hparams["replay_ratio"] * per_call, 0.0)
        count = jnp.minimum(jnp.floor(owed), max_updates)
        learner = {name: state[name] for name in learner_keys}

        def slot(learner, inputs):
            key, active = inputs
            new, metrics = gradient_update(learner, buffer, hparams, key)
            # Under vmap a cond runs both sides anyway: a select keeps or drops the update.
            kept = jax.tree_util.tree_map(lambda a, b: jnp.where(active, a, b), new, learner)
            return kept, metrics

        active = jnp.arange(max_updates) < count
        learner, metrics = jax.lax.scan(
            slot, learner, (jax.random.split(update_key, max_updates), active)
        )
        done = jnp.maximum(count, 1.0)
        new_state = {
            **state,
            **learner,
            "buffer": buffer,
            "env_state": env_state,
            "obs": obs,
            "episode_return": episode_return,
            "last_return": last_return,
            "env_steps": env_steps,
            "updates": state["updates"] + count.astype(jnp.int32),
            "updates_owed": jnp.clip(owed - count, 0.0, 0.999),
        }
        return new_state, {
            **{name: jnp.sum(value * active) / done for name, value in metrics.items()},
            "alpha": jnp.exp(learner["log_alpha"]) if autotune else hparams["alpha"],
            "return": last_return,
        }

    def evaluate(state, hparams, key):
        reset_key, play_key = jax.random.split(key)
        obs, env_state = reset_envs(jax.random.split(reset_key, eval_episodes), env_params)

        def one_step(carry, step_key):
            env_state, obs, total, running = carry
            mean, _ = actor.apply(state["actor"], obs)
            action = center + scale * jnp.tanh(mean)
            obs, env_state, reward, terminated, truncated, _ = step_batch(
                jax.random.split(step_key, eval_episodes), env_state, action, env_params
            )
            total = total + reward * running  # each environment's first episode only
            return (env_state, obs, total, running & ~(terminated | truncated)), None

        start = (env_state, obs, jnp.zeros(eval_episodes), jnp.ones(eval_episodes, bool))
        (_, _, total, _), _ = jax.lax.scan(one_step, start, jax.random.split(play_key, max_episode))
        return {
            "return": total.mean(),
            "env_steps": state["env_steps"].astype(jnp.float32),
            "updates": state["updates"].astype(jnp.float32),
        }

    return Task(
        init=init,
        train=train,
        evaluate=evaluate,
        fitness="return",
        space=sac_space(max_batch, max_replay_ratio, autotune),
        name=f"sac-{env}",
    )
