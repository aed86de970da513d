import jax
import numpy as np
import pytest

from popjax.space import Choice, Fixed, LogUniform, SearchSpace, SpaceError, Uniform


def test_samples_stay_within_bounds():
    space = SearchSpace(
        {
            "learning_rate": LogUniform(1e-4, 1e-1),
            "momentum": Uniform(0.5, 0.9),
            "dropout": Choice((0.0, 0.1, 0.3)),
            "weight_decay": Fixed(1e-4),
        }
    )
    hparams = space.sample(jax.random.PRNGKey(0), 256)
    lr = np.asarray(hparams["learning_rate"])
    assert lr.shape == (256,) and lr.min() >= 1e-4 and lr.max() <= 1e-1
    # Log-uniform: about half the mass below the geometric mean.
    assert 0.35 < np.mean(lr < np.sqrt(1e-4 * 1e-1)) < 0.65
    assert np.all(np.isin(np.asarray(hparams["dropout"]), np.float32([0.0, 0.1, 0.3])))
    assert np.all(np.asarray(hparams["weight_decay"]) == np.float32(1e-4))
    m = np.asarray(hparams["momentum"])
    assert m.min() >= 0.5 and m.max() <= 0.9


def test_missing_names_take_defaults():
    space = SearchSpace({"learning_rate": LogUniform(1e-3, 1e-1)})
    assert set(space.names) == {"learning_rate", "momentum", "dropout", "weight_decay"}


@pytest.mark.parametrize(
    "priors, message",
    [
        ({"learning_rat": LogUniform(1e-3, 1e-1)}, "did you mean 'learning_rate'"),
        ({"momentum": Uniform(0.9, 0.1)}, "low must be below high"),
        ({"momentum": Uniform(0.5, 0.5)}, "low must be below high"),
        ({"learning_rate": LogUniform(0.0, 0.1)}, "needs low > 0"),
        ({"weight_decay": LogUniform(-1.0, 0.1)}, "needs low > 0"),
        ({"dropout": Choice(())}, "at least one value"),
    ],
)
def test_bad_spaces_are_clear_errors(priors, message):
    with pytest.raises(SpaceError, match=message):
        SearchSpace(priors)


def test_space_round_trips_through_plain_data():
    space = SearchSpace(
        {
            "learning_rate": LogUniform(1e-3, 1e-1),
            "dropout": Choice((0.0, 0.2)),
            "momentum": Fixed(0.9),
        }
    )
    again = SearchSpace.from_dict(space.to_dict())
    assert again.priors == space.priors


def test_bad_prior_tables_are_clear_errors():
    with pytest.raises(SpaceError, match="did you mean 'log_uniform'"):
        SearchSpace.from_dict({"learning_rate": {"prior": "loguniform", "low": 1, "high": 2}})
    with pytest.raises(SpaceError, match="did you mean 'high'"):
        SearchSpace.from_dict({"momentum": {"prior": "uniform", "low": 0, "hihg": 1}})
