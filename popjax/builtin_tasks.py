"""The built-in tasks built from a config: classification and regression with popjax's own
models (``popjax.nn``) and losses, each model and loss checked by name and fields before any
data is read, and the model checked against a batch once it is."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from popjax.config import MAX_COUNT, ConfigError, SweepConfig
from popjax.dataset import Dataset
from popjax.errors import PopjaxError, shown, unknown_name_error
from popjax.task import Task

# Weights stay float32 whatever the compute dtype: the optimizer updates float32 masters.
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


def builtin_task(config: SweepConfig, data: Dataset, model=None, loss_fn=None) -> Task:
    """The classification or regression a (group's) config names, on ``data``; ``model`` and
    ``loss_fn``, when given, instead of the config's."""
    from popjax.tasks import supervised

    regression = config.task["name"] == "regression"
    if loss_fn is None:
        loss_fn = supervised.mean_squared_error if regression else supervised.LOSSES[config.loss]
    if loss_fn is not supervised.cross_entropy:
        needs = [n for n in supervised.PER_EXAMPLE_HPARAMS if n in config.space.priors]
        if needs:
            raise PopjaxError(
                f"{', '.join(needs)} work with popjax's own cross-entropy "
                'only: use loss = "cross_entropy" or remove them'
            )
    from popjax.models import as_model

    if model is None:
        model = build_model(config, data.num_classes)
    model = as_model(model)
    check_model_hparams(model, config.space.priors)
    check_model_fits(model, data.x_train[: config.batch_size], data.num_classes, regression)
    common = dict(batch_size=config.batch_size, loss=loss_fn, optimizer=config.space.optimizer)
    if regression:
        task = supervised.regression(model, data, **common)
    else:
        task = supervised.classification(model, data, metric=config.metric, **common)
    return task


def check_arguments(data, model, loss_fn) -> None:
    """What ``popjax.run`` was given for a built-in task, by type, before anything is built."""
    if data is not None and not isinstance(data, Dataset):
        raise PopjaxError(
            f"data= takes a popjax.Dataset, such as popjax.data.from_arrays(x, y, x_test, "
            f"y_test) (got a {type(data).__name__}); a config's data table goes in the config: "
            "SweepConfig(data={...})"
        )
    if isinstance(model, dict):
        raise PopjaxError(
            "model= takes a module (flax linen, nnx or equinox), such as "
            "popjax.nn.MLP(hidden=(64, 64)); a config's model table goes in the config: "
            "SweepConfig(model={...})"
        )
    if model is not None:
        from popjax.models import check_model_argument

        check_model_argument(model)
    if loss_fn is not None and not callable(loss_fn):
        raise PopjaxError(
            f"loss_fn= takes a function loss_fn(logits, labels) -> scalar (got a "
            f'{type(loss_fn).__name__}); a config names its loss with loss = "squared_error"'
        )


def build_model(config: SweepConfig, num_outputs: int):
    """The model a built-in task's config names: one of popjax's own (given ``num_outputs``),
    or a user's by import path, ``"package.module:Name"``, with its fields."""
    from popjax.models import load_model
    from popjax.nn import MODELS

    fields = {k: v for k, v in config.model.items() if k != "name"}
    if ":" in config.model["name"]:
        return load_model(config.model["name"], fields)
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    return MODELS[config.model["name"]](num_classes=num_outputs, **fields)


def check_model_hparams(model, priors) -> None:
    """The model-side hyperparameters of the space that this model can take."""
    from popjax.hyperparameters import acting_in
    from popjax.models import api_of, takes_keyword

    if "activation" in priors and not takes_keyword(model, "activation"):
        raise PopjaxError(
            "the space tunes activation but the model's call takes no activation= argument: "
            "add one (popjax.nn.activate(x, activation) picks the function) or remove "
            "activation from the space"
        )
    init = [name for name in acting_in("init") if name in priors]
    if init and api_of(model) == "equinox":
        raise PopjaxError(
            f"{', '.join(init)} rescale flax's LeCun-normal kernels; an equinox model "
            "initializes its own: remove them from the space"
        )


def check_model_fits(model, sample_x, num_outputs: int, regression: bool = False) -> None:
    """Runs the model once on one batch: a shape mismatch becomes a one-line error."""
    from popjax.models import as_model

    sample_x = jnp.asarray(sample_x)
    model = as_model(model)
    try:
        variables = jax.eval_shape(
            lambda k: model.init(k, sample_x, train=False), jax.random.PRNGKey(0)
        )
        outputs = jax.eval_shape(lambda v: model.apply(v, sample_x, train=False), variables)
    except Exception as error:  # flax raises many kinds on a shape mismatch
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
        raise PopjaxError(
            f"the model cannot take inputs of shape {tuple(sample_x.shape[1:])}: {first_line}"
        ) from None
    if regression and outputs.shape[-1] != num_outputs:
        raise PopjaxError(
            f"the model outputs {outputs.shape[-1]} values but a target has "
            f"{num_outputs}: give the model {num_outputs} outputs"
        )
    if not regression and outputs.shape[-1] < num_outputs:
        raise PopjaxError(
            f"the model outputs {outputs.shape[-1]} logits but the labels have {num_outputs} "
            "classes: give the model at least as many outputs"
        )


def check_model(model: dict) -> None:
    """A config's model table, before any data is read: popjax's own by name and fields, a
    user's by import path (imported, and its fields checked against its signature)."""
    from popjax.models import load_model
    from popjax.nn import MODELS

    name = model.get("name")
    if isinstance(name, str) and ":" in name:
        try:
            load_model(name, {k: v for k, v in model.items() if k != "name"})
        except PopjaxError as error:
            raise ConfigError(str(error)) from None
        return
    if name not in MODELS:
        raise ConfigError(unknown_name_error("model", str(name), tuple(MODELS)))
    module_fields = [
        f.name
        for f in dataclasses.fields(MODELS[name])
        if f.name not in ("parent", "name", "num_classes")
    ]
    for key in model:
        if key != "name" and key not in module_fields:
            raise ConfigError(unknown_name_error(f"{name} model field", str(key), module_fields))
    dtype = model.get("dtype", "float32")
    if not isinstance(dtype, str) or dtype not in COMPUTE_DTYPES:
        raise ConfigError(unknown_name_error("model dtype", str(dtype), COMPUTE_DTYPES))
    defaults = {f.name: f.default for f in dataclasses.fields(MODELS[name])}
    for key, value in model.items():
        _check_model_field(name, key, value, defaults.get(key))


def _check_model_field(model: str, key: str, value, default) -> None:
    """A field of popjax's own models, by the type of its default: sizes are whole numbers."""

    def size(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_COUNT

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{model}.{key} must be true or false (got {shown(value)})")
    elif isinstance(default, int):
        if not size(value):
            raise ConfigError(f"{model}.{key} must be a whole number >= 1 (got {shown(value)})")
    elif isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or not all(map(size, value)):
            raise ConfigError(
                f"{model}.{key} must be a list of whole numbers >= 1, such as "
                f"{list(default)} (got {shown(value)})"
            )


def check_loss(loss: str) -> None:
    from popjax.tasks import supervised

    if not isinstance(loss, str) or loss not in supervised.LOSSES:
        raise ConfigError(unknown_name_error("loss", str(loss), tuple(supervised.LOSSES)))
