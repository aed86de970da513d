"""Tasks built on the task interface (``popjax.Task``): classification and regression of
arrays with a flax model. A reinforcement-learning task or a user's own sits beside them."""

from popjax.tasks.supervised import classification, regression

__all__ = ["classification", "regression"]
