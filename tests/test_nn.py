"""The models: popjax's patch convolution equals flax's, and bfloat16 compute keeps float32
weights."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from popjax.nn import CNN1D, MLP, Conv1D


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("length", [40, 39])
def test_conv1d_matches_flax_conv(stride, length):
    x = jax.random.normal(jax.random.PRNGKey(0), (3, length, 2))
    ours, flax_conv = Conv1D(6, kernel_size=5, stride=stride), nn.Conv(6, (5,), (stride,))
    variables = ours.init(jax.random.PRNGKey(1), x)
    # Same parameter shapes and init, so flax's layer runs on popjax's parameters.
    assert jax.tree.map(jnp.shape, variables) == jax.tree.map(
        jnp.shape, flax_conv.init(jax.random.PRNGKey(1), x)
    )
    np.testing.assert_allclose(
        ours.apply(variables, x), flax_conv.apply(variables, x), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("model", [MLP(hidden=(16,)), CNN1D(channels=(4,), hidden=8)])
def test_bfloat16_compute_keeps_float32_weights_and_logits(model):
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 40))
    variables = model.init(jax.random.PRNGKey(1), x)
    low = model.clone(dtype="bfloat16")
    assert all(
        leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(low.init(jax.random.PRNGKey(1), x))
    )
    full, half = model.apply(variables, x), low.apply(variables, x)
    assert half.dtype == jnp.float32
    assert not np.array_equal(full, half)  # computed in bfloat16 ...
    np.testing.assert_allclose(full, half, atol=0.1)  # ... to bfloat16's precision
