"""Reinforcement learning as a task: PPO agents on gymnax environments, every agent with its own
environments, all inside the compiled round.

A member's state is its whole agent: actor-critic weights, Adam's state, its vectorized
environments' states and last observations, its running episode returns and the environment
steps taken so far. One ``train`` call is one PPO update in the style of single-file JAX PPO: a
rollout of ``rollout_steps`` in each of ``num_envs`` environments (``lax.scan``), generalized
advantage estimation, then ``epochs`` passes of ``minibatches`` clipped-objective steps.
``evaluate`` plays ``eval_episodes`` fresh episodes with its own keys and returns their mean
return, the fitness. Needs ``gymnax`` (``pip install 'popjax[rl]'``).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from popjax import optim
from popjax.errors import PopjaxError
from popjax.priors import LogUniform, Uniform
from popjax.task import Task

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
ADAM = {"b1": 0.9, "b2": 0.999, "eps": 1e-5, "weight_decay": 0.0}


class ActorCritic(nn.Module):
    """Separate tanh MLPs for the policy's logits and the state's value.

    Kernels are drawn normal with the scales of single-file PPO's orthogonal init (sqrt 2 in
    the hidden layers, 0.01 for the logits, so the first policy is near uniform). Not the
    orthogonal init itself: its QR decomposition, sharded over several CPU devices, never
    returns on jax 0.10.
    """

    num_actions: int
    hidden: int = 64

    @nn.compact
    def __call__(self, obs):
        def dense(features, scale):
            return nn.Dense(
                features, kernel_init=nn.initializers.variance_scaling(scale**2, "fan_in", "normal")
            )

        actor = nn.tanh(dense(self.hidden, np.sqrt(2))(obs))
        actor = nn.tanh(dense(self.hidden, np.sqrt(2))(actor))
        logits = dense(self.num_actions, 0.01)(actor)
        critic = nn.tanh(dense(self.hidden, np.sqrt(2))(obs))
        critic = nn.tanh(dense(self.hidden, np.sqrt(2))(critic))
        return logits, dense(1, 1.0)(critic)[..., 0]


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


def ppo(
    env: str = "CartPole-v1",
    *,
    num_envs: int = 4,
    rollout_steps: int = 128,
    epochs: int = 4,
    minibatches: int = 4,
    hidden: int = 64,
    eval_episodes: int = 8,
) -> Task:
    """PPO on a discrete-action gymnax environment; one ``train`` call is one PPO update
    (``num_envs * rollout_steps`` environment steps). Fitness: the mean return of
    ``eval_episodes`` evaluation episodes."""
    environment, env_params = make_env(env)
    num_actions = environment.action_space(env_params).n
    network = ActorCritic(num_actions, hidden)
    obs_shape = environment.observation_space(env_params).shape
    max_episode = int(env_params.max_steps_in_episode)
    batch = num_envs * rollout_steps
    if batch % minibatches:
        raise PopjaxError(
            f"num_envs * rollout_steps ({batch}) must divide into {minibatches} minibatches"
        )
    step_batch = jax.vmap(environment.step, in_axes=(0, 0, 0, None))

    def step_envs(keys, env_state, action, params):
        """``(obs, state, reward, done)``; gymnax 1.0 reports terminated and truncated apart,
        and an episode ends on either (its environments reset themselves)."""
        out = step_batch(keys, env_state, action, params)
        done = out[3] | out[4] if len(out) == 6 else out[3]
        return out[0], out[1], out[2], done.astype(jnp.float32)

    reset_envs = jax.vmap(environment.reset, in_axes=(0, None))

    def optimizer(hparams):
        return optim.member_optimizer(
            {
                **ADAM,
                "learning_rate": hparams["learning_rate"],
                "grad_clip": hparams["max_grad_norm"],
            },
            family="adam",
        )

    def init(key, hparams):
        net_key, env_key = jax.random.split(key)
        params = network.init(net_key, jnp.zeros(obs_shape))
        obs, env_state = reset_envs(jax.random.split(env_key, num_envs), env_params)
        # The state's shape depends on the chain, not on the coefficients' values.
        opt_state = optimizer({"learning_rate": 0.0, "max_grad_norm": 0.0}).init(params)
        return {
            "params": params,
            "opt_state": opt_state,
            "env_state": env_state,
            "obs": obs,
            "episode_return": jnp.zeros(num_envs),
            "env_steps": jnp.zeros((), jnp.int32),
        }

    def rollout(state, key):
        def one_step(carry, step_key):
            env_state, obs, episode_return = carry
            action_key, env_key = jax.random.split(step_key)
            logits, value = network.apply(state["params"], obs)
            action = jax.random.categorical(action_key, logits)
            log_prob = jax.nn.log_softmax(logits)[jnp.arange(num_envs), action]
            next_obs, env_state, reward, done = step_envs(
                jax.random.split(env_key, num_envs), env_state, action, env_params
            )
            episode_return = episode_return + reward
            finished = jnp.where(done > 0, episode_return, 0.0)
            transition = (obs, action, reward, done, value, log_prob, finished)
            return (env_state, next_obs, jnp.where(done > 0, 0.0, episode_return)), transition

        carry = (state["env_state"], state["obs"], state["episode_return"])
        carry, transitions = jax.lax.scan(one_step, carry, jax.random.split(key, rollout_steps))
        return carry, transitions

    def advantages(transitions, last_value, hparams):
        _, _, reward, done, value, _, _ = transitions
        gamma, lam = hparams["gamma"], hparams["gae_lambda"]

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

    def loss_fn(params, minibatch, hparams):
        obs, action, old_value, old_log_prob, advantage, target = minibatch
        logits, value = network.apply(params, obs)
        log_probs = jax.nn.log_softmax(logits)
        log_prob = jnp.take_along_axis(log_probs, action[:, None], axis=-1)[:, 0]
        clip = hparams["clip_eps"]
        clipped_value = old_value + jnp.clip(value - old_value, -clip, clip)
        value_loss = 0.5 * jnp.maximum((value - target) ** 2, (clipped_value - target) ** 2).mean()
        advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
        ratio = jnp.exp(log_prob - old_log_prob)
        policy_loss = -jnp.minimum(
            ratio * advantage, jnp.clip(ratio, 1 - clip, 1 + clip) * advantage
        ).mean()
        entropy = -(jnp.exp(log_probs) * log_probs).sum(-1).mean()
        total = policy_loss + hparams["vf_coef"] * value_loss - hparams["ent_coef"] * entropy
        return total, (value_loss, entropy)

    def train(state, hparams, key, step):
        rollout_key, shuffle_key = jax.random.split(key)
        (env_state, obs, episode_return), transitions = rollout(state, rollout_key)
        _, last_value = network.apply(state["params"], obs)
        advantage, target = advantages(transitions, last_value, hparams)
        flat = jax.tree_util.tree_map(
            lambda x: x.reshape((batch,) + x.shape[2:]),
            (transitions[0], transitions[1], transitions[4], transitions[5], advantage, target),
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
        finished = transitions[6]
        episodes = jnp.sum(finished != 0.0)
        new_state = {
            "params": params,
            "opt_state": opt_state,
            "env_state": env_state,
            "obs": obs,
            "episode_return": episode_return,
            "env_steps": state["env_steps"] + batch,
        }
        return new_state, {
            "loss": loss.mean(),
            "value_loss": value_loss.mean(),
            "entropy": entropy.mean(),
            "return": jnp.sum(finished) / jnp.maximum(episodes, 1),  # episodes ended here
        }

    def evaluate(state, hparams, key):
        reset_key, play_key = jax.random.split(key)
        obs, env_state = reset_envs(jax.random.split(reset_key, eval_episodes), env_params)

        def one_step(carry, step_key):
            env_state, obs, total, running = carry
            action_key, env_key = jax.random.split(step_key)
            logits, _ = network.apply(state["params"], obs)
            action = jax.random.categorical(action_key, logits)
            obs, env_state, reward, done = step_envs(
                jax.random.split(env_key, eval_episodes), env_state, action, env_params
            )
            total = total + reward * running  # each environment's first episode only
            return (env_state, obs, total, running & (done == 0)), None

        start = (env_state, obs, jnp.zeros(eval_episodes), jnp.ones(eval_episodes, bool))
        (_, _, total, _), _ = jax.lax.scan(one_step, start, jax.random.split(play_key, max_episode))
        return {"return": total.mean(), "env_steps": state["env_steps"].astype(jnp.float32)}

    return Task(
        init=init,
        train=train,
        evaluate=evaluate,
        fitness="return",
        space=PPO_SPACE,
        name=f"ppo-{env}",
    )
