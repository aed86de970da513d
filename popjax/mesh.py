"""The device mesh: the member axis spread over every device on a 1-D mesh named ``pop``.

Meshes use Auto axis types on every jax version: with Explicit axes (jax 0.10's default) the PBT
gather ``x[source]`` on the sharded axis raises, and a jitted function's ``out_shardings`` keeps
the gathered result sharded.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from popjax.errors import PopjaxError

AXIS = "pop"


def population_mesh(devices=None) -> Mesh:
    devices = list(devices if devices is not None else jax.devices())
    return jax.make_mesh((len(devices),), (AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=devices)


def member_sharding(mesh: Mesh) -> NamedSharding:
    """Axis 0 split over the devices: for every leaf of a population."""
    return NamedSharding(mesh, PartitionSpec(AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device: for data and keys shared by all members."""
    return NamedSharding(mesh, PartitionSpec())


def check_population_size(size: int, num_devices: int) -> None:
    """Each device holds the same number of members; otherwise say which sizes work."""
    if size < 1:
        raise PopjaxError(f"population must be at least 1 (got {size})")
    if size % num_devices == 0:
        return
    below = size - size % num_devices
    above = below + num_devices
    options = " or ".join(str(n) for n in (below, above) if n > 0)
    raise PopjaxError(
        f"population {size} does not divide over {num_devices} devices: use {options}"
    )


def put_replicated(array, mesh: Mesh) -> jax.Array:
    """The same host array on every device of the mesh, across processes too.

    Every process passes the same value (data generated or loaded from the same seed).
    """
    return jax.make_array_from_process_local_data(replicated(mesh), np.asarray(array))


def to_host(tree):
    """Brings per-member arrays to the host; across processes, every process gets all members."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)
