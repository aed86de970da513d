"""popjax: train whole populations of neural networks at once in JAX, with PBT.

    >>> import popjax
    >>> result = popjax.run(population=8, steps=400, interval=100, write=False)
    >>> result.best_hparams

The names below load on first use, so that ``import popjax.schedules`` (jax and optax alone)
does not pull in the sweep, orbax, flax or the plots.
"""

import importlib

__version__ = "0.1.0"

# name -> (module, attribute or None for the module itself)
_EXPORTS = {
    "Choice": ("popjax.space", "Choice"),
    "Dataset": ("popjax.dataset", "Dataset"),
    "Fixed": ("popjax.space", "Fixed"),
    "Lineage": ("popjax.lineage", "Lineage"),
    "LogUniform": ("popjax.space", "LogUniform"),
    "PBTConfig": ("popjax.pbt_settings", "PBTConfig"),
    "Plan": ("popjax.plan", "Plan"),
    "Population": ("popjax.population", "Population"),
    "PopjaxError": ("popjax.errors", "PopjaxError"),
    "SearchSpace": ("popjax.space", "SearchSpace"),
    "SweepConfig": ("popjax.config", "SweepConfig"),
    "SweepResult": ("popjax.result", "SweepResult"),
    "Task": ("popjax.task", "Task"),
    "TaskData": ("popjax.task", "TaskData"),
    "Uniform": ("popjax.space", "Uniform"),
    "run": ("popjax.api", "run"),
    "use_cpu_cores": ("popjax.devices", "use_cpu_cores"),
    "augment": ("popjax.augment", None),
    "cache": ("popjax.cache", None),
    "data": ("popjax.data", None),
    "dataset": ("popjax.dataset", None),
    "distributed": ("popjax.distributed", None),
    "hyperparameters": ("popjax.hyperparameters", None),
    "memory": ("popjax.memory", None),
    "models": ("popjax.models", None),
    "nn": ("popjax.nn", None),
    "optim": ("popjax.optim", None),
    "replay": ("popjax.replay", None),
    "report": ("popjax.report", None),
    "schedules": ("popjax.schedules", None),
    "stream": ("popjax.stream", None),
    "tasks": ("popjax.tasks", None),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'popjax' has no attribute '{name}'")
    module_name, attribute = _EXPORTS[name]
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
