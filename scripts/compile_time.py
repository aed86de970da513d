"""Where a sweep's compile time goes, program by program, for the built-in tasks and a task of
one's own.

For each config it runs one round of the sweep in a fresh process with popjax's cache off (every
program compiled, none loaded) and reports, from JAX's monitoring events (``popjax.compile_log``),
each program's tracing, lowering and XLA compile seconds: the population's ``init``, the round
(``round_fn``), the test, and with ``--auto`` the rounds compiled only to size the population
(``memory_plan/...``). It then compiles the round's parts on their own: the training segment
(``interval`` vmapped steps in a ``lax.scan``), the evaluation and the selection (PBT's exploit
and explore, PB2, halving, early stopping); what the round takes beyond its parts is the glue
between them. Last, the round compiled for one device against the run's devices: what sharding
the member axis costs.

Run:
    python scripts/compile_time.py                                   # the default sweep
    python scripts/compile_time.py experiments/mnist1d_cnn.toml experiments/rl/cartpole.toml \\
        experiments/own_tasks/transformer.toml --population 8
    python scripts/compile_time.py --auto 256MiB experiments/own_tasks/transformer.toml

Compile times on a shared machine vary with its load; compare figures from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def measure(config: str | None, population: str | None, auto: str | None) -> dict:
    """One round of the sweep, then its segment and evaluation alone; compile figures."""
    from popjax.devices import device_divisor, use_cpu_cores
    from popjax.launch import plan_run

    if config:
        sys.path.insert(0, str(Path(config).resolve().parent))  # a task of one's own
    sized = int(population) if population and population.isdigit() else population
    overrides = {"population": "auto" if auto else sized, "memory_limit": auto}
    plan, _, _ = plan_run(config, **{k: v for k, v in overrides.items() if v})
    plan = plan.__class__.from_config(plan.config, steps=plan.config.interval)
    use_cpu_cores(device_divisor(plan))

    import jax

    import popjax
    from popjax import compile_log
    from popjax import mesh as meshes
    from popjax.programs import GroupProgram, ReplicatedArrays
    from popjax.round import make_round_parts
    from popjax.train import make_evaluate, make_segment

    started = time.perf_counter()
    with compile_log.recording() as log:
        result = popjax.run(plan.config, write=False, progress=False, cache=False)
    seconds = time.perf_counter() - started

    group_task = result.plan.build()[1][0]
    settings = group_task.group.config
    key = jax.random.PRNGKey(0)

    def program_on(devices, slices):
        """The group's program and its population's shapes on ``devices``, nothing compiled."""
        members = meshes.member_sharding(meshes.population_mesh(devices))
        place = ReplicatedArrays(members.mesh)
        program = GroupProgram.build(group_task, 0, key, key, members, place, 1, slices)
        return program, members, program.abstract_state(members)

    slices = next(iter(result.memory.values()))["slices"]
    program, members, (population, selection) = program_on(jax.devices(), slices)
    shards = members.mesh.size
    data = program.data
    select_fn, _ = make_round_parts(
        group_task.task,
        settings.interval,
        group_task.space,
        settings.pbt,
        key,
        slices,
        members.mesh,
        settings.steps,
    )
    lowered = {
        "segment": jax.jit(make_segment(group_task.task, settings.interval, slices, shards)).lower(
            population, *((data.train,) if data is not None else ())
        ),
        "evaluate": jax.jit(make_evaluate(group_task.task, slices, shards)).lower(
            population, data.val if data is not None else None
        ),
        "select": jax.jit(select_fn).lower(population, selection, 0, data, key),
    }
    one_device = program_on(jax.devices()[:1], slices)
    lowered["round on one device"] = one_device[0].lower_round(one_device[1])
    alone = {}
    for name, part in lowered.items():
        begun = time.perf_counter()
        part.compile()
        alone[name] = round(time.perf_counter() - begun, 3)
    return {
        "config": config or "default",
        "population": result.config.population,
        "devices": len(result.devices),
        "run_s": round(seconds, 3),
        "programs": log.summary(),
        "alone_compile_s": alone,
    }


def show(report: dict) -> None:
    print(
        f"\n{report['config']}: population {report['population']} on {report['devices']} "
        f"device(s), one round's run {report['run_s']:.1f} s"
    )
    print(f"  {'program':28s} {'count':>5s} {'trace s':>8s} {'lower s':>8s} {'compile s':>9s}")
    programs = sorted(report["programs"].items(), key=lambda kv: -kv[1].get("compile_s", 0))
    for name, entry in programs:
        if "count" not in entry:
            continue
        print(
            f"  {name:28s} {entry['count']:5d} {entry['trace_s']:8.2f} {entry['lower_s']:8.2f} "
            f"{entry['compile_s']:9.2f}"
        )
    round_s = report["programs"].get("round_fn", {}).get("compile_s", 0.0)
    alone = report["alone_compile_s"]
    rest = round_s - alone["segment"] - alone["evaluate"] - alone["select"]
    print(
        f"  the round's parts compiled alone: training segment {alone['segment']:.2f} s, "
        f"evaluation {alone['evaluate']:.2f} s, selection (PBT, PB2, halving, early stopping) "
        f"{alone['select']:.2f} s; the round less its parts ~{rest:.2f} s"
    )
    print(
        f"  the round on one device {alone['round on one device']:.2f} s, on "
        f"{report['devices']} {round_s:.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("configs", nargs="*", default=[None])
    parser.add_argument("--population")
    parser.add_argument("--auto", metavar="LIMIT", help='population "auto" in LIMIT a device')
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child process's config
    options = parser.parse_args()
    if options.one is not None:
        report = measure(options.one or None, options.population, options.auto)
        print("REPORT " + json.dumps(report))
        return
    reports = []
    for config in options.configs:
        command = [sys.executable, __file__, "--one", config or ""]
        command += ["--population", options.population] if options.population else []
        command += ["--auto", options.auto] if options.auto else []
        env = {**os.environ, "POPJAX_CACHE": "off"}
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")]
        if done.returncode != 0 or not lines:
            raise SystemExit(f"{config}: failed\n{done.stderr[-3000:]}")
        reports.append(json.loads(lines[-1][len("REPORT ") :]))
        show(reports[-1])
    if options.json:
        Path(options.json).write_text(json.dumps(reports, indent=1))


if __name__ == "__main__":
    main()
