"""The population mesh: the member axis spread over every device on a 1-D mesh named ``pop``,
the member sharding, and copying members between devices.

Meshes use Auto axis types on every jax version: with Explicit axes (jax 0.10's default) the PBT
gather ``x[parents]`` on the sharded axis raises, and a jitted function's ``out_shardings`` keeps
the gathered result sharded.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from popjax.errors import PopjaxError

AXIS = "pop"


def population_mesh(devices=None) -> Mesh:
    devices = list(devices if devices is not None else jax.devices())
    return jax.make_mesh(
        (len(devices),), (AXIS,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices
    )


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


def take_members(tree, parents, rank, mesh: Mesh | None = None):
    """``leaf[parents]`` for every leaf of a member-sharded ``tree``: member ``i`` of the result
    is member ``parents[i]`` of the input (``parents`` replicated, ``[P]``), for a ``parents``
    that only ever points to a member ranked higher in ``rank`` (the members from worst to
    best), as PBT's exploit does.

    A gather would hold a second copy of every member's state at once. On a one-device mesh the
    members are instead rewritten in place, one at a time from the worst up: a parent ranks
    above the member copying it, so it is still unchanged when read. Over several devices, a
    gather along the sharded axis would have XLA collect the whole population on every
    device; instead each leaf's members pass once around a ring of the devices, and every
    device takes what it needs from each block as it passes.
    """
    if mesh is None:  # where the members are is not known: a plain gather
        return jax.tree_util.tree_map(lambda leaf: leaf[parents], tree)
    if mesh.size == 1:
        # Only the members that take another's state, still worst first.
        moves = parents[rank] != rank
        order = rank[jnp.argsort(~moves, stable=True)]

        def rewrite(turn, tree):
            member = order[turn]
            return jax.tree_util.tree_map(
                lambda leaf: jax.lax.dynamic_update_index_in_dim(
                    leaf, leaf[parents[member]], member, axis=0
                ),
                tree,
            )

        return jax.lax.fori_loop(0, moves.sum(), rewrite, tree)
    size = mesh.size
    ring = [(i, (i + 1) % size) for i in range(size)]
    on_cpu = mesh.devices.flat[0].platform == "cpu"

    # Every leaf in one loop: a loop (and its compile) per leaf cost a model with many leaves
    # seconds of compiling.
    def local_tree(tree, parents):
        me = jax.lax.axis_index(AXIS)
        count = jax.tree_util.tree_leaves(tree)[0].shape[0]
        wanted = jax.lax.dynamic_slice_in_dim(parents, me * count, count)

        def visit(turn, carry):
            blocks, taken = carry
            owner = (me - turn) % size  # whose members ``blocks`` hold on this turn
            index = wanted - owner * count
            here = (index >= 0) & (index < count)
            picks = jnp.clip(index, 0, count - 1)

            def pick(block, taken):
                mask = here.reshape((-1,) + (1,) * (block.ndim - 1))
                return jnp.where(mask, block[picks], taken)

            taken = jax.tree_util.tree_map(pick, blocks, taken)
            return jax.lax.ppermute(blocks, AXIS, ring), taken

        if not on_cpu:
            return jax.lax.fori_loop(0, size, visit, (tree, tree))[1]
        # On XLA's CPU runtime a permute inside a loop could deadlock against a gather at the
        # round's top level (PB2's observations, the hyperparameters' copy): a device waited in
        # one, another device in the other (seen on two busy CPU devices; the runtime appears
        # to order top-level collectives only). Unrolled, the ring's permutes are top-level.
        carry = (tree, tree)
        for turn in range(size):
            carry = visit(turn, carry)
        return carry[1]

    if not jax.tree_util.tree_leaves(tree):
        return tree
    take = jax.shard_map(
        local_tree,
        mesh=mesh,
        in_specs=(PartitionSpec(AXIS), PartitionSpec()),
        out_specs=PartitionSpec(AXIS),
    )
    return take(tree, parents)


def put_replicated(array, mesh: Mesh) -> jax.Array:
    """The same host array on every device of the mesh, across processes too.

    Every process passes the same value (data generated or loaded from the same seed).
    """
    return jax.make_array_from_process_local_data(replicated(mesh), np.asarray(array))
