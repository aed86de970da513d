"""SAC agents on gymnax as a population: the ring buffer keeps the newest transitions, agents
learn Pendulum, PBT copies whole agents (buffer included), the buffer shows in the memory plan,
a killed run resumes bit-identically."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import popjax
from popjax.cli import main
from popjax.errors import PopjaxError
from popjax.tasks import transition_buffer

from conftest import (
    final_state,
    jitted_pbt_step,
    jitted_population,
    kill_and_resume,
    random_policy_return,
)

gymnax = pytest.importorskip("gymnax")

TINY = {
    "num_envs": 1,
    "rollout_steps": 4,
    "buffer_size": 64,
    "learning_starts": 8,
    "max_batch": 8,
    "hidden": 16,
    "eval_episodes": 1,
}


def test_the_ring_buffer_keeps_the_newest_transitions_and_samples_only_those():
    buffer = transition_buffer.empty({"x": jnp.zeros(2), "r": jnp.zeros(())}, capacity=4)
    buffer = transition_buffer.add(buffer, {"x": jnp.ones((3, 2)), "r": jnp.arange(1.0, 4)})
    drawn = transition_buffer.sample(buffer, jax.random.PRNGKey(0), 64)
    assert set(np.asarray(drawn["r"]).tolist()) == {1.0, 2.0, 3.0}  # never the empty slot
    buffer = transition_buffer.add(buffer, {"x": jnp.ones((3, 2)), "r": jnp.arange(4.0, 7)})
    assert int(buffer["count"]) == 4 and int(buffer["position"]) == 2
    np.testing.assert_array_equal(buffer["data"]["r"], [5.0, 6.0, 3.0, 4.0])  # 1, 2 written over
    # More at once than it holds: the last four stay, in ring order.
    buffer = transition_buffer.add(buffer, {"x": jnp.ones((6, 2)), "r": jnp.arange(10.0, 16)})
    assert sorted(np.asarray(buffer["data"]["r"]).tolist()) == [12.0, 13.0, 14.0, 15.0]
    assert buffer["data"]["r"][(int(buffer["position"]) - 1) % 4] == 15.0


def test_sac_refuses_discrete_actions_and_bad_sizes_in_one_line():
    with pytest.raises(PopjaxError, match="continuous actions") as error:
        popjax.tasks.sac.sac("CartPole-v1")
    assert "\n" not in str(error.value)
    with pytest.raises(PopjaxError, match="buffer_size must be a whole number >= 1"):
        popjax.tasks.sac.sac(buffer_size=0)


@pytest.mark.slow
def test_a_population_of_sac_agents_learns_pendulum():
    task = popjax.tasks.sac.sac(
        num_envs=1,
        rollout_steps=50,
        buffer_size=4000,
        learning_starts=500,
        max_batch=64,
        hidden=64,
        eval_episodes=4,
    )
    near = lambda v: {"prior": "uniform", "low": v * 0.99, "high": v * 1.01}  # noqa: E731
    space = {
        "actor_learning_rate": near(1e-3),
        "critic_learning_rate": near(1e-3),
        "gamma": near(0.99),
        "tau": near(0.005),
        "target_entropy": -1.0,
        "batch_size": 64.0,
        "replay_ratio": 1.0,
    }
    result = popjax.run(
        task=task,
        population=2,
        steps=80,
        interval=40,
        space=space,
        write=False,
        progress=False,
        seed=0,
    )
    chance = random_policy_return("Pendulum-v1", steps=200, episodes=32)
    assert -1500 < chance < -1000  # Pendulum's random policy
    assert result.best_val["return"] > 0.5 * chance  # half the random policy's cost at most
    last = result.history[-1]
    assert last["val_env_steps"] == [80 * 50] * 2
    # One update per environment step from the call whose steps reach learning_starts on.
    assert last["val_updates"] == [80 * 50 - 450] * 2


def test_pbt_copies_a_whole_sac_agent_buffer_included_and_the_copy_keeps_its_keys():
    from popjax.config import PBTConfig
    from popjax.population import select
    from popjax.train import make_segment

    task = popjax.tasks.sac.sac("Pendulum-v1", **TINY)
    space = popjax.SearchSpace(task.space, builtin=False)
    step = jax.jit(make_segment(task, 3))
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
    names = {jax.tree_util.keystr(path) for path, _ in leaves}
    for part in ("buffer", "target_critic", "log_alpha", "critic_opt", "env_state"):
        assert any(part in name for name in names), part
    assert int(got.state["buffer"]["count"]) == 12  # three calls of 4 transitions
    for (path, a), b in zip(leaves, jax.tree_util.tree_leaves(want.state)):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
    np.testing.assert_array_equal(got.rng, population.rng[copy])  # its own key stream
    after, _ = step(new)
    # Same agent, same buffer, other keys: the next transitions part ways.
    stored = after.state["buffer"]["data"]["action"]
    assert not np.array_equal(stored[copy], stored[parent])


def test_the_memory_plan_counts_each_members_buffer():
    """XLA's memory analysis of a compiled step of the population, as the sweep plans its round
    (``popjax.programs``): the buffer is state like any other, so the plan counts it."""
    from popjax.memory import compiled_bytes
    from popjax.population import init_population
    from popjax.train import make_segment

    def planned(buffer_size):
        task = popjax.tasks.sac.sac("Pendulum-v1", **{**TINY, "buffer_size": buffer_size})
        space = popjax.SearchSpace(task.space, builtin=False)
        key = jax.random.PRNGKey(0)
        population = jax.eval_shape(lambda: init_population(key, task, space, 2))
        lowered = jax.jit(make_segment(task, 1), donate_argnums=0).lower(population)
        return compiled_bytes(lowered.compile())

    small, large = planned(1_000), planned(9_000)
    # A transition: observation and next observation (3 each), action, reward, terminated.
    per_member = (9_000 - 1_000) * (3 + 3 + 1 + 1 + 1) * 4
    assert 2 * per_member <= large - small <= 3 * 2 * per_member


SAC_TOML = """
population = 2
steps = 24
interval = 2
checkpoint_every = 2
keep_checkpoints = 3

[task]
name = "popjax.tasks.sac:sac"
env = "Pendulum-v1"
num_envs = 1
rollout_steps = 4
buffer_size = 64
learning_starts = 8
max_batch = 8
hidden = 16
eval_episodes = 1
"""


@pytest.mark.slow
def test_a_killed_sac_run_resumes_bit_identically(tmp_path, monkeypatch):
    (tmp_path / "sac.toml").write_text(SAC_TOML)
    # The uninterrupted run in this process, on one device as the killed one: the same programs
    # (which the killed processes then load from the session's cache).
    monkeypatch.chdir(tmp_path)
    assert main(["run", "sac.toml", "--out", "whole", "--quiet", "--no-report"]) == 0
    kill_and_resume("sac.toml", tmp_path, checkpoints=2)
    rounds, leaves = final_state(tmp_path / "killed")
    whole_rounds, whole_leaves = final_state(tmp_path / "whole")
    assert rounds == whole_rounds == 12
    for got, want in zip(leaves, whole_leaves, strict=True):
        np.testing.assert_array_equal(got, want)
    history = (tmp_path / "killed" / "metrics.jsonl").read_text()
    assert history == (tmp_path / "whole" / "metrics.jsonl").read_text()
