"""Training data kept on the host and handed to the devices a window at a time.

A ``Stream`` holds a training split that need not fit on a device (a ``numpy.memmap`` of any
size, a host array, or an object with ``__len__`` and ``__getitem__`` returning one example);
each round trains on a window of ``window`` examples of it, placed on every device. Which
examples a round's window holds is a pure function of ``(seed, round)``: the rounds walk
through shuffled passes over the split, so a run sees every example once a pass, and a resumed
run reads the same windows as an uninterrupted one. A window as large as the split is the split
itself, in its own order: the sweep then trains exactly as on resident data.

While a round trains, a ``WindowFeed`` gathers the next round's window on the host and copies
it to the devices in a background thread.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable

import numpy as np

from popjax.amounts import is_whole, parse_bytes
from popjax.errors import PopjaxError

# Mixed into the seed of every pass's shuffle, so that it differs from the split's own shuffle.
PASS_SHUFFLE = 0x57EA


class HostRows:
    """Rows ``index`` of a host source (a memmap, an array, or an object with ``__len__`` and
    ``__getitem__`` returning one example), read as float32 only when asked for."""

    def __init__(self, source, index=None):
        self.source = source
        self.index = np.arange(len(source)) if index is None else np.asarray(index)
        first = np.asarray(source[int(self.index[0])]) if len(self.index) else np.zeros(0)
        self.shape = (len(self.index), *first.shape)

    dtype = np.dtype(np.float32)
    ndim = property(lambda self: len(self.shape))
    nbytes = property(lambda self: int(np.prod(self.shape, dtype=np.int64)) * 4)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows) -> np.ndarray:
        return self.take(np.arange(len(self))[rows])

    def take(self, positions) -> np.ndarray:
        """The rows at ``positions``, in that order; the source is read in ascending order,
        which is what a memmap reads fastest."""
        wanted = self.index[np.asarray(positions, dtype=np.int64)]
        order = np.argsort(wanted, kind="stable")
        if isinstance(self.source, np.ndarray):
            rows = self.source[wanted[order]]
        else:
            rows = np.stack([np.asarray(self.source[int(i)]) for i in wanted[order]])
        out = np.empty((len(wanted), *self.shape[1:]), np.float32)
        with np.errstate(over="ignore"):
            out[order] = rows
        bad = ~np.isfinite(out.reshape(len(out), -1)).all(axis=1)
        if bad.any():
            raise PopjaxError(
                f"example {int(wanted[np.argmax(bad)])} of the data holds NaN or infinite "
                "values as float32: remove or replace it"
            )
        return out


def window_positions(seed: int, round_index: int, count: int, window: int) -> np.ndarray:
    """Positions (of ``count``) in round ``round_index``'s window, ascending: the slice
    ``[round * window, (round + 1) * window)`` of the passes' shuffles laid end to end. A
    window as large as the split is every position."""
    if window >= count:
        return np.arange(count)
    start = round_index * window
    passed, offset = divmod(start, count)
    parts, needed = [], window
    while needed:
        part = _shuffle(seed, passed, count)[offset : offset + needed]
        parts.append(part)
        needed -= len(part)
        passed, offset = passed + 1, 0
    return np.sort(np.concatenate(parts))


@functools.lru_cache(maxsize=2)
def _shuffle(seed: int, passed: int, count: int) -> np.ndarray:
    return np.random.default_rng([PASS_SHUFFLE, seed, passed]).permutation(count)


def window_size(window, example_bytes: int, count: int) -> int:
    """``window`` in examples: a whole number of them, or an amount of memory ("64MiB")."""
    if is_whole(window) and window >= 1:
        return window
    if isinstance(window, str):
        examples = parse_bytes(window) // max(1, example_bytes)
        if examples >= 1:
            return examples
    raise PopjaxError(
        f'data window must be a number of examples >= 1 or an amount such as "64MiB" that holds '
        f"at least one example of {example_bytes} bytes (got {window!r})"
    )


class Stream:
    """A training split streamed to the devices ``window`` examples a round.

    Args:
      arrays: ``{name: rows}``, all of one length: memmaps, host arrays, ``HostRows``, or
        objects with ``__len__`` and ``__getitem__`` (one example each).
      window: examples on the devices at once.
      seed: which shuffles the rounds walk through.
      finish: ``finish(window) -> window``, to add what is computed from a window's arrays
        (class tables); its output must keep its shapes from round to round.

    Example:
      >>> x = np.load("x.npy", mmap_mode="r")
      >>> train = Stream({"x": x, "y": np.load("y.npy")}, window=4096)
      >>> popjax.TaskData(train, val={"x": x_val, "y": y_val})
    """

    def __init__(self, arrays: dict, window: int, seed: int = 0, finish: Callable | None = None):
        self.arrays = {
            name: rows if isinstance(rows, (np.ndarray, HostRows)) else HostRows(rows)
            for name, rows in arrays.items()
        }
        lengths = {len(rows) for rows in self.arrays.values()}
        if len(lengths) != 1 or 0 in lengths:
            raise PopjaxError(
                f"a Stream's arrays have {sorted(lengths)} examples: give them one length, >= 1"
            )
        self.count = lengths.pop()
        self.window = min(int(window), self.count)
        self.seed, self.finish = int(seed), finish
        self._whole = None

    @property
    def covers_all(self) -> bool:
        """Whether a window is the whole split: the same arrays every round."""
        return self.window >= self.count

    def positions(self, round_index: int) -> np.ndarray:
        """The split's positions in round ``round_index``'s window."""
        return window_positions(self.seed, round_index, self.count, self.window)

    def at(self, round_index: int) -> dict:
        """Round ``round_index``'s window: host arrays of ``window`` examples each."""
        if self.covers_all and self._whole is not None:
            return self._whole
        positions = self.positions(round_index)
        arrays = {name: _take(rows, positions) for name, rows in self.arrays.items()}
        arrays = self.finish(arrays) if self.finish is not None else arrays
        if self.covers_all:
            self._whole = arrays
        return arrays

    def shapes(self) -> dict:
        """The shapes and dtypes of a window, nothing read beyond one example."""
        import jax

        first = {name: _take(rows, [0]) for name, rows in self.arrays.items()}
        template = {
            name: np.zeros((self.window, *a.shape[1:]), a.dtype) for name, a in first.items()
        }
        shaped = self.finish(template) if self.finish is not None else template
        return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), shaped)

    def window_bytes(self) -> int:
        import jax

        leaves = jax.tree_util.tree_leaves(self.shapes())
        return sum(int(np.prod(s.shape, dtype=np.int64)) * s.dtype.itemsize for s in leaves)


def _take(rows, positions) -> np.ndarray:
    if isinstance(rows, HostRows):
        return rows.take(positions)
    return np.asarray(rows[np.asarray(positions)])


def train_at(train, round_index: int):
    """What a task's functions get as the training split in round ``round_index``: the window
    of a ``Stream``, anything else as it is."""
    return train.at(round_index) if isinstance(train, Stream) else train


class WindowFeed:
    """A ``Stream``'s windows on the devices: the next one gathered and placed by ``put`` in a
    background thread while the current round trains.

    ``prepare_s`` sums the host gather and the copy to the devices; ``wait_s`` the time the
    sweep waited for a window, which is what streaming costs a run whose rounds are shorter
    than the preparation of a window.
    """

    def __init__(self, stream: Stream, put: Callable):
        self.stream, self.put = stream, put
        self.current: tuple[int, object] | None = None
        self.pending: tuple[int, threading.Thread, dict] | None = None
        self.prepare_s = self.wait_s = 0.0
        self.windows = 0

    def _prepare(self, round_index: int, box: dict) -> None:
        start = time.perf_counter()
        try:
            box["value"] = self.put(self.stream.at(round_index))
        except BaseException as error:  # raised again where the window is asked for
            box["error"] = error
        box["seconds"] = time.perf_counter() - start

    def prefetch(self, round_index: int) -> None:
        """Starts preparing round ``round_index``'s window, unless it is under way or here."""
        if self.stream.covers_all and self.current is not None:
            return
        if self.pending is not None or (self.current and self.current[0] == round_index):
            return
        box: dict = {}
        thread = threading.Thread(target=self._prepare, args=(round_index, box), daemon=True)
        thread.start()
        self.pending = (round_index, thread, box)

    def get(self, round_index: int):
        """Round ``round_index``'s window on the devices (every group of a sweep gets the
        same arrays)."""
        if self.current is not None and (self.current[0] == round_index or self.stream.covers_all):
            return self.current[1]
        start = time.perf_counter()
        if self.pending is None or self.pending[0] != round_index:
            if self.pending is not None:
                self.pending[1].join()  # a window not wanted after all (a resumed run)
            self.pending = None
            self.prefetch(round_index)
        _, thread, box = self.pending
        thread.join()
        self.pending = None
        self.wait_s += time.perf_counter() - start
        self.prepare_s += box["seconds"]
        if "error" in box:
            raise box["error"]
        self.windows += 1
        self.current = (round_index, box["value"])
        return box["value"]

    def stats(self) -> dict:
        return {
            "window": self.stream.window,
            "windows": self.windows,
            "prepare_s": round(self.prepare_s, 3),
            "wait_s": round(self.wait_s, 3),
        }
