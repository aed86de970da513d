"""popjax's per-user cache: JAX's compiled programs and generated datasets, kept across runs.

A rerun or a resumed sweep then compiles nothing it compiled before and generates no dataset it
generated before. The folder is ``$POPJAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/popjax``, else
``~/.cache/popjax``. ``POPJAX_CACHE=off`` (or ``popjax run --no-cache``, ``popjax.run(...,
cache=False)``) turns both off. A cached array file is checked against its own digest on every
load and generated anew if it is damaged.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

_disabled = False


def disable() -> None:
    """Turns the cache off for this process (datasets; compiled programs if not yet started)."""
    global _disabled
    _disabled = True


def enabled() -> bool:
    return not _disabled and os.environ.get("POPJAX_CACHE", "").lower() not in ("off", "0", "no")


def cache_dir() -> Path:
    if os.environ.get("POPJAX_CACHE_DIR"):
        return Path(os.environ["POPJAX_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "popjax"


def enable_compilation_cache() -> None:
    """Points JAX's persistent compilation cache at popjax's folder, unless the cache is off or
    the user has already given JAX a folder of their own."""
    import jax

    if not enabled() or jax.config.jax_compilation_cache_dir:
        return
    jax.config.update("jax_compilation_cache_dir", str(cache_dir() / "jax"))
    # A sweep's start is a handful of programs, most compiled in well under JAX's default
    # threshold of one second; every one of them is worth keeping.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _digest(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def cached_arrays(
    kind: str, key: dict, make: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """``make()``'s arrays, from the cache when an intact copy made with the same ``key`` (the
    generator's arguments, JSON-serializable) is there; otherwise made and stored."""
    if not enabled():
        return make()
    name = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = cache_dir() / "datasets" / f"{kind}-{name}.npz"
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {k: stored[k] for k in stored.files if k != "digest"}
            if str(stored["digest"]) == _digest(arrays):
                return arrays
    except Exception:  # absent, truncated or tampered with: make it anew
        pass
    arrays = make()
    partial = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written beside and renamed into place, so a reader never sees half a file.
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as file:
            partial = file.name
            np.savez(file, digest=np.asarray(_digest(arrays)), **arrays)
        os.replace(partial, path)
    except OSError:  # a read-only or full disk costs the cache, never the run
        if partial is not None:
            Path(partial).unlink(missing_ok=True)
    return arrays


def cached_json(kind: str, key: dict, make: Callable[[], dict]) -> tuple[dict, bool]:
    """``(make()'s dict, whether it came from the cache)``: a choice worth keeping across runs
    (the population that fits), stored under ``key`` (JSON-serializable) as a small JSON file.
    ``make`` raising stores nothing."""
    if not enabled():
        return make(), False
    name = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]
    path = cache_dir() / kind / f"{name}.json"
    try:
        return json.loads(path.read_text()), True
    except (OSError, ValueError):  # absent or damaged: made anew
        pass
    value = make()
    partial = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".json", delete=False) as f:
            partial = f.name
            json.dump(value, f)
        os.replace(partial, path)
    except OSError:
        if partial is not None:
            Path(partial).unlink(missing_ok=True)
    return value, False
