"""PPO for continuous actions: running statistics, advantages at a time limit, gymnax's
continuous environments, learning Pendulum, PBT copying whole agents with their statistics, and
Brax environments from a config."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import popjax
from popjax.tasks import normalize, rl, rl_envs

from conftest import jitted_pbt_step, jitted_population, random_policy_return

gymnax = pytest.importorskip("gymnax")


def test_running_statistics_merge_batches_like_numpy_over_them_all():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, (n, 3)).astype(np.float32) for n in (5, 40, 7)]
    stats = normalize.RunningStats.initial((3,))
    merge = jax.jit(normalize.update)
    for batch in batches:
        stats = merge(stats, jnp.asarray(batch))
    every = np.concatenate(batches)
    # The initial count of 1e-4 weighs (mean 0, variance 1) that little.
    np.testing.assert_allclose(stats.mean, every.mean(0), rtol=1e-4)
    np.testing.assert_allclose(stats.var, every.var(0), rtol=1e-4)
    np.testing.assert_allclose(stats.count, len(every) + 1e-4, rtol=1e-6)
    scaled = normalize.normalize(stats, jnp.asarray(every))
    np.testing.assert_allclose(scaled.mean(0), 0.0, atol=1e-3)
    np.testing.assert_allclose(scaled.std(0), 1.0, atol=1e-3)


def test_discounted_returns_restart_after_an_episode_ends():
    rewards = jnp.asarray([[1.0], [2.0], [3.0], [4.0]])
    dones = jnp.asarray([[0.0], [1.0], [0.0], [0.0]])
    last, returns = normalize.discounted_returns(jnp.asarray([10.0]), rewards, dones, 0.5)
    want = [10 * 0.5 + 1, (10 * 0.5 + 1) * 0.5 + 2, 3, 3 * 0.5 + 4]
    np.testing.assert_allclose(returns[:, 0], want)
    np.testing.assert_allclose(last, [want[-1]])


def reference_advantages(reward, terminated, truncated, final_value, value, last_value, gamma, lam):
    """GAE written as a plain loop over one environment, the way Stable-Baselines3 bootstraps
    at a time limit (reward += gamma * V(final observation))."""
    steps = len(reward)
    advantage, gae = np.zeros(steps), 0.0
    for t in reversed(range(steps)):
        r = reward[t] + gamma * final_value[t] * truncated[t]
        ended = terminated[t] or truncated[t]
        next_value = last_value if t == steps - 1 else value[t + 1]
        delta = r + gamma * next_value * (1 - ended) - value[t]
        gae = delta + gamma * lam * (1 - ended) * gae
        advantage[t] = gae
    return advantage


def test_advantages_bootstrap_a_truncated_episode_and_not_a_terminated_one():
    rng = np.random.default_rng(1)
    steps = 9
    reward, value, final_value = (rng.normal(size=steps) for _ in range(3))
    terminated = np.zeros(steps)
    truncated = np.zeros(steps)
    terminated[2], truncated[6] = 1, 1
    gamma, lam = 0.9, 0.8
    done = np.maximum(terminated, truncated)
    with_bootstrap = reward + gamma * truncated * final_value  # as the task adds it
    column = lambda x: jnp.asarray(x, jnp.float32)[:, None]
    got, target = rl.generalized_advantages(
        column(with_bootstrap), column(done), column(value), jnp.asarray([0.7]), gamma, lam
    )
    want = reference_advantages(reward, terminated, truncated, final_value, value, 0.7, gamma, lam)
    np.testing.assert_allclose(got[:, 0], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(target[:, 0], want + value, rtol=1e-5, atol=1e-6)
    # Where the time limit cut the episode, the final observation's value counts.
    cut = reference_advantages(
        reward, terminated, truncated, 0 * final_value, value, 0.7, gamma, lam
    )
    assert abs(cut[6] - want[6]) > 1e-3 and cut[7] == want[7]


@pytest.mark.parametrize("env", ["Pendulum-v1", "MountainCarContinuous-v0"])
def test_gymnax_continuous_environments_report_the_time_limit_as_truncation(env):
    envs = rl_envs.environments(env, 5, None)
    assert envs.num_actions is None and envs.action_shape == (1,) and envs.max_episode == 5
    obs, state = envs.reset(jax.random.split(jax.random.PRNGKey(0), 2))
    step = jax.jit(envs.step)
    for t in range(5):
        keys = jax.random.split(jax.random.PRNGKey(t + 1), 2)
        # 5.0 is past both environments' bounds: the adapter clips it, so nothing is NaN.
        next_obs, state, reward, terminated, truncated, final_obs = step(
            keys, state, jnp.full((2, 1), 5.0)
        )
        assert np.isfinite(np.asarray(reward)).all()
        assert (np.asarray(terminated) == 0).all()
        assert (np.asarray(truncated) == (t == 4)).all(), t
        if t < 4:
            np.testing.assert_array_equal(final_obs, next_obs)
    # At the limit the environments restarted: the final observation is the old episode's.
    assert not np.allclose(final_obs, next_obs)
    assert (np.asarray(state.time) == 0).all()


PENDULUM = {"num_envs": 8, "rollout_steps": 128, "epochs": 10, "minibatches": 16}


@pytest.mark.slow
def test_a_population_of_gaussian_ppo_agents_learns_pendulum():
    task = rl.ppo("Pendulum-v1", **PENDULUM)
    # Pendulum's usual PPO setting (rl-baselines3-zoo): a short horizon and a large step.
    task = task._replace(
        space={**task.space, "learning_rate": popjax.Fixed(1e-3), "gamma": popjax.Fixed(0.9)}
    )
    result = popjax.run(
        task=task, population=2, steps=30, interval=10, write=False, progress=False, seed=0
    )
    chance = random_policy_return("Pendulum-v1", steps=200, episodes=32)
    assert -1500 < chance < -1000  # a random torque leaves the pendulum hanging
    assert result.best_val["return"] > chance / 2  # at most half the random policy's cost
    assert result.history[-1]["val_env_steps"] == [30 * 8 * 128] * 2


def test_pbt_copies_a_whole_continuous_agent_with_its_running_statistics():
    from popjax.config import PBTConfig
    from popjax.population import select
    from popjax.train import make_segment

    task = rl.ppo("Pendulum-v1", num_envs=2, rollout_steps=16, epochs=1, minibatches=1, hidden=8)
    space = popjax.SearchSpace(task.space, builtin=False)
    population, _ = jax.jit(make_segment(task, 2))(jitted_population(task, space, 4))
    stats = population.state["obs_stats"]
    assert not np.allclose(stats.mean[0], stats.mean[1])  # every member its own statistics
    pbt_step = jitted_pbt_step(space, PBTConfig())
    new, source, replaced = pbt_step(jax.random.PRNGKey(3), population, jnp.arange(4.0))
    copy = int(np.flatnonzero(np.asarray(replaced))[0])
    parent = int(source[copy])
    assert parent != copy
    # On the host: indexing every leaf eagerly would compile a gather per leaf shape.
    host, host_new = jax.device_get((population, new))
    want, got = select(host, parent), select(host_new, copy)
    leaves = jax.tree_util.tree_leaves_with_path(got.state)
    paths = " ".join(jax.tree_util.keystr(path) for path, _ in leaves)
    for part in ("obs_stats", "return_stats", "discounted_return", "log_std", "env_state"):
        assert part in paths, part
    for (path, a), b in zip(leaves, jax.tree_util.tree_leaves(want.state), strict=True):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
    # The explored hyperparameters are the parent's, perturbed: init_log_std among them.
    assert "init_log_std" in got.hparams


# Brax's "fast", its environment for unit tests: a point pushed along a line, rewarded by its
# position, through the same PipelineEnv and wrappers as the physics environments at a third of
# their compile time (experiments/rl/brax_inverted_pendulum.toml trains on a physics one).
BRAX_TOML = """
population = 2
steps = 2
interval = 1

[task]
name = "popjax.tasks.rl:ppo"
env = "brax:fast"
episode_length = 16
num_envs = 2
rollout_steps = 8
minibatches = 2
epochs = 1
eval_episodes = 2
"""


@pytest.mark.slow
def test_a_brax_environment_runs_under_popjax_run_from_a_config(tmp_path, capsys):
    pytest.importorskip("brax", reason="Brax is an optional extra: pip install 'popjax[brax]'")
    import json

    from popjax.cli import main

    (tmp_path / "brax.toml").write_text(BRAX_TOML)
    code = main(["run", str(tmp_path / "brax.toml"), "--out", str(tmp_path / "run"), "--quiet"])
    assert code in (0, None), capsys.readouterr().err
    records = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    last = records[-1]
    assert last["val_env_steps"] == [2 * 2 * 8] * 2
    # Each step a positive action adds dt to the speed, and the reward is the position: at
    # most sum over t = 1..16 of dt^2 t (t + 1) / 2 in an episode of 16 steps, 0 at the least.
    dt = 0.02
    most = sum(dt**2 * t * (t + 1) / 2 for t in range(1, 17))
    assert all(0 <= r <= most + 1e-5 for r in last["val_return"])


def test_a_brax_setting_on_a_gymnax_environment_is_a_one_line_error():
    with pytest.raises(popjax.PopjaxError, match="backend is for Brax environments"):
        rl.ppo("Pendulum-v1", backend="spring")
