"""The ``Dataset`` a built-in task trains on, checked as it is built, and the samplers that draw
each member's batches on the device.

A ``Dataset`` holds float32 inputs and int32 labels (float32 targets for a regression) with
train, validation and test splits. The validation split is carved from the training data: PBT
selects on it and never sees the test split. Arrays reach the device once; each member samples
its own batches there (``sample_uniform``), so no batch crosses from the host during training.
Where data comes from (MNIST-1D, sklearn's sets, a file) is ``popjax.data``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import jax
import jax.numpy as jnp
import numpy as np

from popjax.errors import PopjaxError


class DataError(PopjaxError):
    """Data that cannot be used; the message says what to change."""


@dataclass(frozen=True)
class Dataset:
    """Train, validation and test splits of float32 inputs and int32 labels (float32 targets
    for a regression), checked as built (``popjax.data.from_arrays``, ``popjax.data.load``).

    Example:
      >>> data = popjax.data.from_arrays(x_train, y_train, x_test, y_test, val_fraction=0.2)
      >>> data.num_classes, data.input_shape
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str = "arrays"
    # Training examples on the devices at once, streamed from the host (``popjax.stream``);
    # None keeps the whole training split on the devices. ``seed`` picks the windows.
    window: int | None = None
    seed: int = 0

    @property
    def is_regression(self) -> bool:
        return bool(np.issubdtype(self.y_train.dtype, np.floating))

    @property
    def num_classes(self) -> int:
        """Classes of a classification; values per target of a regression."""
        if self.is_regression:
            return int(np.prod(self.y_train.shape[1:], dtype=int))
        return int(max(self.y_train.max(), self.y_val.max(), self.y_test.max())) + 1

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def summary(self) -> dict:
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "train": len(self.x_train),
            "val": len(self.x_val),
            "test": len(self.x_test),
        }


def from_arrays(
    x,
    y,
    x_test,
    y_test,
    *,
    val_fraction=0.1,
    seed=0,
    name="arrays",
    regression: bool = False,
    window: int | str | None = None,
) -> Dataset:
    """Builds a dataset from NumPy arrays, holding out ``val_fraction`` of ``x`` for validation.

    Labels are integer classes, or with ``regression=True`` real-valued targets. Every array is
    checked first (numbers only, all finite, matching lengths and shapes, labels 0..C-1), so
    bad data is refused here rather than found by a diverged sweep.

    With ``window`` (examples, or an amount such as "256MiB") the training examples stay on the
    host, ``x`` as it is (a ``numpy.memmap`` of any size is never read whole), and each round
    trains on a window of them on the devices (see ``popjax.stream``); their values are then
    checked as each window is read.
    """
    if window is not None:
        return _streamed(x, y, x_test, y_test, val_fraction, seed, name, regression, window)
    (x, y), (x_test, y_test) = checked_splits(
        {"x": (x, y), "x_test": (x_test, y_test)}, ("y", "y_test"), regression
    )
    val, train = _split_off_val(len(x), val_fraction, seed)
    return Dataset(x[train], y[train], x[val], y[val], x_test, y_test, name=name)


def _split_off_val(count: int, val_fraction, seed: int):
    """``(validation, training)`` indices: a fixed shuffle, so the validation split is the same
    for every run of the same seed."""
    if not (
        isinstance(val_fraction, (int, float))
        and not isinstance(val_fraction, bool)
        and 0.0 < val_fraction < 1.0
    ):
        raise DataError(f"val_fraction must be between 0 and 1 (got {val_fraction!r})")
    num_val = int(round(count * val_fraction))
    if num_val < 1 or num_val >= count:
        raise DataError(
            f"{count} training examples are too few to hold out val_fraction "
            f"{val_fraction:g}: give more examples or another val_fraction"
        )
    order = np.random.default_rng(seed).permutation(count)
    return order[:num_val], order[num_val:]


def _streamed(x, y, x_test, y_test, val_fraction, seed, name, regression, window) -> Dataset:
    """``from_arrays`` with the training examples left on the host, ``x`` never read whole."""
    from popjax.stream import HostRows, window_size

    if isinstance(x, np.ndarray) and x.dtype.kind not in "biuf":
        raise DataError(f"x holds {x.dtype} values: give inputs as numbers (integers or floats)")
    if not (hasattr(x, "__len__") and hasattr(x, "__getitem__")):
        raise DataError(
            f"x is a {type(x).__name__}: give an array, a numpy.memmap, or an object with "
            "__len__ and __getitem__ returning one example"
        )
    y = _numbers("y", y, "labels")
    if y.ndim == 0 or len(x) != len(y):
        raise DataError(
            f"x has {len(x)} examples but y has {len(y) if y.ndim else 'no'} labels: give one "
            "label per example"
        )
    val, train = _split_off_val(len(x), val_fraction, seed)
    x_val = HostRows(x, val).take(np.arange(len(val)))
    (x_val, y_val), (x_test, y_test) = checked_splits(
        {"x": (x_val, y[val]), "x_test": (x_test, y_test)}, ("y", "y_test"), regression
    )
    # The labels are small: checked whole, against the other splits' too.
    y_train = _labels("y", y[train], regression)
    if not regression:
        _check_classes(("y", "y", "y_test"), [y_train, y_val, y_test])
    x_train = HostRows(x, train)
    example_bytes = x_train.nbytes // len(x_train) + 4 * int(np.prod(y.shape[1:], dtype=int))
    return Dataset(
        x_train,
        y_train,
        x_val,
        y_val,
        x_test,
        y_test,
        name=name,
        window=window_size(window, example_bytes, len(train)),
        seed=seed,
    )


def check_dataset(dataset: Dataset, regression: bool) -> Dataset:
    """The same checks as ``from_arrays``, for a ``Dataset`` built by hand; returns it with
    float32 inputs and int32 labels (float32 targets of a ``regression``)."""
    if dataset.window is not None:  # built by from_arrays, which checked it
        return dataset
    fields = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
    splits = checked_splits(
        {x: (getattr(dataset, x), getattr(dataset, y)) for x, y in zip(fields[::2], fields[1::2])},
        fields[1::2],
        regression,
    )
    return Dataset(*(array for split in splits for array in split), name=dataset.name)


def streamed(dataset: Dataset, window: int | str, seed: int = 0) -> Dataset:
    """``dataset`` with its training split streamed to the devices ``window`` examples (or an
    amount of memory such as "256MiB") a round, from where it lies on the host."""
    from popjax.stream import window_size

    x, y = dataset.x_train, dataset.y_train
    example_bytes = 4 * int(np.prod(x.shape[1:], dtype=int)) + 4 * int(np.prod(y.shape[1:]))
    return replace(dataset, window=window_size(window, example_bytes, len(x)), seed=seed)


# A label above this and above the number of examples is no class index (a model would need
# one output per class up to it): most likely an id or a value.
MIN_CLASS_LIMIT = 1024


def checked_splits(splits: dict, label_names, regression: bool) -> list[tuple]:
    """Each ``{input name: (inputs, labels)}`` pair checked and converted: float32 inputs, int32
    labels or float32 targets. Errors name the array at fault, as the caller named it."""
    converted = []
    for (x_name, (x, y)), y_name in zip(splits.items(), label_names):
        x, y = _numbers(x_name, x, "inputs"), _numbers(y_name, y, "labels")
        if x.ndim < 2 or 0 in x.shape[1:]:
            raise DataError(
                f"{x_name} has shape {x.shape}: give an array [examples, features...] with at "
                "least one value per example"
            )
        if len(x) == 0:
            raise DataError(f"{x_name} is empty: give at least one example")
        if y.ndim == 0 or len(x) != len(y):
            raise DataError(
                f"{x_name} has {len(x)} examples but {y_name} has "
                f"{len(y) if y.ndim else 'no'} labels: give one label per example"
            )
        # Values beyond float32's range become inf here, and are refused as such.
        with np.errstate(over="ignore"):
            x = _finite(x_name, x.astype(np.float32))
            y = _labels(y_name, y, regression)
        converted.append((x, y))
    names = list(zip(splits, label_names))
    first_x, first_y = converted[0]
    for (x_name, y_name), (x, y) in zip(names[1:], converted[1:]):
        if x.shape[1:] != first_x.shape[1:]:
            raise DataError(
                f"{names[0][0]} has examples of shape {first_x.shape[1:]} but {x_name} of shape "
                f"{x.shape[1:]}: give every split the same per-example shape"
            )
        if y.shape[1:] != first_y.shape[1:]:
            raise DataError(
                f"{names[0][1]} has targets of shape {first_y.shape[1:]} but {y_name} of shape "
                f"{y.shape[1:]}: give every split the same target shape"
            )
    if not regression:
        _check_classes(label_names, [y for _, y in converted])
    return converted


def _labels(name: str, labels: np.ndarray, regression: bool) -> np.ndarray:
    """float32 targets of a regression, int32 class indices of a classification."""
    labels = _numbers(name, labels, "labels")
    if regression:
        with np.errstate(over="ignore"):
            return _finite(name, labels.astype(np.float32))
    return _class_indices(name, labels)


def _check_classes(label_names, labels: list[np.ndarray]) -> None:
    """Labels of every split together: class indices 0..C-1 of at least two classes."""
    examples = sum(len(y) for y in labels)
    highest = max(int(y.max()) for y in labels)
    if highest >= max(examples, MIN_CLASS_LIMIT):
        name = next(n for n, y in zip(label_names, labels) if y.max() == highest)
        raise DataError(
            f"{name} holds the label {highest}, but labels are class indices 0..C-1 (a "
            f"model gets one output per class) and there are {examples} examples: "
            "number the classes 0..C-1"
        )
    if len(np.unique(np.concatenate(labels))) < 2:
        raise DataError(
            f"{label_names[0]} holds one class only: a classification needs at least two"
        )


def _numbers(name: str, values, what: str) -> np.ndarray:
    try:
        array = np.asarray(values)
    except (ValueError, TypeError) as error:  # ragged lists
        raise DataError(f"{name} is not an array ({error}): give a NumPy array of {what}") from None
    if array.dtype.kind not in "biuf":
        raise DataError(
            f"{name} holds {array.dtype} values: give {what} as numbers (integers or floats)"
        )
    return array


def _finite(name: str, array: np.ndarray) -> np.ndarray:
    bad = ~np.isfinite(array)
    if bad.any():
        first = int(np.argwhere(bad)[0][0])
        raise DataError(
            f"{name} holds {int(bad.sum())} NaN or infinite value(s) as float32 (the first in "
            f"example {first}): remove or replace them"
        )
    return array


def _class_indices(name: str, labels: np.ndarray) -> np.ndarray:
    if labels.dtype.kind not in "iu":
        raise DataError(
            f"{name} holds {labels.dtype} values: a classification takes integer class indices "
            '0..C-1 (cast with .astype(int)); real-valued targets need task = "regression"'
        )
    if labels.ndim != 1:
        raise DataError(
            f"{name} has shape {labels.shape}: a classification takes one class index per "
            "example (shape [examples]), not one-hot or several"
        )
    if labels.size and labels.min() < 0:
        raise DataError(
            f"{name} holds the label {int(labels.min())}: labels are class indices 0..C-1"
        )
    if labels.size and labels.max() > np.iinfo(np.int32).max:
        raise DataError(
            f"{name} holds the label {int(labels.max())}: labels are class indices 0..C-1"
        )
    return labels.astype(np.int32)


def class_index(labels) -> dict[str, np.ndarray]:
    """Tables for class-balanced sampling: the examples sorted by class, where each class
    starts, how many it has, and which classes are present."""
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=int(labels.max()) + 1)
    return {
        "by_class": np.argsort(labels, kind="stable").astype(np.int32),
        "class_starts": np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int32),
        "class_counts": counts.astype(np.int32),
        "classes_present": np.flatnonzero(counts).astype(np.int32),
    }


def window_class_index(labels, num_classes: int) -> dict[str, np.ndarray]:
    """``class_index`` of a streamed window, its tables the same shape whichever classes the
    window holds (one compiled round for every window), with ``num_present``."""
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=num_classes)[:num_classes]
    present = np.flatnonzero(counts)
    return {
        "by_class": np.argsort(labels, kind="stable").astype(np.int32),
        "class_starts": np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int32),
        "class_counts": counts.astype(np.int32),
        "classes_present": np.pad(present, (0, num_classes - len(present))).astype(np.int32),
        "num_present": np.int32(len(present)),
    }


def sample_uniform(key, split, batch_size: int):
    """A batch drawn uniformly with replacement from ``split["x"], split["y"]``: each member's
    key gives its own batch order."""
    index = jax.random.randint(key, (batch_size,), 0, split["x"].shape[0])
    return jnp.asarray(split["x"])[index], jnp.asarray(split["y"])[index]


def sample_balanced(key, split, batch_size: int, balanced):
    """Uniform, or class-balanced where ``balanced`` > 0.5 (``split`` holds ``class_index``).

    Class-balanced draws a class uniformly, then an example of it, so rare classes are seen
    as often as common ones. The uniform draw is exactly ``sample_uniform``'s.
    """
    uniform = jax.random.randint(key, (batch_size,), 0, split["x"].shape[0])
    class_key, member_key = jax.random.split(jax.random.fold_in(key, 1))
    split = {name: jnp.asarray(array) for name, array in split.items()}
    present = split["classes_present"]
    # A streamed window's tables keep one shape whichever classes it holds: the first
    # ``num_present`` entries are the classes present.
    num_present = split.get("num_present", present.shape[0])
    classes = present[jax.random.randint(class_key, (batch_size,), 0, num_present)]
    within = jax.random.randint(member_key, (batch_size,), 0, split["class_counts"][classes])
    index = jnp.where(
        balanced > 0.5, split["by_class"][split["class_starts"][classes] + within], uniform
    )
    return split["x"][index], split["y"][index]
