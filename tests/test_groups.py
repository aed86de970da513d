"""Groups: sub-populations with their own model, loss and optimizer family in one sweep."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import popjax
from popjax import replay, report
from popjax.nn import MLP
from popjax.tasks.supervised import cross_entropy, squared_error

from conftest import died_after

GROUPS = [
    {"name": "narrow", "population": 4, "model": {"hidden": [8]}},
    {
        "name": "adam-bn",
        "population": 4,
        "loss": "squared_error",
        "model": {"hidden": [16, 16], "batch_norm": True},
        "space": {"optimizer": "adam", "b1": {"prior": "uniform", "low": 0.8, "high": 0.9}},
    },
]


@pytest.fixture(scope="module")
def grouped(tmp_path_factory, small_data):
    """The grouped sweep run to its end, a checkpoint kept after every round (the resume test
    cuts it back)."""
    out = tmp_path_factory.mktemp("groups") / "run"
    config = popjax.SweepConfig(
        groups=GROUPS,
        model={"name": "mlp", "hidden": [16]},
        checkpoint_every=1,
        keep_checkpoints=10,
    )
    result = popjax.run(
        config,
        data=small_data,
        steps=60,
        interval=10,
        batch_size=16,
        out=out,
        progress=False,
        seed=1,
    )
    return result, out


def test_each_group_compiles_once_and_pbt_copies_within_it(grouped):
    result, _ = grouped
    assert result.config.population == 8
    assert result.groups == {"narrow": [0, 4], "adam-bn": [4, 8]}
    assert result.lineage.groups == result.groups
    assert result.compilations == 2  # one round program per group
    copies = 0
    for parents in result.lineage.parents:
        for member, parent in enumerate(parents):
            assert (member < 4) == (parent < 4)
            copies += parent != member
    assert copies > 0
    narrow, adam = result.population
    assert narrow.params["Dense_0"]["kernel"].shape[-1] == 8
    assert adam.params["Dense_1"]["kernel"].shape[-2:] == (16, 16)
    assert "BatchNorm_0" in adam.params


def test_records_say_which_group_and_which_hyperparameters(grouped):
    result, out = grouped
    last = result.history[-1]
    assert last["group"] == ["narrow"] * 4 + ["adam-bn"] * 4
    assert popjax.Lineage.load(out / "lineage.json").groups == {"narrow": [0, 4], "adam-bn": [4, 8]}
    assert all(v is None for v in last["hparams"]["momentum"][4:])
    assert all(v is None for v in last["hparams"]["b1"][:4])
    assert all(0.8 <= v <= 0.9 for v in last["hparams"]["b1"][4:])
    # A member's replayed schedules are its own group's hyperparameters.
    adam_member = replay.trajectories(out, member=5)["schedules"]
    assert "b1" in adam_member and "momentum" not in adam_member
    assert report.write_report(out).is_file()


def test_group_errors_are_one_line():
    for groups, message in [
        ([{"population": 4, "width": 3}], "unknown group key 'width'"),
        ([{"name": "a", "population": 4}, {"name": "a", "population": 4}], "two groups"),
        ([{"name": "a"}], "needs population"),
        ([{"population": 4, "loss": "hinge"}], "unknown loss 'hinge'"),
        ([{"population": 4, "space": {"b1": 0.9}}], "parameter of the adam optimizer"),
    ]:
        with pytest.raises(popjax.PopjaxError, match=message):
            popjax.Plan.from_config(popjax.SweepConfig(groups=groups))


def test_squared_error_and_batch_norm():
    logits = jnp.array([[2.0, 0.0], [0.0, 0.5]])
    labels = jnp.array([0, 1])
    assert float(squared_error(logits, labels)) == pytest.approx((1 + 0 + 0 + 0.25) / 2)
    assert float(squared_error(logits, labels)) != pytest.approx(
        float(cross_entropy(logits, labels))
    )
    # In training, batch normalization normalizes each feature over the batch (a linear
    # read-out of zeros then sees exactly standardized features) and updates running statistics.
    # Jitted: one compile, where op by op each of flax's operations compiles on its own.
    model = MLP(hidden=(5,), num_classes=5, batch_norm=True)
    x = jax.random.normal(jax.random.PRNGKey(0), (64, 3)) * 3 + 7
    variables = jax.jit(model.init)(jax.random.PRNGKey(1), x)
    train = jax.jit(functools.partial(model.apply, train=True, mutable=["batch_stats"]))
    _, updated = train(variables, x, rngs={"dropout": jax.random.PRNGKey(2)})
    hidden = x @ variables["params"]["Dense_0"]["kernel"] + variables["params"]["Dense_0"]["bias"]
    stats = updated["batch_stats"]["BatchNorm_0"]
    np.testing.assert_allclose(stats["mean"], 0.1 * np.asarray(hidden).mean(0), rtol=1e-4)


def test_batch_norm_evaluates_an_example_the_same_alone_or_with_the_split(small_data):
    task = popjax.tasks.classification(
        MLP(hidden=(16,), num_classes=3, batch_norm=True), small_data, batch_size=16
    )
    from conftest import hparams_for, members, segment_of

    trained, _ = segment_of(task, 30)(members(task, hparams_for(2)))
    state = jax.tree_util.tree_map(lambda leaf: leaf[0], trained.state)
    assert float(np.abs(state["batch_stats"]["BatchNorm_0"]["mean"]).sum()) > 0  # it trained
    variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    x = jnp.asarray(small_data.x_val)
    apply = jax.jit(MLP(hidden=(16,), num_classes=3, batch_norm=True).apply)
    together, alone = apply(variables, x), apply(variables, x[:1])
    np.testing.assert_allclose(alone[0], together[0], rtol=1e-5, atol=1e-6)


def test_a_grouped_sweep_resumes_to_the_same_result(tmp_path, grouped, small_data):
    whole, out = grouped
    run = tmp_path / "run"
    assert died_after(out, run, 2)[-1] == whole.lineage.rounds  # a checkpoint every round
    resumed = popjax.run(resume=run, data=small_data, progress=False)
    assert resumed.best_test == whole.best_test
    assert resumed.lineage.parents == whole.lineage.parents
    assert resumed.history == whole.history
