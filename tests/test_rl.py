"""PPO agents on gymnax as a population: they learn, PBT copies whole agents, a killed run
resumes bit-identically."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import popjax
from popjax.cli import main

from conftest import (
    final_state,
    jitted_pbt_step,
    jitted_population,
    kill_and_resume,
    random_policy_return,
)

gymnax = pytest.importorskip("gymnax")

SMALL = {"num_envs": 4, "rollout_steps": 64, "eval_episodes": 8}


@pytest.mark.slow
def test_a_population_of_ppo_agents_learns_cartpole():
    task = popjax.tasks.rl.ppo("CartPole-v1", **SMALL)
    # Two rounds clear the margin with room: the best is 11 to 23 times chance on seeds 0-3.
    result = popjax.run(
        task=task, population=4, steps=16, interval=8, write=False, progress=False, seed=0
    )
    chance = random_policy_return("CartPole-v1", steps=500, episodes=64)
    assert 15 < chance < 30  # CartPole's random policy lasts about 22 steps
    assert result.best_val["return"] > 4 * chance
    last = result.history[-1]
    assert last["val_env_steps"] == [16 * 4 * 64] * 4
    assert last["selects_on"] == "val_return" and not last["minimize"]


def test_pbt_copies_a_whole_agent_and_the_copy_plays_on_with_its_own_keys():
    from popjax.config import PBTConfig
    from popjax.population import select
    from popjax.train import make_segment

    task = popjax.tasks.rl.ppo("CartPole-v1", num_envs=2, rollout_steps=16)
    space = popjax.SearchSpace(task.space, builtin=False)
    step = jax.jit(make_segment(task, 1))
    population, _ = step(jitted_population(task, space, 4))
    pbt_step = jitted_pbt_step(space, PBTConfig())
    new, source, replaced = pbt_step(jax.random.PRNGKey(3), population, jnp.arange(4.0))
    copy = int(np.flatnonzero(np.asarray(replaced))[0])
    parent = int(source[copy])
    assert parent != copy
    # On the host: indexing every leaf eagerly would compile a gather per leaf shape.
    host, host_new = jax.device_get((population, new))
    want, got = select(host, parent), select(host_new, copy)
    leaves = jax.tree_util.tree_leaves_with_path(got.state)
    assert any("env_state" in jax.tree_util.keystr(path) for path, _ in leaves)
    for (path, a), b in zip(leaves, jax.tree_util.tree_leaves(want.state)):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
    np.testing.assert_array_equal(got.rng, population.rng[copy])  # its own key stream
    after, _ = step(new)
    # Same agent, same environments, other keys: the next rollouts part ways.
    assert not np.array_equal(after.state["obs"][copy], after.state["obs"][parent])


RL_TOML = """
population = 2
steps = 24
interval = 2
checkpoint_every = 2
keep_checkpoints = 3

[task]
name = "popjax.tasks.rl:ppo"
env = "CartPole-v1"
num_envs = 2
rollout_steps = 16
eval_episodes = 2
"""


@pytest.mark.slow
def test_a_killed_ppo_run_resumes_bit_identically(tmp_path, monkeypatch):
    (tmp_path / "rl.toml").write_text(RL_TOML)
    # The uninterrupted run in this process, on one device as the killed one: the same programs
    # (which the killed processes then load from the session's cache).
    monkeypatch.chdir(tmp_path)
    assert main(["run", "rl.toml", "--out", "whole", "--quiet", "--no-report"]) == 0
    kill_and_resume("rl.toml", tmp_path, checkpoints=2)
    rounds, leaves = final_state(tmp_path / "killed")
    whole_rounds, whole_leaves = final_state(tmp_path / "whole")
    assert rounds == whole_rounds == 12
    for got, want in zip(leaves, whole_leaves, strict=True):
        np.testing.assert_array_equal(got, want)
    history = (tmp_path / "killed" / "metrics.jsonl").read_text()
    assert history == (tmp_path / "whole" / "metrics.jsonl").read_text()
