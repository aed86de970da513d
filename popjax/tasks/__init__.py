"""Tasks built on the task interface (``popjax.Task``): classification and regression of arrays
with a flax model, and PPO agents on gymnax environments (``rl``). A user's own sits beside them.
"""

from popjax.tasks import rl, supervised
from popjax.tasks.rl import ppo
from popjax.tasks.supervised import classification, regression

__all__ = ["classification", "ppo", "regression", "rl", "supervised"]
