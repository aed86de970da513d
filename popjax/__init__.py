"""popjax: train whole populations of neural networks at once in JAX, with PBT.

    >>> import popjax
    >>> result = popjax.run(population=8, steps=400, interval=100, write=False)
    >>> result.best_hparams
"""

from popjax import data, distributed, nn, replay, schedules
from popjax.config import SweepConfig
from popjax.data import Dataset
from popjax.errors import PopjaxError
from popjax.lineage import Lineage
from popjax.mesh import use_cpu_cores
from popjax.pbt import PBTConfig
from popjax.population import Population
from popjax.space import Choice, Fixed, LogUniform, SearchSpace, Uniform
from popjax.sweep import SweepResult, run

__version__ = "0.1.0"

__all__ = [
    "Choice", "Dataset", "Fixed", "Lineage", "LogUniform", "PBTConfig", "Population",
    "PopjaxError", "SearchSpace", "SweepConfig", "SweepResult", "Uniform", "data", "distributed",
    "nn", "replay", "run", "schedules", "use_cpu_cores",
]
