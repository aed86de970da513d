"""The example tasks of experiments/own_tasks (flax.nnx transformer, equinox MLP), written with
popjax's public interface alone: each builds from its config's fields, trains under
``popjax.run`` at a tiny size, and learns something a model at its initial weights cannot."""

import math
import sys
import tomllib
from pathlib import Path

import pytest

import popjax

OWN_TASKS = Path(__file__).parent.parent / "experiments" / "own_tasks"
sys.path.insert(0, str(OWN_TASKS))

import equinox_mlp  # noqa: E402
import transformer  # noqa: E402


def config_fields(name: str) -> dict:
    """A config's task fields, without its name: the factory must take them."""
    with open(OWN_TASKS / f"{name}.toml", "rb") as file:
        table = tomllib.load(file)["task"]
    return {key: value for key, value in table.items() if key != "name"}


@pytest.mark.parametrize(
    "config, factory",
    [
        ("transformer", "transformer:language_model"),
        ("transformer_random", "transformer:language_model"),
        ("equinox_mlp", "equinox_mlp:classifier"),
        ("equinox_mlp_random", "equinox_mlp:classifier"),
    ],
)
def test_configs_name_the_tasks_and_their_fields(config, factory):
    parsed = popjax.SweepConfig.from_toml(OWN_TASKS / f"{config}.toml").validate()
    assert parsed.task["name"] == factory
    assert parsed.pbt.enabled == (not config.endswith("_random"))
    module, _, function = factory.partition(":")
    made = getattr(sys.modules[module], function)(**config_fields(config))
    assert isinstance(made, popjax.Task)


@pytest.mark.slow
def test_transformer_learns_the_characters():
    task = transformer.language_model(
        context=16, width=16, heads=2, layers=1, batch_size=8, eval_windows=16, text_chars=20000
    )
    vocab = int(task.data.train.max()) + 1
    result = popjax.run(
        task=task,
        population=2,
        steps=40,
        interval=20,
        space={"learning_rate": 0.01, "dropout": 0.1},
        write=False,
        progress=False,
    )
    # A model that has learned nothing predicts near-uniformly: log(vocab) nats per character.
    # English characters' unigram entropy alone is well below that.
    assert result.best_val["loss"] < math.log(vocab) - 1.0
    assert result.best_test["bits_per_char"] == pytest.approx(
        result.best_test["loss"] / math.log(2), rel=1e-5
    )


@pytest.mark.slow
def test_equinox_classifier_learns():
    task = equinox_mlp.classifier(hidden=(32,), batch_size=32)
    result = popjax.run(
        task=task,
        population=2,
        steps=60,
        interval=20,
        space={"learning_rate": 0.05, "momentum": 0.9, "dropout": 0.1},
        write=False,
        progress=False,
    )
    accuracy = [max(record["val_accuracy"]) for record in result.history]
    # Chance is 10% on MNIST-1D's ten classes; the best of each round must also rise.
    assert accuracy[-1] > 25.0
    assert accuracy[-1] > accuracy[0]
    assert result.best_test["accuracy"] > 25.0
