"""Tasks built on the task interface (``popjax.Task``): classification and regression of arrays
with a flax model, PPO agents on gymnax environments (``rl``) and SAC agents for continuous
actions (``sac.sac``). A user's own sits beside them.
"""

from popjax.tasks import rl, sac, supervised
from popjax.tasks.rl import ppo
from popjax.tasks.supervised import classification, regression

__all__ = ["classification", "ppo", "regression", "rl", "sac", "supervised"]
