"""How fast a task's training step runs, per member, one member at a time against members
vmapped together: the ceiling of what popjax can gain over a plain loop once both are compiled.

Three ways of running ``--members`` members' steps, each timed over ``--steps`` steps after a
first call that compiles:

- plain: one member's jitted step, called for each member in turn (the plain loop's way);
- vmapped, one device: every member's step in one ``vmap``, scanned over the steps, on the
  first device;
- vmapped, all devices: the same, the member axis split over every device (popjax's way).

Prints milliseconds per member-step for each. On a CPU, run it twice to see cores apart from
vmap: as it is (a device per core) and under ``taskset -c 0`` (every device on one core).

    cd experiments/own_tasks
    python step_speed.py --task transformer --members 8
    taskset -c 0 python step_speed.py --task transformer --members 8
"""

from __future__ import annotations

import argparse
import time

import popjax

popjax.use_cpu_cores()  # as `popjax run` does, before JAX starts: one CPU device per core

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec  # noqa: E402
from plain_loop import TASKS, build_task  # noqa: E402


def plain(task, hparams, keys, train, steps: int) -> float:
    """Seconds per member-step, one member after another."""
    step = jax.jit(task.train, donate_argnums=0)
    one = {name: np.float32(value[0]) for name, value in hparams.items()}
    state = jax.jit(task.init)(keys[0], one, train)
    state, _ = step(state, one, keys[0], np.int32(0), train)  # compiles
    jax.block_until_ready(state)
    start = time.perf_counter()
    for member, key in enumerate(keys):
        member_hparams = {name: np.float32(value[member]) for name, value in hparams.items()}
        for index in range(steps):
            key, step_key = jax.random.split(key)
            state, _ = step(state, member_hparams, step_key, np.int32(index), train)
    jax.block_until_ready(state)
    return (time.perf_counter() - start) / (steps * len(keys))


def vmapped(task, hparams, keys, train, steps: int, devices) -> float:
    """Seconds per member-step, every member at once, the member axis over ``devices``."""

    def segment(state, member_hparams, key, train):
        def body(carry, index):
            state, key = carry
            key, step_key = jax.random.split(key)
            state, _ = task.train(state, member_hparams, step_key, index, train)
            return (state, key), None

        return jax.lax.scan(body, (state, key), jnp.arange(steps))[0]

    mesh = Mesh(np.array(devices), ("members",))
    members, everywhere = (
        NamedSharding(mesh, PartitionSpec("members")),
        NamedSharding(mesh, PartitionSpec()),
    )
    init = jax.vmap(task.init, in_axes=(0, 0, None))
    state = jax.device_put(jax.jit(init)(keys, hparams, train), members)
    hparams, keys = jax.device_put((hparams, keys), members)
    train = jax.device_put(train, everywhere)
    run = jax.jit(jax.vmap(segment, in_axes=(0, 0, 0, None)), donate_argnums=0)
    state, keys = run(state, hparams, keys, train)  # compiles
    jax.block_until_ready(state)
    start = time.perf_counter()
    state, keys = run(state, hparams, keys, train)
    jax.block_until_ready(state)
    return (time.perf_counter() - start) / (steps * len(keys))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=TASKS, default="transformer")
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args(argv)
    task = build_task(args.task)
    space = popjax.SearchSpace(task.space, builtin=False)
    hparams = space.sample(jax.random.PRNGKey(1), args.members)
    keys = jax.random.split(jax.random.PRNGKey(0), args.members)
    train = jax.tree_util.tree_map(jnp.asarray, task.data.train)
    devices = jax.devices()
    if args.members % len(devices):
        raise SystemExit(f"--members {args.members} must be a multiple of {len(devices)} devices")
    times = {
        "plain, one member at a time": plain(task, hparams, keys, train, args.steps),
        "vmapped, one device": vmapped(task, hparams, keys, train, args.steps, devices[:1]),
        f"vmapped, {len(devices)} devices": vmapped(
            task, hparams, keys, train, args.steps, devices
        ),
    }
    print(f"task {args.task}: {args.members} members x {args.steps} steps, {devices}")
    for name, seconds in times.items():
        print(f"  {name:32s} {1e3 * seconds:7.2f} ms a member-step")
    ratio = times["plain, one member at a time"] / times[f"vmapped, {len(devices)} devices"]
    print(f"plain / vmapped over the devices: {ratio:.2f}x")


if __name__ == "__main__":
    main()
