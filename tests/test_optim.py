"""A member's optimizer reads what its family needs and takes the documented default for what
the search space does not name, matching optax's own optimizers."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from popjax import PopjaxError, optim


def updates_of(optimizer, steps=5):
    """The parameters after ``steps`` updates on fixed pseudo-random gradients."""
    params = {"w": jnp.linspace(-1.0, 1.0, 6), "b": jnp.ones(2)}
    state = optimizer.init(params)
    for i in range(steps):
        grads = jax.tree.map(lambda p: jnp.sin(p * (i + 1.0)) + 0.1 * i, params)
        updates, state = optimizer.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params


def test_adam_takes_defaults_for_what_the_space_lacks():
    mine = optim.member_optimizer({"learning_rate": 0.01, "b1": 0.8}, family="adam")
    theirs = optax.adam(0.01, b1=0.8, b2=0.999, eps=1e-8)
    for a, b in zip(jax.tree.leaves(updates_of(mine)), jax.tree.leaves(updates_of(theirs))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_sgd_without_momentum_or_decay_is_plain_sgd():
    mine = optim.member_optimizer({"learning_rate": 0.1}, family="sgd")
    theirs = optax.sgd(0.1)
    for a, b in zip(jax.tree.leaves(updates_of(mine)), jax.tree.leaves(updates_of(theirs))):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_init_state_fits_the_optimizer_of_a_partial_space():
    hparams = {"learning_rate": jnp.float32(0.01)}
    params = {"w": jnp.zeros(3)}
    state = optim.init_state(params, hparams, family="adam")
    optimizer = optim.member_optimizer(hparams, family="adam")
    expected = jax.tree.structure(optimizer.init(params))
    assert jax.tree.structure(state) == expected


def test_a_missing_learning_rate_or_unknown_family_is_one_line():
    with pytest.raises(PopjaxError, match="reads learning_rate") as error:
        optim.member_optimizer({"momentum": 0.9})
    assert "\n" not in str(error.value)
    with pytest.raises(PopjaxError, match="unknown optimizer 'lino': did you mean 'lion'"):
        optim.member_optimizer({"learning_rate": 0.1}, family="lino")


def test_every_family_default_is_documented_in_the_readme():
    from test_readme import README

    text = README.read_text()
    for family, reads in optim.FAMILY_HPARAMS.items():
        row = next(line for line in text.splitlines() if line.startswith(f"| `{family}`"))
        for name, default in reads.items():
            assert f"`{name}`" in row, (family, name)
            if default is not None:
                assert f"{default:g}" in row, (family, name, default)
