"""Models written with flax linen, flax nnx and equinox train alike (popjax.models)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from tiny_models import EqxNet, LinenNet, NnxNet, eqx_linear, nnx_linear

import popjax
from popjax.data import Dataset
from popjax.errors import PopjaxError
from popjax.models import as_model

from conftest import classifier, hparams_for, members, segment_of

FIXED = {"learning_rate": 0.1, "momentum": 0.5, "dropout": 0.0, "weight_decay": 0.0}
SHORT = dict(population=2, steps=40, interval=20, batch_size=16, progress=False, write=False)
MODELS = {"linen": LinenNet(), "nnx": NnxNet, "equinox": EqxNet}


@pytest.mark.slow
@pytest.mark.parametrize("api", ["nnx", "equinox"])  # a linen module's runs: test_sweep
def test_the_same_classifier_trains_in_every_api(api, small_data):
    if api == "nnx":  # named by a config, by import path
        config = popjax.SweepConfig(model={"name": "tiny_models:NnxNet"}, space=FIXED)
        result = popjax.run(config, data=small_data, **SHORT)
    else:  # equinox's as a function key -> module: the third form model= takes
        result = popjax.run(
            model=lambda key: EqxNet(key=key), data=small_data, space=FIXED, **SHORT
        )
    first, last = result.history[0]["val_loss"], result.history[-1]["val_loss"]
    assert np.all(np.asarray(last) < np.asarray(first))  # every member learns
    assert result.best_val["accuracy"] > 0.6  # chance is 1/3


@pytest.mark.parametrize("name", ["LinenNet", "NnxNet", "EqxNet"])
def test_a_config_names_a_model_by_import_path_with_its_fields(name, small_data):
    config = popjax.SweepConfig(model={"name": f"tiny_models:{name}", "width": 5}, space=FIXED)
    plan = popjax.Plan.from_config(
        config, **{k: SHORT[k] for k in ("population", "steps", "interval")}
    )
    assert plan.config.name == f"mnist1d-{name}"  # the class, not its module path
    _, [group] = plan.build(data=small_data)
    hparams = {k: jnp.float32(v) for k, v in FIXED.items()}
    state = jax.eval_shape(
        lambda k: group.task.init(k, hparams, group.task.data.train), jax.random.PRNGKey(0)
    )
    shapes = {leaf.shape for leaf in jax.tree_util.tree_leaves(state["params"])}
    # The width field reached the constructor: a [12 -> 5] layer, however the API lays it out.
    assert {(12, 5), (5, 12)} & shapes, shapes


def plain_forward(api, key, x):
    """The model's output in evaluation mode, by the API's own means."""
    if api == "nnx":
        model = NnxNet(rngs=nnx.Rngs(key))
        model.eval()
        return model(x)
    return jax.vmap(eqx.nn.inference_mode(EqxNet(key=key)))(x)


@pytest.mark.parametrize("api", ["nnx", "equinox"])
def test_each_member_drops_at_its_own_rate(api, small_data):
    model = as_model(MODELS[api])
    key, x = jax.random.PRNGKey(3), jnp.asarray(small_data.x_train[:32])
    variables = model.init(key, x)

    def train_forward(rate, dropout_key):
        return model.apply(
            variables, x, dropout_rate=rate, train=True, rngs={"dropout": dropout_key}
        )

    keys = jax.random.split(jax.random.PRNGKey(4), 2)
    out = jax.jit(jax.vmap(train_forward))(jnp.array([0.0, 0.5]), keys)
    np.testing.assert_allclose(out[0], plain_forward(api, key, x), rtol=1e-6, atol=1e-6)
    # Half the hidden units dropped: most outputs move, by a lot.
    assert np.mean(np.abs(np.asarray(out[1] - out[0])) > 1e-3) > 0.5
    evaluated = jax.jit(lambda v: model.apply(v, x))(variables)
    np.testing.assert_allclose(evaluated, out[0], rtol=1e-6, atol=1e-6)


def softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)


@pytest.mark.parametrize(
    "api, model",
    [("linen", None), ("nnx", nnx_linear), ("equinox", eqx_linear)],
    ids=["linen", "nnx", "equinox"],
)
def test_one_sgd_step_moves_each_member_by_its_own_learning_rate(api, model):
    if model is None:
        model = popjax.nn.MLP(hidden=(), num_classes=3)
    rng = np.random.default_rng(0)
    # One training example repeated: every batch is that example, whatever is drawn.
    x_train = np.repeat(rng.normal(size=(1, 12)).astype(np.float32), 8, axis=0)
    y_train = np.full(8, 2, np.int32)
    x_val = rng.normal(size=(6, 12)).astype(np.float32)
    y_val = np.array([0, 1, 2, 0, 1, 2], np.int32)
    data = Dataset(x_train, y_train, x_val, y_val, x_val, y_val)
    task = classifier(data, model, batch_size=4)
    rates = np.array([0.1, 0.5], np.float32)
    population = members(task, hparams_for(2, learning_rate=list(rates)))
    params = jax.tree_util.tree_map(np.asarray, population.state["params"])
    trained, _ = segment_of(task, 1)(population)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    val = jax.tree_util.tree_map(jnp.asarray, task.data.val)
    losses = jax.vmap(task.evaluate, in_axes=(0, 0, 0, None))(
        trained.state, trained.hparams, keys, val
    )["loss"]

    for member, rate in enumerate(rates):
        if api == "equinox":  # y = W x + b, W [out, in]
            w, b = params["weight"][member].T, params["bias"][member]
        elif api == "nnx":
            w, b = params["kernel"][member], params["bias"][member]
        else:
            w, b = params["Dense_0"]["kernel"][member], params["Dense_0"]["bias"][member]
        # Softmax cross-entropy's gradient at the one example: x (p - onehot), p - onehot.
        error = softmax(x_train[0] @ w + b) - np.eye(3)[2]
        w, b = w - rate * np.outer(x_train[0], error), b - rate * error
        probs = softmax(x_val @ w + b)
        expected = -np.mean(np.log(probs[np.arange(6), y_val]))
        np.testing.assert_allclose(losses[member], expected, rtol=1e-5)
    assert not np.isclose(losses[0], losses[1])


@pytest.mark.parametrize(
    "model, space, message",
    [
        (NnxNet(rngs=nnx.Rngs(0)), {}, "not a built module"),
        ("mlp", {}, "takes a flax linen module, an nnx or equinox"),
        (LinenNet, {}, "not its class: give LinenNet(...)"),
        (lambda key: jnp.zeros(3), {}, "must return a flax linen, nnx or equinox module"),
        (lambda key: NnxNet(outputs=2, rngs=nnx.Rngs(key)), {}, "outputs 2 logits but"),
        (lambda key: NnxNet(inputs=7, rngs=nnx.Rngs(key)), {}, "cannot take inputs of shape"),
        (NnxNet, {"activation": {"prior": "choice", "values": ["relu", "tanh"]}}, "activation="),
        (EqxNet, {"init_scale": 2.0}, "equinox model initializes its own"),
    ],
    ids=[
        "nnx-instance",
        "string",
        "linen-class",
        "not-a-module",
        "outputs",
        "inputs",
        "activation",
        "equinox-init",
    ],
)
def test_a_wrong_model_is_a_one_line_error(model, space, message, small_data):
    with pytest.raises(PopjaxError) as error:
        popjax.run(model=model, data=small_data, space=space, **SHORT)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_config_model_that_does_not_take_its_fields_is_a_config_error():
    with pytest.raises(popjax.config.ConfigError, match="does not take its fields") as error:
        popjax.Plan.from_config(
            popjax.SweepConfig(model={"name": "tiny_models:NnxNet", "depth": 2})
        )
    assert "\n" not in str(error.value)
