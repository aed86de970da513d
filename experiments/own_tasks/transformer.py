"""A character-level causal transformer language model in flax.nnx, as a popjax task.

Written with popjax's public interface alone, to be copied. The patterns it shows:

- ``graphdef, params = nnx.split(model)``: the task's state holds only the arrays; the graph
  definition is made once in the factory and ``nnx.merge(graphdef, params)`` rebuilds the
  module inside ``train`` and ``evaluate`` (one member at a time, under popjax's ``vmap``);
- dropout with a traced, per-member rate written with ``jax.random.bernoulli``: flax's
  ``nnx.Dropout`` checks its rate in Python, which fails on a traced value;
- the learning rate read from ``hparams["learning_rate"]`` at every step, with no schedule in
  the task, so a schedule set in the config's ``[space]`` reaches it;
- the text as ``TaskData`` arrays, so they reach the compiled round as arguments.

    cd experiments/own_tasks && popjax run transformer.toml
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import popjax


def python_docs_text() -> str:
    """The Python documentation's topic texts (about 0.5 MB of English), shipped with Python."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name] for name in sorted(topics))


def dropout(x, rate, key):
    """Inverted dropout whose ``rate`` may be traced (a member's hyperparameter)."""
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


class Block(nnx.Module):
    """Pre-norm attention and MLP, each added back to the residual stream after dropout."""

    def __init__(self, width: int, heads: int, *, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(width, rngs=rngs)
        self.attention = nnx.MultiHeadAttention(
            num_heads=heads, in_features=width, decode=False, rngs=rngs
        )
        self.norm2 = nnx.LayerNorm(width, rngs=rngs)
        self.up = nnx.Linear(width, 4 * width, rngs=rngs)
        self.down = nnx.Linear(4 * width, width, rngs=rngs)

    def __call__(self, x, mask, rate, key):
        keys = jax.random.split(key, 2)
        x = x + dropout(self.attention(self.norm1(x), mask=mask), rate, keys[0])
        return x + dropout(self.down(nnx.gelu(self.up(self.norm2(x)))), rate, keys[1])


# flax 0.12 wants a list of modules wrapped in nnx.List; flax 0.11 (Colab's) has none and takes
# a plain list.
MODULE_LIST = getattr(nnx, "List", list)


class LanguageModel(nnx.Module):
    def __init__(self, vocab, context, width, heads, layers, *, rngs: nnx.Rngs):
        self.embed = nnx.Embed(vocab, width, rngs=rngs)
        self.position = nnx.Embed(context, width, rngs=rngs)
        self.blocks = MODULE_LIST([Block(width, heads, rngs=rngs) for _ in range(layers)])
        self.norm = nnx.LayerNorm(width, rngs=rngs)
        self.head = nnx.Linear(width, vocab, rngs=rngs)

    def __call__(self, tokens, rate, key):
        """Logits ``[batch, length, vocab]`` of each next character; ``rate = 0`` at evaluation."""
        length = tokens.shape[-1]
        keys = jax.random.split(key, len(self.blocks) + 1)
        x = self.embed(tokens) + self.position(jnp.arange(length))
        x = dropout(x, rate, keys[0])
        mask = nnx.make_causal_mask(tokens)
        for block, k in zip(self.blocks, keys[1:]):
            x = block(x, mask, rate, k)
        return self.head(self.norm(x))


def language_model(
    context: int = 64,
    width: int = 64,
    heads: int = 4,
    layers: int = 2,
    batch_size: int = 32,
    eval_windows: int = 256,
    text_chars: int = 0,
) -> popjax.Task:
    """A character-level causal transformer (flax.nnx) trained on the Python docs' topic texts.

    The text is split 90/5/5 into train, validation and test, in that order. A step trains on
    ``batch_size`` random windows of ``context + 1`` characters with AdamW; ``evaluate`` gives
    the mean next-character loss (nats) and bits per character on ``eval_windows``
    non-overlapping windows of its split, and popjax selects on the validation loss.

    Per-member hyperparameters: ``learning_rate`` (read at every step, so a config's schedule
    drives it), ``weight_decay``, ``dropout`` (residual and embedding dropout, a traced rate),
    Adam's ``b1``, ``b2`` and ``eps``. ``text_chars`` > 0 keeps only the first that many
    characters of the text (for tests).
    """
    text = python_docs_text()
    if text_chars:
        text = text[:text_chars]
    alphabet = sorted(set(text))
    lookup = {c: i for i, c in enumerate(alphabet)}
    codes = np.array([lookup[c] for c in text], np.int32)
    train_end, val_end = int(0.9 * len(codes)), int(0.95 * len(codes))
    window = context + 1

    def windows(part):
        count = min(eval_windows, len(part) // window)
        return part[: count * window].reshape(count, window)

    data = popjax.TaskData(
        train=codes[:train_end],
        val=windows(codes[train_end:val_end]),
        test=windows(codes[val_end:]),
    )

    def build(key):
        return LanguageModel(len(alphabet), context, width, heads, layers, rngs=nnx.Rngs(key))

    # The graph definition once; a member's state holds only its arrays.
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: build(jax.random.key(0))))

    def loss_fn(params, batch, rate, key):
        model = nnx.merge(graphdef, params)
        logits = model(batch[:, :-1], rate, key)
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch[:, 1:]).mean()

    def init(key, hparams, train):
        _, params = nnx.split(build(key))
        return {"params": params, "opt_state": popjax.optim.init_state(params, hparams, "adam")}

    def train(state, hparams, key, step, train):
        sample_key, dropout_key = jax.random.split(key)
        starts = jax.random.randint(sample_key, (batch_size,), 0, train.shape[0] - window)
        batch = jax.vmap(lambda s: jax.lax.dynamic_slice(train, (s,), (window,)))(starts)
        loss, grads = jax.value_and_grad(loss_fn)(
            state["params"], batch, hparams["dropout"], dropout_key
        )
        optimizer = popjax.optim.member_optimizer(hparams, family="adam")
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        return {"params": params, "opt_state": opt_state}, {"loss": loss}

    def evaluate(state, hparams, key, split):
        loss = loss_fn(state["params"], split, 0.0, key)
        return {"loss": loss, "bits_per_char": loss / jnp.log(2.0)}

    space = {
        "learning_rate": popjax.LogUniform(1e-4, 1e-2),
        "weight_decay": popjax.LogUniform(1e-4, 0.3),
        "dropout": popjax.Uniform(0.0, 0.3),
        "b1": popjax.Uniform(0.8, 0.95),
        "b2": popjax.Fixed(0.99),
        "eps": popjax.Fixed(1e-8),
    }
    epoch_share = batch_size * context / train_end  # the characters a step predicts
    return popjax.Task(
        init,
        train,
        evaluate,
        fitness="loss",
        minimize=True,
        data=data,
        space=space,
        epochs_per_step=lambda h: np.full(len(h["learning_rate"]), epoch_share),
        name="transformer",
    )
