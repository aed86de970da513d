"""Datasets by name: MNIST-1D generated locally, sklearn's digits and diabetes, a user's
``.npz``, each read (and kept in popjax's cache where making it is slow) into a ``Dataset``.

``popjax.data`` is also where users find ``from_arrays`` and ``Dataset``
(``popjax.data.from_arrays(x, y, x_test, y_test)``); they are ``popjax.dataset``'s.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from popjax.cache import cached_arrays
from popjax.dataset import (  # noqa: F401  (popjax.data is the name users know for these)
    DataError,
    Dataset,
    check_dataset,
    checked_splits,
    class_index,
    from_arrays,
    sample_balanced,
    sample_uniform,
    streamed,
)
from popjax.errors import unknown_name_error


def mnist1d(*, val_fraction=0.1, seed=0) -> Dataset:
    """MNIST-1D (4,000 train, 1,000 test, length 40), generated locally; nothing downloads.

    Generating it takes seconds, so it is kept in popjax's cache (``popjax.cache``), keyed by
    the generator's arguments and mnist1d's version.
    """
    from importlib.metadata import version

    def generate():
        # mnist1d's import alone takes over a second (matplotlib, scipy): only on a miss.
        from mnist1d.data import get_dataset_args, make_dataset

        raw = make_dataset(get_dataset_args())
        return {name: raw[name] for name in ("x", "y", "x_test", "y_test")}

    # The generator's arguments are mnist1d's defaults, fixed by its version.
    raw = cached_arrays("mnist1d", {"args": "defaults", "mnist1d": version("mnist1d")}, generate)
    return from_arrays(
        raw["x"],
        raw["y"],
        raw["x_test"],
        raw["y_test"],
        val_fraction=val_fraction,
        seed=seed,
        name="mnist1d",
    )


def split_off_test(count: int, test_fraction: float, seed: int):
    """``(test, rest)`` indices of a data set that ships without a test split: a fixed shuffle
    of the seed, so every run of it holds out the same examples."""
    order = np.random.default_rng(seed + 1).permutation(count)
    num_test = int(round(count * test_fraction))
    return order[:num_test], order[num_test:]


def digits(*, val_fraction=0.1, seed=0, test_fraction=0.2) -> Dataset:
    """sklearn's 8x8 digits (1,797 images, shipped with sklearn), inputs scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    x, y = raw.images.astype(np.float32) / 16.0, raw.target
    test, rest = split_off_test(len(x), test_fraction, seed)
    return from_arrays(
        x[rest], y[rest], x[test], y[test], val_fraction=val_fraction, seed=seed, name="digits"
    )


def diabetes(*, val_fraction=0.1, seed=0, test_fraction=0.2) -> Dataset:
    """sklearn's diabetes regression (442 patients, 10 features, shipped with sklearn).

    The target (disease progression a year on) is standardized with the mean and standard
    deviation of the examples outside the test split, so a loss of 1.0 is predicting the mean.
    """
    from sklearn.datasets import load_diabetes

    raw = load_diabetes()
    x, y = raw.data.astype(np.float32), raw.target.astype(np.float32)
    test, rest = split_off_test(len(x), test_fraction, seed)
    mean, std = y[rest].mean(), y[rest].std()
    x = (x - x[rest].mean(axis=0)) / x[rest].std(axis=0)
    return from_arrays(
        x[rest],
        (y[rest] - mean) / std,
        x[test],
        (y[test] - mean) / std,
        val_fraction=val_fraction,
        seed=seed,
        name="diabetes",
        regression=True,
    )


def from_npz(path, *, val_fraction=0.1, seed=0, regression: bool = False) -> Dataset:
    """Loads a user's ``.npz`` holding ``x``, ``y``, ``x_test`` and ``y_test``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist: give the path of an .npz file")
    names = ("x", "y", "x_test", "y_test")
    try:
        arrays = np.load(path)
        if not isinstance(arrays, np.lib.npyio.NpzFile):
            raise DataError(
                f"{path} holds one array (.npy), not an .npz: save x, y, x_test and y_test "
                "with numpy.savez"
            )
        with arrays:
            missing = [k for k in names if k not in arrays]
            if missing:
                raise DataError(f"{path} lacks {', '.join(missing)}: save x, y, x_test and y_test")
            loaded = {}
            for name in names:
                try:
                    loaded[name] = arrays[name]
                except ValueError as error:
                    if "allow_pickle" not in str(error):
                        raise
                    raise DataError(
                        f"{path}: {name} holds Python objects: save arrays of numbers"
                    ) from None
    except DataError:
        raise
    except Exception as error:  # a damaged file fails in zipfile, zlib or numpy, in many ways
        detail = str(error).strip().splitlines()[0][:120] if str(error).strip() else ""
        raise DataError(
            f"cannot read {path} as .npz ({type(error).__name__}: {detail}): save it again "
            "with numpy.savez"
        ) from None
    return from_arrays(
        *(loaded[name] for name in names),
        val_fraction=val_fraction,
        seed=seed,
        name=path.stem,
        regression=regression,
    )


NPY_FILES = ("x", "y", "x_test", "y_test")


def from_npy(folder, *, val_fraction=0.1, seed=0, regression: bool = False, window=None) -> Dataset:
    """Loads ``x.npy``, ``y.npy``, ``x_test.npy`` and ``y_test.npy`` from ``folder``.

    ``x.npy`` is memory-mapped: with ``window`` (see ``from_arrays``) only the windows a round
    trains on are ever read from it, so it may be larger than the host's memory; without, it is
    read whole.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(
            f"data folder {folder} does not exist: give a folder holding x.npy, y.npy, "
            "x_test.npy and y_test.npy"
        )
    missing = [f"{n}.npy" for n in NPY_FILES if not (folder / f"{n}.npy").is_file()]
    if missing:
        raise DataError(f"{folder} lacks {', '.join(missing)}: save each array with numpy.save")
    arrays = {}
    for name in NPY_FILES:
        try:
            arrays[name] = np.load(folder / f"{name}.npy", mmap_mode="r" if name == "x" else None)
        except Exception as error:  # a damaged file, pickled objects
            raise DataError(
                f"cannot read {folder / name}.npy ({type(error).__name__}): save it again "
                "with numpy.save, as an array of numbers"
            ) from None
    return from_arrays(
        *(arrays[name] for name in NPY_FILES),
        val_fraction=val_fraction,
        seed=seed,
        name=folder.name,
        regression=regression,
        window=window,
    )


BUILTIN = {"mnist1d": mnist1d, "digits": digits, "diabetes": diabetes}


def load(
    name: str = "mnist1d",
    *,
    path=None,
    val_fraction=0.1,
    seed=0,
    regression: bool = False,
    window=None,
) -> Dataset:
    """A dataset by config name: ``mnist1d``, ``digits``, ``diabetes``, ``npz`` (with
    ``path``; its ``y`` read as real-valued targets when ``regression``) or ``npy`` (``path``
    a folder, see ``from_npy``); with ``window``, its training split streamed (see
    ``popjax.stream``)."""
    if name == "npy":
        if path is None:
            raise DataError("data name 'npy' needs a path: set data.path to your folder of .npy")
        return from_npy(
            path, val_fraction=val_fraction, seed=seed, regression=regression, window=window
        )
    if name == "npz":
        if path is None:
            raise DataError("data name 'npz' needs a path: set data.path to your .npz file")
        dataset = from_npz(path, val_fraction=val_fraction, seed=seed, regression=regression)
        return dataset if window is None else streamed(dataset, window, seed)
    if name not in BUILTIN:
        raise DataError(unknown_name_error("dataset", str(name), (*BUILTIN, "npz", "npy")))
    dataset = BUILTIN[name](val_fraction=val_fraction, seed=seed)
    if window is not None:
        dataset = streamed(dataset, window, seed)
    if dataset.is_regression != regression:
        kind = "regression" if dataset.is_regression else "classification"
        raise DataError(f"dataset '{name}' is a {kind} dataset: use task = \"{kind}\"")
    return dataset
