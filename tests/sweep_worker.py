"""Runs one small sweep and saves its final population: the multi-device tests start this in
subprocesses with different device counts and process counts, then compare what they saved.

    python sweep_worker.py OUT.npz [COORDINATOR NUM_PROCESSES PROCESS_ID]
"""

import sys

import jax
import numpy as np

import popjax
from popjax.distributed import Distributed, to_host
from popjax.mesh import AXIS


def main(out, *distributed):
    settings = None
    if distributed:
        coordinator, num_processes, process_id = distributed
        settings = Distributed(coordinator, int(num_processes), int(process_id))
    # MNIST-1D from the cache the tests share, loaded in a moment (the digits would cost each
    # process seconds importing sklearn).
    data = popjax.data.mnist1d()
    result = popjax.run(
        data=data,
        population=8,
        steps=60,
        interval=20,
        batch_size=16,
        write=False,
        progress=False,
        distributed=settings,
    )
    population = result.population
    for leaf in jax.tree_util.tree_leaves(population):
        assert leaf.sharding.spec[0] == AXIS, leaf.sharding
        assert len(leaf.sharding.device_set) == len(jax.devices())
    host = to_host(population)
    if jax.process_index() == 0:
        flat = {f"leaf{i}": np.asarray(x) for i, x in enumerate(jax.tree_util.tree_leaves(host))}
        parents = np.asarray([r["parents"] for r in result.history])
        train_loss = np.asarray([r["train_loss"] for r in result.history])
        np.savez(
            out,
            parents=parents,
            train_loss=train_loss,
            num_devices=len(jax.devices()),
            num_processes=jax.process_count(),
            **flat,
        )


if __name__ == "__main__":
    main(*sys.argv[1:])
