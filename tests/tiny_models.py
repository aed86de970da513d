"""The same small classifier (inputs -> hidden relu -> dropout -> outputs) in flax linen, flax
nnx and equinox, for the tests of popjax.models; a config names them as "tiny_models:Name"."""

import equinox as eqx
import flax.linen as linen
import jax
from flax import nnx

from popjax.nn import Dropout


class LinenNet(linen.Module):
    width: int = 16
    outputs: int = 3

    @linen.compact
    def __call__(self, x, *, dropout_rate=0.0, train=False):
        x = Dropout()(linen.relu(linen.Dense(self.width)(x)), dropout_rate, train)
        return linen.Dense(self.outputs)(x)


class NnxNet(nnx.Module):
    def __init__(self, inputs=12, width=16, outputs=3, *, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(inputs, width, rngs=rngs)
        self.dropout = nnx.Dropout(0.1, rngs=rngs)  # popjax drops at each member's rate
        self.out = nnx.Linear(width, outputs, rngs=rngs)

    def __call__(self, x):
        return self.out(self.dropout(nnx.relu(self.hidden(x))))


class EqxNet(eqx.Module):
    hidden: eqx.nn.Linear
    dropout: eqx.nn.Dropout
    out: eqx.nn.Linear

    def __init__(self, inputs=12, width=16, outputs=3, *, key):
        hidden_key, out_key = jax.random.split(key)
        self.hidden = eqx.nn.Linear(inputs, width, key=hidden_key)
        self.dropout = eqx.nn.Dropout(0.1)
        self.out = eqx.nn.Linear(width, outputs, key=out_key)

    def __call__(self, x, *, key=None):
        return self.out(self.dropout(jax.nn.relu(self.hidden(x)), key=key))


def nnx_linear(key, inputs=12, outputs=3):
    """A function key -> module: one nnx linear layer."""
    return nnx.Linear(inputs, outputs, rngs=nnx.Rngs(key))


def eqx_linear(key, inputs=12, outputs=3):
    """A function key -> module: one equinox linear layer."""
    return eqx.nn.Linear(inputs, outputs, key=key)
