"""How many members fit under a memory limit, whole and in slices, and at what speed.

For one model and a per-device memory limit, from XLA's memory plans of the compiled round:

* whole: the most members whose round fits at once (``population = "auto"``);
* in slices: the most members popjax runs at all, its round in slices of members (found by
  doubling, then halving the gap; each try only compiles);
* the speed of both: member-steps per second of a round of ``--steps`` steps, the fastest of
  ``--repeats``, timed in the same run.

Run:
    python scripts/memory_check.py                          # MLP-1024, 2 GiB a device
    python scripts/memory_check.py --hidden 256 --batch-size 2048 --limit 1GiB
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=1024, help="width of the MLP's 2 layers")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--limit", default="2GiB", help="memory one device may use")
    parser.add_argument("--steps", type=int, default=10, help="steps in a timed round")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cpu-devices", choices=("cores", "one"), default="cores")
    args = parser.parse_args()
    if args.cpu_devices == "cores":
        from popjax.devices import use_cpu_cores

        use_cpu_cores()

    import jax

    from popjax import amounts, programs
    from popjax.errors import PopjaxError
    from popjax.mesh import member_sharding, population_mesh
    from popjax.plan import Plan

    budget = amounts.parse_bytes(args.limit)
    mesh = population_mesh()
    members = member_sharding(mesh)
    place = programs.ReplicatedArrays(mesh)
    model = {"name": "mlp", "hidden": [args.hidden, args.hidden]}
    settings = dict(model=model, batch_size=args.batch_size, steps=args.steps, interval=args.steps)
    _, (group_task,) = Plan.from_config(population=mesh.size, **settings).build()
    keys = (jax.random.PRNGKey(0), jax.random.PRNGKey(1))

    def plan_of(size):
        plan, _ = Plan.from_config(population=size, **settings).build()
        return plan

    def sized(size):
        return programs.GroupTask(plan_of(size).groups[0], group_task.task, group_task.space)

    def program(size):
        """The fitted program for ``size`` members, or None if even slices do not fit."""
        try:
            return programs.program_within_budget(sized(size), 0, keys, members, place, 1, budget)
        except PopjaxError:
            return None

    auto_plan, _ = programs.size_population(
        Plan.from_config(population="auto", **settings), group_task, members, place, budget
    )
    whole = auto_plan.config.population
    # The most members that run in slices: double until none fit, then halve the gap.
    low, high = whole, whole * 2
    while program(high) is not None:
        low, high = high, high * 2
    step = mesh.size
    while high - low > step:
        middle = (low + high) // 2 // step * step
        low, high = (middle, high) if program(middle) is not None else (low, middle)

    def speed(size):
        fitted = program(size)
        population, standing = fitted.init(fitted.train_data)
        rounds = []
        for _ in range(args.repeats + 1):  # the first call allocates
            start = time.perf_counter()
            population, standing, output = fitted.round_fn(population, standing, 1, fitted.data)
            jax.block_until_ready(output)
            rounds.append(time.perf_counter() - start)
        return fitted, size * args.steps / min(rounds[1:])

    fitted_whole, rate_whole = speed(whole)
    fitted_sliced, rate_sliced = speed(low)
    print(
        f"MLP 40-{args.hidden}-{args.hidden}-10, batch {args.batch_size}, {args.limit} per "
        f"device, {mesh.size} device(s) ({jax.devices()[0].device_kind}):"
    )
    for name, size, fitted, rate in (
        ("whole", whole, fitted_whole, rate_whole),
        ("in slices", low, fitted_sliced, rate_sliced),
    ):
        print(
            f"  {name:>9}: {size} members, {fitted.slices} slice(s) a round, "
            f"{amounts.format_bytes(fitted.round_bytes_planned)} per device, "
            f"{rate:,.0f} member-steps/s"
        )
    print(
        f"  in slices: {low / whole:.2f}x the members at {rate_sliced / rate_whole:.2f}x the speed"
    )


if __name__ == "__main__":
    main()
