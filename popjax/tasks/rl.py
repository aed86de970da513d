"""Reinforcement learning as a task: PPO agents on gymnax or Brax environments, every agent with
its own environments, all inside the compiled round.

A member's state is its whole agent: actor-critic weights, Adam's state, its vectorized
environments' states and last observations, its running episode returns, the environment
steps taken so far and, where normalisation is on, its running observation and return
statistics. One ``train`` call is one PPO update in the style of single-file JAX PPO: a
rollout of ``rollout_steps`` in each of ``num_envs`` environments (``lax.scan``), generalized
advantage estimation, then ``epochs`` passes of ``minibatches`` clipped-objective steps.
``evaluate`` plays ``eval_episodes`` fresh episodes with its own keys and returns their mean
return, the fitness. Discrete action spaces get a categorical policy, continuous ones a
Gaussian policy (``rl_policies``). Needs ``gymnax`` (``pip install 'popjax[rl]'``), or ``brax``
for ``env = "brax:..."`` (``pip install 'popjax[brax]'``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from popjax import optim
from popjax.errors import PopjaxError
from popjax.priors import LogUniform, Uniform
from popjax.task import Task
from popjax.tasks.normalize import (
    RunningStats,
    discounted_returns,
    normalize,
    scale_rewards,
)
from popjax.tasks.normalize import (
    update as update_stats,
)
from popjax.tasks.rl_envs import environments, make_env
from popjax.tasks.rl_policies import ActorCritic, categorical_policy, gaussian_policy

__all__ = [
    "ActorCritic",
    "PPO_CONTINUOUS_SPACE",
    "PPO_SPACE",
    "TEXTBOOK",
    "TEXTBOOK_CONTINUOUS",
    "generalized_advantages",
    "make_env",
    "ppo",
]

# Each searchable coefficient's default prior, around the textbook setting (``TEXTBOOK``).
PPO_SPACE = {
    "learning_rate": LogUniform(1e-4, 1e-2),
    "ent_coef": LogUniform(1e-4, 0.05),  # entropy bonus
    "vf_coef": Uniform(0.25, 1.0),  # value loss weight
    "clip_eps": Uniform(0.1, 0.3),  # the clipped objective's epsilon
    "gae_lambda": Uniform(0.9, 0.99),
    "gamma": Uniform(0.95, 0.999),  # discount
    "max_grad_norm": LogUniform(0.1, 2.0),  # global-norm gradient clipping
}
# The usual PPO setting for classic control (as in single-file JAX PPO).
TEXTBOOK = {
    "learning_rate": 2.5e-4,
    "ent_coef": 0.01,
    "vf_coef": 0.5,
    "clip_eps": 0.2,
    "gae_lambda": 0.95,
    "gamma": 0.99,
    "max_grad_norm": 0.5,
}
# Continuous control: a Gaussian's entropy is in other units and the recipes use little or no
# bonus (0 in single-file JAX PPO); the policy's initial log standard deviation is searched too.
PPO_CONTINUOUS_SPACE = {
    **PPO_SPACE,
    "ent_coef": LogUniform(1e-5, 1e-2),
    "gamma": Uniform(0.9, 0.999),
    "init_log_std": Uniform(-1.0, 0.5),  # acts once, in init: the Gaussian's starting width
}
TEXTBOOK_CONTINUOUS = {**TEXTBOOK, "learning_rate": 3e-4, "ent_coef": 0.0, "init_log_std": 0.0}
ADAM = {"b1": 0.9, "b2": 0.999, "eps": 1e-5, "weight_decay": 0.0}


def generalized_advantages(reward, done, value, last_value, gamma, lam):
    """Generalized advantage estimation over a rollout (``[T, envs]`` arrays; ``last_value``:
    the value of the observation after the last step): ``(advantages, value targets)``. An
    episode's end (``done``) cuts the sums; at a time limit, ``reward`` already holds the
    discounted value of the observation the episode reached."""

    def backwards(carry, t):
        gae, next_value = carry
        r, d, v = t
        delta = r + gamma * next_value * (1 - d) - v
        gae = delta + gamma * lam * (1 - d) * gae
        return (gae, v), gae

    _, gae = jax.lax.scan(
        backwards,
        (jnp.zeros_like(last_value), last_value),
        (reward, done, value),
        reverse=True,
    )
    return gae, gae + value


def ppo(
    env: str = "CartPole-v1",
    *,
    num_envs: int = 4,
    rollout_steps: int = 128,
    epochs: int = 4,
    minibatches: int = 4,
    hidden: int = 64,
    eval_episodes: int = 8,
    normalize_obs: bool | None = None,
    normalize_reward: bool | None = None,
    bootstrap_truncated: bool | None = None,
    episode_length: int | None = None,
    backend: str | None = None,
) -> Task:
    """PPO on a gymnax environment, or a Brax one named ``"brax:<name>"``; one ``train`` call
    is one PPO update (``num_envs * rollout_steps`` environment steps). Fitness: the mean
    return of ``eval_episodes`` evaluation episodes.

    Args:
      env: a gymnax environment (``"CartPole-v1"``, ``"Pendulum-v1"``, ...) or a Brax one
        (``"brax:inverted_pendulum"``). Its action space picks the policy: categorical for
        discrete actions, Gaussian for continuous ones.
      normalize_obs: normalise observations by running statistics kept in each member's state.
      normalize_reward: divide rewards by the running standard deviation of the discounted
        return, kept in each member's state.
      bootstrap_truncated: where an episode ends at its time limit, add the discounted value
        of the observation it reached to the last reward, instead of treating the end as
        terminal. These three default to the recipes' choice: on for continuous actions, off
        for discrete ones (as popjax's discrete PPO always was).
      episode_length: the time limit in steps (None: the environment's own; Brax: 1000).
      backend: Brax's physics backend (None: ``"spring"``, the fastest on a CPU).

    Example:
      >>> task = popjax.tasks.ppo("Pendulum-v1", num_envs=8)
      >>> result = popjax.run(task=task, population=8, steps=100, interval=10)
    """
    envs = environments(env, episode_length, backend)
    discrete = envs.num_actions is not None
    normalize_obs = not discrete if normalize_obs is None else bool(normalize_obs)
    normalize_reward = not discrete if normalize_reward is None else bool(normalize_reward)
    bootstrap = not discrete if bootstrap_truncated is None else bool(bootstrap_truncated)
    if discrete:
        policy = categorical_policy(envs.num_actions, hidden)
    else:
        if len(envs.action_shape) != 1:
            raise PopjaxError(
                f"{env}'s actions have shape {envs.action_shape}: the Gaussian policy takes "
                "actions of one axis"
            )
        policy = gaussian_policy(envs.action_shape[0], hidden)
    batch = num_envs * rollout_steps
    if batch % minibatches:
        raise PopjaxError(
            f"num_envs * rollout_steps ({batch}) must divide into {minibatches} minibatches"
        )

    def optimizer(hparams):
        return optim.member_optimizer(
            {
                **ADAM,
                "learning_rate": hparams["learning_rate"],
                "grad_clip": hparams["max_grad_norm"],
            },
            family="adam",
        )

    def seen(state, obs):
        """An observation as the policy sees it."""
        return normalize(state["obs_stats"], obs) if normalize_obs else obs

    def init(key, hparams):
        net_key, env_key = jax.random.split(key)
        init_log_std = hparams.get("init_log_std", TEXTBOOK_CONTINUOUS["init_log_std"])
        params = policy.init(net_key, jnp.zeros(envs.obs_shape), {"init_log_std": init_log_std})
        obs, env_state = envs.reset(jax.random.split(env_key, num_envs))
        # The state's shape depends on the chain, not on the coefficients' values.
        opt_state = optimizer({"learning_rate": 0.0, "max_grad_norm": 0.0}).init(params)
        state = {
            "params": params,
            "opt_state": opt_state,
            "env_state": env_state,
            "obs": obs,
            "episode_return": jnp.zeros(num_envs),
            "env_steps": jnp.zeros((), jnp.int32),
        }
        if normalize_obs:
            state["obs_stats"] = RunningStats.initial(envs.obs_shape)
        if normalize_reward:
            state["return_stats"] = RunningStats.initial()
            state["discounted_return"] = jnp.zeros(num_envs)
        return state

    def rollout(state, key):
        def one_step(carry, step_key):
            env_state, obs, episode_return = carry
            action_key, env_key = jax.random.split(step_key)
            policy_obs = seen(state, obs)
            action, log_prob, value = policy.sample(state["params"], policy_obs, action_key)
            next_obs, env_state, reward, terminated, truncated, final_obs = envs.step(
                jax.random.split(env_key, num_envs), env_state, action
            )
            done = jnp.maximum(terminated, truncated)
            episode_return = episode_return + reward
            finished = jnp.where(done > 0, episode_return, 0.0)
            transition = {
                "obs": policy_obs,
                "action": action,
                "reward": reward,
                "done": done,
                "value": value,
                "log_prob": log_prob,
                "finished": finished,
            }
            if normalize_obs:
                transition["raw_obs"] = obs
            if bootstrap:
                final_value = policy.value(state["params"], seen(state, final_obs))
                transition["truncated_value"] = truncated * final_value
            return (env_state, next_obs, jnp.where(done > 0, 0.0, episode_return)), transition

        carry = (state["env_state"], state["obs"], state["episode_return"])
        carry, transitions = jax.lax.scan(one_step, carry, jax.random.split(key, rollout_steps))
        return carry, transitions

    def advantages(reward, transitions, last_value, hparams):
        gamma = hparams["gamma"]
        if bootstrap:  # the episode was cut, not over: its last reward carries what follows
            reward = reward + gamma * transitions["truncated_value"]
        return generalized_advantages(
            reward,
            transitions["done"],
            transitions["value"],
            last_value,
            gamma,
            hparams["gae_lambda"],
        )

    def loss_fn(params, minibatch, hparams):
        obs, action, old_value, old_log_prob, advantage, target = minibatch
        log_prob, entropy, value = policy.judge(params, obs, action)
        clip = hparams["clip_eps"]
        clipped_value = old_value + jnp.clip(value - old_value, -clip, clip)
        value_loss = 0.5 * jnp.maximum((value - target) ** 2, (clipped_value - target) ** 2).mean()
        advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
        ratio = jnp.exp(log_prob - old_log_prob)
        policy_loss = -jnp.minimum(
            ratio * advantage, jnp.clip(ratio, 1 - clip, 1 + clip) * advantage
        ).mean()
        entropy = entropy.mean()
        total = policy_loss + hparams["vf_coef"] * value_loss - hparams["ent_coef"] * entropy
        return total, (value_loss, entropy)

    def train(state, hparams, key, step):
        rollout_key, shuffle_key = jax.random.split(key)
        (env_state, obs, episode_return), transitions = rollout(state, rollout_key)
        last_value = policy.value(state["params"], seen(state, obs))
        new_state = {}
        reward = transitions["reward"]
        if normalize_reward:
            # The statistics take this rollout's returns first: they do not depend on the
            # scale, and the first update then sees rewards already scaled.
            running, returns = discounted_returns(
                state["discounted_return"], reward, transitions["done"], hparams["gamma"]
            )
            new_state["return_stats"] = update_stats(state["return_stats"], returns)
            new_state["discounted_return"] = running
            reward = scale_rewards(new_state["return_stats"], reward)
        advantage, target = advantages(reward, transitions, last_value, hparams)
        flat = jax.tree_util.tree_map(
            lambda x: x.reshape((batch,) + x.shape[2:]),
            (
                transitions["obs"],
                transitions["action"],
                transitions["value"],
                transitions["log_prob"],
                advantage,
                target,
            ),
        )
        tx = optimizer(hparams)

        def epoch(carry, epoch_key):
            def minibatch_step(carry, minibatch):
                params, opt_state = carry
                (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                    params, minibatch, hparams
                )
                updates, opt_state = tx.update(grads, opt_state, params)
                return (optax.apply_updates(params, updates), opt_state), (loss, *aux)

            order = jax.random.permutation(epoch_key, batch)
            shuffled = jax.tree_util.tree_map(
                lambda x: x[order].reshape((minibatches, -1) + x.shape[1:]), flat
            )
            return jax.lax.scan(minibatch_step, carry, shuffled)

        (params, opt_state), (loss, value_loss, entropy) = jax.lax.scan(
            epoch, (state["params"], state["opt_state"]), jax.random.split(shuffle_key, epochs)
        )
        if normalize_obs:
            # After the update: the rollout and the loss saw the same normalisation.
            new_state["obs_stats"] = update_stats(state["obs_stats"], transitions["raw_obs"])
        finished = transitions["finished"]
        episodes = jnp.sum(finished != 0.0)
        new_state.update(
            params=params,
            opt_state=opt_state,
            env_state=env_state,
            obs=obs,
            episode_return=episode_return,
            env_steps=state["env_steps"] + batch,
        )
        return new_state, {
            "loss": loss.mean(),
            "value_loss": value_loss.mean(),
            "entropy": entropy.mean(),
            "return": jnp.sum(finished) / jnp.maximum(episodes, 1),  # episodes ended here
        }

    def evaluate(state, hparams, key):
        reset_key, play_key = jax.random.split(key)
        obs, env_state = envs.reset(jax.random.split(reset_key, eval_episodes))

        def one_step(carry, step_key):
            env_state, obs, total, running = carry
            action_key, env_key = jax.random.split(step_key)
            action = policy.act(state["params"], seen(state, obs), action_key)
            obs, env_state, reward, terminated, truncated, _ = envs.step(
                jax.random.split(env_key, eval_episodes), env_state, action
            )
            done = jnp.maximum(terminated, truncated)
            total = total + reward * running  # each environment's first episode only
            return (env_state, obs, total, running & (done == 0)), None

        start = (env_state, obs, jnp.zeros(eval_episodes), jnp.ones(eval_episodes, bool))
        (_, _, total, _), _ = jax.lax.scan(
            one_step, start, jax.random.split(play_key, envs.max_episode)
        )
        return {"return": total.mean(), "env_steps": state["env_steps"].astype(jnp.float32)}

    return Task(
        init=init,
        train=train,
        evaluate=evaluate,
        fitness="return",
        space=PPO_SPACE if discrete else PPO_CONTINUOUS_SPACE,
        name=f"ppo-{env}",
    )
