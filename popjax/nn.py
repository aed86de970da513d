"""Flax layers and models whose dropout rate is a traced, per-member array.

flax's own ``Dropout`` branches on ``rate == 0.0`` in Python, which fails on a traced rate, so
popjax has its own. A model used by popjax is a linen module called as
``model.apply({"params": p}, x, dropout_rate=rate, train=train, rngs={"dropout": key})``.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def dropout(x, rate, key):
    """Inverted dropout with a traced ``rate`` in [0, 1).

    Rate 0 keeps every unit and returns ``x`` unchanged, bit for bit.
    """
    keep = 1.0 - rate
    mask = jax.random.bernoulli(key, keep, x.shape)
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


class Dropout(nn.Module):
    """Dropout whose rate is passed at call time and may be traced."""

    @nn.compact
    def __call__(self, x, rate, train: bool):
        if not train:
            return x
        return dropout(x, rate, self.make_rng("dropout"))


class MLP(nn.Module):
    """Fully connected network: Dense -> relu -> dropout, then a linear read-out."""

    hidden: Sequence[int] = (256, 256)
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, *, dropout_rate=0.0, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
            x = Dropout()(x, dropout_rate, train)
        return nn.Dense(self.num_classes)(x)


class CNN1D(nn.Module):
    """A small 1-D convolutional network for sequences of shape ``[batch, length]``."""

    channels: Sequence[int] = (32, 32, 32)
    hidden: int = 128
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, *, dropout_rate=0.0, train: bool = False):
        if x.ndim not in (2, 3):
            raise ValueError(f"the 1-D CNN takes [length] or [length, channels] examples, "
                             f"not {tuple(x.shape[1:])}: use the MLP or reshape the data")
        if x.ndim == 2:
            x = x[..., None]  # [batch, length] -> [batch, length, 1 channel]
        for channels in self.channels:
            x = nn.relu(nn.Conv(channels, kernel_size=(5,), strides=(2,))(x))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(self.hidden)(x))
        x = Dropout()(x, dropout_rate, train)
        return nn.Dense(self.num_classes)(x)


MODELS = {"mlp": MLP, "cnn": CNN1D}
