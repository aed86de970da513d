"""The built-in supervised tasks: selection on validation loss, and the regression task."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import popjax
from popjax.config import PBTConfig
from popjax.data import Dataset
from popjax.nn import MLP
from popjax.round import SelectionState, make_round
from popjax.space import Fixed, SearchSpace

from conftest import classifier, hparams_for, members


@pytest.mark.parametrize("metric, winner", [("loss", 1), ("accuracy", 0)])
def test_the_metric_decides_whom_pbt_copies_where_accuracy_and_loss_disagree(metric, winner):
    # Three one-hot inputs, so a linear model's kernel rows are its logits for each example.
    x, y = np.eye(3, dtype=np.float32), np.array([0, 0, 1], np.int32)
    task = classifier(
        Dataset(x, y, x, y, x, y), MLP(hidden=(), num_classes=2), batch_size=3, metric=metric
    )
    logits = np.array(
        [
            [[1, 0], [1, 0], [20, 0]],  # member 0: two right, one wrong by far: 2/3, loss ~6.9
            [[0, 0.01], [0, 0.01], [0.01, 0]],  # member 1: all wrong by a hair: 0/3, loss ~0.70
        ],
        np.float32,
    )
    population = members(task, hparams_for(2, learning_rate=0.0))
    params = {"Dense_0": {"kernel": jnp.asarray(logits), "bias": jnp.zeros((2, 2))}}
    population = population._replace(state={**population.state, "params": params})
    losses = [
        np.mean(np.log1p(np.exp(-np.array([1, 1, -20])))),
        np.mean(np.log1p(np.exp(np.array([0.01, 0.01, 0.01])))),
    ]
    assert losses[1] < losses[0]  # loss prefers member 1, accuracy member 0
    space = SearchSpace(
        {name: Fixed(0.0) for name in ("learning_rate", "momentum", "dropout", "weight_decay")}
    )
    round_fn = jax.jit(make_round(task, 1, space, PBTConfig(fraction=0.5), jax.random.PRNGKey(0)))
    population, selection, output = round_fn(population, SelectionState.initial(2), 0, task.data)
    np.testing.assert_allclose(output.val["loss"], losses, rtol=1e-4)
    _, _, output = round_fn(population, selection, 1, task.data)
    assert output.parents.tolist() == [winner, winner]


@pytest.mark.slow
def test_regression_on_diabetes_beats_predicting_the_mean(tmp_path):
    config = popjax.SweepConfig(model={"name": "mlp", "hidden": [32]})
    result = popjax.run(
        config,
        task="regression",
        population=8,
        steps=600,
        interval=100,
        batch_size=32,
        out=tmp_path / "run",
        progress=False,
    )
    assert result.fitness == "loss" and result.minimize
    data = popjax.Plan.from_config(task="regression").load_data()
    assert data.name == "diabetes" and data.x_train.shape[1] == 10
    # Predicting the training mean: the loss every model must beat, computed with numpy.
    mean_only = np.mean((data.y_val - data.y_train.mean()) ** 2)
    assert result.best_val["loss"] < 0.75 * mean_only
    assert set(result.best_val) == {"loss"}
    assert result.best_test["loss"] < np.mean((data.y_test - data.y_train.mean()) ** 2)
    assert result.best_val["loss"] == min(result.history[-1]["val_loss"])
    assert popjax.report.write_report(tmp_path / "run").is_file()


def test_regression_refuses_accuracy_and_classification_data():
    with pytest.raises(popjax.PopjaxError, match="unknown metric of a regression 'accuracy'"):
        popjax.Plan.from_config(task="regression", metric="accuracy")
    with pytest.raises(popjax.PopjaxError, match="'digits' is a classification dataset"):
        popjax.Plan.from_config(task="regression", data={"name": "digits"}).load_data()
