"""Benchmark: popjax's round against the same members trained one after another.

For each model (MLPs of width 64, 256 and 1024 with two hidden layers, and the 1-D CNN) and each
population size P it measures, in one run on one machine:

* popjax: member-steps per second of the jitted PBT round a sweep runs (PBT exploit + explore,
  ``--steps`` training steps of every member as one ``lax.scan`` over the vmapped step, then
  validation), the member axis sharded over the devices, buffers donated;
* the usual way without popjax, members one after another, each (a) a jitted per-step Python
  loop, (b) one jitted ``lax.scan`` over its steps. Both use the same member step as popjax
  (batch sampling, dropout, SGD with momentum and weight decay). Members are independent, so
  these rates are measured once per model on ``--max-sequential-members`` members, on JAX's
  default device setup (a subprocess, when this one split the CPU into a device per core);
* utilization: model FLOP/s (XLA's count for one member's step, times popjax's rate) as a share
  of a dense square matmul of the same dtype, timed in the same run;
* the PBT share: the time of PBT + validation alone as a share of the round's time;
* compile time of the round and its peak memory (XLA's buffer sizes, or the device's own peak
  where it reports one);
* the number of compilations in a whole short ``popjax.run`` sweep (the training round must
  compile once).

Compile time is excluded from rates; each figure is the fastest of ``--repeats`` timed runs (other
load only slows a run). Population sizes whose estimated time exceeds ``--max-seconds`` or whose
memory exceeds what the device has are skipped and marked so. On the CPU, popjax spreads members
over one JAX device per core (as ``popjax run`` does; ``--cpu-devices one`` turns that off); the
sequential baselines run as a user's single model does, on JAX's default device.

Run:
    python scripts/bench.py                                  # writes bench.json and bench.png
    python scripts/bench.py --models mlp64 --populations 1 32 --out /tmp/b.json
    python scripts/bench.py --dtype bfloat16                 # bfloat16 compute, float32 weights
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time

CPU_POPULATIONS = [1, 8, 32, 128]
ACCELERATOR_POPULATIONS = [1, 8, 32, 128, 256, 512, 1024]
MODELS = ("mlp64", "mlp256", "mlp1024", "cnn")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument(
        "--populations",
        type=int,
        nargs="+",
        help=f"default {CPU_POPULATIONS} on the CPU, {ACCELERATOR_POPULATIONS} on an accelerator",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=250,
        help="training steps per member in a round (popjax's default interval)",
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "bfloat16"),
        help="compute dtype (weights stay float32)",
    )
    parser.add_argument("--max-sequential-members", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=30.0,
        help="skip a measurement estimated to take longer than this",
    )
    parser.add_argument("--cpu-devices", choices=("cores", "one"), default="cores")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench.json")
    parser.add_argument("--plot", default=None, help="PNG path (default: --out with .png)")
    parser.add_argument(
        "--baselines-only", action="store_true", dest="baselines_only", help=argparse.SUPPRESS
    )  # the one-device baseline subprocess
    return parser.parse_args(argv)


args = parse_args() if __name__ == "__main__" else None
if args is not None and args.cpu_devices == "cores":
    from popjax.devices import use_cpu_cores  # before JAX starts

    use_cpu_cores()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import popjax  # noqa: E402
from popjax.config import PBTConfig  # noqa: E402
from popjax.data import mnist1d  # noqa: E402
from popjax.memory import compiled_bytes  # noqa: E402
from popjax.mesh import member_sharding, population_mesh, replicated  # noqa: E402
from popjax.nn import CNN1D, MLP  # noqa: E402
from popjax.pbt import pbt_step  # noqa: E402
from popjax.population import init_population, select  # noqa: E402
from popjax.round import SelectionState, make_round  # noqa: E402
from popjax.space import SearchSpace  # noqa: E402
from popjax.tasks import classification  # noqa: E402
from popjax.train import make_evaluate  # noqa: E402

SPACE = SearchSpace()  # popjax's default priors


def build(name: str, dtype: str, num_classes: int):
    if name == "cnn":
        return CNN1D(num_classes=num_classes, dtype=dtype)
    width = int(name.removeprefix("mlp"))
    return MLP(hidden=(width, width), num_classes=num_classes, dtype=dtype)


def fastest(run, repeats) -> float:
    """Seconds of the fastest of ``repeats`` calls of ``run``, which blocks on its result."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return min(seconds)


def flops_of(compiled) -> float | None:
    """XLA's FLOP count of a compiled function (a dict, or a list of one on older jax)."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list):
        analysis = analysis[0] if analysis else {}
    return float(analysis["flops"]) if analysis and "flops" in analysis else None


def matmul_flops_per_s(dtype: str, repeats: int) -> dict:
    """The dense matmul rate of the default device: the utilization's yardstick."""
    best = {"flops_per_s": 0.0}
    sizes = (1024, 2048) if jax.default_backend() == "cpu" else (4096, 8192)
    for n in sizes:
        a = jax.random.normal(jax.random.PRNGKey(0), (n, n)).astype(dtype)
        matmul = jax.jit(lambda x, y: x @ y)
        jax.block_until_ready(matmul(a, a))
        seconds = fastest(lambda: jax.block_until_ready(matmul(a, a)), max(repeats, 3))
        rate = 2 * n**3 / seconds
        if rate > best["flops_per_s"]:
            best = {"flops_per_s": rate, "size": n, "dtype": dtype}
    return best


def device_memory_limit() -> int:
    stats = jax.devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"])
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def member_step(task):
    """One member's step as a user's own loop runs it: the key split inside the jitted step."""

    def step(state, hparams, rng, t, train):
        rng, key = jax.random.split(rng)
        state, metrics = task.train(state, hparams, key, t, train)
        return state, rng, metrics["loss"]

    return step


def sequential_rates(task, train, population, args) -> dict:
    """Member-steps per second of members trained one after another, two usual ways."""
    step = member_step(task)
    members = [
        select(population, i) for i in range(min(population.size, args.max_sequential_members))
    ]
    jit_step = jax.jit(step)

    def loop():
        for m in members:
            state, rng = m.state, m.rng
            for _ in range(args.steps):
                state, rng, loss = jit_step(state, m.hparams, rng, m.step, train)
            jax.block_until_ready((state, loss))  # as a user reading the final loss would

    @jax.jit
    def scanned(state, hparams, rng, train):
        def body(carry, t):
            state, rng, loss = step(*carry[:1], hparams, carry[1], t, train)
            return (state, rng), loss

        return jax.lax.scan(body, (state, rng), jnp.arange(args.steps))

    def scan():
        for m in members:
            jax.block_until_ready(scanned(m.state, m.hparams, m.rng, train))

    first = members[0]
    jax.block_until_ready(jit_step(first.state, first.hparams, first.rng, first.step, train))
    jax.block_until_ready(scanned(first.state, first.hparams, first.rng, train))
    work = len(members) * args.steps
    repeats = max(args.repeats, 3)  # cheap next to popjax's side; more tries damp the noise
    return {
        "members_timed": len(members),
        "loop_member_steps_per_s": work / fastest(loop, repeats),
        "scan_member_steps_per_s": work / fastest(scan, repeats),
    }


def measure_population(task, size, args, budget) -> dict:
    """popjax's round at population ``size``: rate, PBT share, compile time, memory."""
    row = {"population": size}
    mesh = population_mesh(jax.devices()[: math.gcd(size, jax.device_count())])
    members = member_sharding(mesh)
    data = jax.device_put(task.data, replicated(mesh))
    pbt = PBTConfig()
    pbt_key = jax.random.PRNGKey(args.seed + 1)
    population = jax.device_put(
        init_population(jax.random.PRNGKey(args.seed), task, SPACE, size, data.train), members
    )
    standing = jax.device_put(
        SelectionState.initial(size)._replace(fitness=jnp.linspace(0.0, 1.0, size)), members
    )
    fitness = standing.fitness

    # Estimate first: a population too slow or too large for this device is skipped.
    per_step = jax.jit(jax.vmap(member_step(task), in_axes=(0, 0, 0, 0, None)))
    lowered_step = per_step.lower(
        population.state, population.hparams, population.rng, population.step, data.train
    )
    # XLA counts the FLOPs of one device's share of a sharded program.
    flops = flops_of(lowered_step.compile())
    flops = flops * mesh.size if flops else None
    estimate = (flops or 0) * args.steps * (args.repeats + 1) / budget["flops_per_s"]
    if estimate > args.max_seconds:
        return {**row, "skipped": f"estimated {estimate:.0f} s > --max-seconds"}

    round_fn = jax.jit(
        make_round(task, args.steps, SPACE, pbt, pbt_key, mesh=mesh),
        out_shardings=members,
        donate_argnums=0,
    )
    start = time.perf_counter()
    try:
        compiled = round_fn.lower(population, standing, 1, data).compile()
    except Exception as error:  # out of memory while compiling or allocating
        return {**row, "skipped": f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"}
    row["compile_seconds"] = time.perf_counter() - start
    row["xla_bytes"] = compiled_bytes(compiled)
    if row["xla_bytes"] and row["xla_bytes"] > 0.8 * budget["memory_bytes"]:
        return {**row, "skipped": f"needs {row['xla_bytes'] / 2**30:.1f} GiB"}

    state = {"population": population}

    def one_round():
        state["population"], _, output = compiled(state["population"], standing, 1, data)
        jax.block_until_ready(output)

    one_round()  # first call allocates
    round_seconds = fastest(one_round, args.repeats)

    evaluate = make_evaluate(task)

    def pbt_and_validation(population, fitness, key):
        population, _, _ = pbt_step(key, population, fitness, SPACE, pbt, mesh=mesh)
        return evaluate(population, data.val)

    pbt_only = (
        jax.jit(pbt_and_validation, out_shardings=members)
        .lower(state["population"], fitness, pbt_key)
        .compile()
    )
    jax.block_until_ready(pbt_only(state["population"], fitness, pbt_key))
    pbt_seconds = fastest(
        lambda: jax.block_until_ready(pbt_only(state["population"], fitness, pbt_key)), args.repeats
    )

    rate = size * args.steps / round_seconds
    stats = jax.devices()[0].memory_stats() or {}
    return {
        **row,
        "devices": mesh.size,
        "round_seconds": round_seconds,
        "member_steps_per_s": rate,
        "flops_per_member_step": flops / size if flops else None,
        "utilization": rate * flops / size / budget["flops_per_s"] if flops else None,
        "pbt_and_validation_seconds": pbt_seconds,
        "pbt_share": pbt_seconds / round_seconds,
        "device_peak_bytes": stats.get("peak_bytes_in_use"),
    }


def count_sweep_compilations(model, dataset) -> dict:
    """Runs a short sweep (8 members, 4 PBT rounds) and counts every XLA compilation in it."""
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    size = math.lcm(8, jax.device_count()) if jax.device_count() <= 8 else jax.device_count()
    result = popjax.run(
        model=model,
        data=dataset,
        population=size,
        steps=200,
        interval=50,
        write=False,
        progress=False,
    )
    return {
        "population": size,
        "rounds": 4,
        "round_program_compilations": result.compilations,
        "all_xla_compilations": len(compiles),
        "all_compile_seconds": sum(compiles),
        # Per program: compiles, seconds tracing, lowering and compiling, cache hits.
        "compile": result.compile,
    }


def plot(report, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (name, entry) in enumerate(report["models"].items()):
        rows = [r for r in entry["populations"] if "member_steps_per_s" in r]
        if not rows:
            continue
        color = f"C{i}"
        sizes = [r["population"] for r in rows]
        ax.plot(
            sizes,
            [r["member_steps_per_s"] for r in rows],
            "o-",
            color=color,
            label=f"{name}: popjax",
        )
        ax.axhline(
            entry["sequential"]["loop_member_steps_per_s"],
            color=color,
            ls=":",
            label=f"{name}: one by one, jitted step loop",
        )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="population size",
        ylabel="member-steps per second",
        title=f"{report['backend']} ({report['devices']} device(s)), {report['dtype']}",
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def print_table(report) -> None:
    print(
        f"\n{report['backend']}, {report['devices']} device(s), {report['dtype']}, "
        f"{report['steps']} steps per round, batch {report['batch_size']}; dense matmul "
        f"{report['matmul']['flops_per_s'] / 1e9:,.0f} GFLOP/s"
    )
    print(
        f"{'model':>8} {'P':>5} {'popjax m-steps/s':>17} {'vs loop':>8} {'vs scan':>8} "
        f"{'util':>6} {'PBT':>6} {'compile s':>9} {'MiB':>8}"
    )
    for name, entry in report["models"].items():
        seq = entry["sequential"]
        for row in entry["populations"]:
            if "skipped" in row:
                print(f"{name:>8} {row['population']:>5}  skipped: {row['skipped']}")
                continue
            util = f"{row['utilization']:.1%}" if row["utilization"] is not None else "n/a"
            mib = f"{row['xla_bytes'] / 2**20:,.0f}" if row["xla_bytes"] else "n/a"
            print(
                f"{name:>8} {row['population']:>5} {row['member_steps_per_s']:>17,.0f} "
                f"{row['member_steps_per_s'] / seq['loop_member_steps_per_s']:>7.1f}x "
                f"{row['member_steps_per_s'] / seq['scan_member_steps_per_s']:>7.1f}x "
                f"{util:>6} {row['pbt_share']:>6.2%} {row['compile_seconds']:>9.1f} "
                f"{mib:>8}"
            )
        print(
            f"{name:>8} one by one: jitted step loop {seq['loop_member_steps_per_s']:,.0f}, "
            f"jitted scan {seq['scan_member_steps_per_s']:,.0f} member-steps/s"
        )
    c = report["sweep_compilations"]
    print(
        f"a {c['rounds']}-round sweep of {c['population']} members compiled its round "
        f"{c['round_program_compilations']} time(s); {c['all_xla_compilations']} XLA "
        f"compilations in all ({c['all_compile_seconds']:.1f} s)"
    )


def baselines(args, dataset) -> dict:
    """The one-by-one rates of every model, measured as a user's single model runs: on JAX's
    default CPU setup (one device using every core), so when this process split the CPU into one
    device per core, in a subprocess that did not."""
    if args.baselines_only or jax.default_backend() != "cpu" or jax.device_count() == 1:
        rates = {}
        for name in args.models:
            task = classification(
                build(name, args.dtype, dataset.num_classes), dataset, batch_size=args.batch_size
            )
            train = jax.device_put(task.data.train)
            members = init_population(
                jax.random.PRNGKey(args.seed), task, SPACE, args.max_sequential_members, train
            )
            rates[name] = sequential_rates(task, train, members, args)
        return rates
    command = [
        sys.executable,
        __file__,
        "--baselines-only",
        "--cpu-devices",
        "one",
        "--models",
        *args.models,
        "--steps",
        str(args.steps),
        "--batch-size",
        str(args.batch_size),
        "--dtype",
        args.dtype,
        "--max-sequential-members",
        str(args.max_sequential_members),
        "--repeats",
        str(args.repeats),
        "--seed",
        str(args.seed),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(args) -> None:
    if args.baselines_only:
        print(json.dumps(baselines(args, mnist1d(seed=args.seed))))
        return
    started = time.perf_counter()
    accelerator = jax.default_backend() != "cpu"
    populations = args.populations or (ACCELERATOR_POPULATIONS if accelerator else CPU_POPULATIONS)
    dataset = mnist1d(seed=args.seed)
    budget = {**matmul_flops_per_s(args.dtype, args.repeats), "memory_bytes": device_memory_limit()}
    report = {
        "backend": jax.default_backend(),
        "devices": jax.device_count(),
        "device_kind": jax.devices()[0].device_kind,
        "dtype": args.dtype,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "jax_version": jax.__version__,
        "python_version": platform.python_version(),
        "cpu_cores": os.cpu_count(),
        "matmul": budget,
        "models": {},
    }
    for name in args.models:
        task = classification(
            build(name, args.dtype, dataset.num_classes), dataset, batch_size=args.batch_size
        )
        rows = []
        for size in populations:
            rows.append(measure_population(task, size, args, budget))
            print(
                f"{name} P={size}: {rows[-1].get('skipped', 'done')} "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
        report["models"][name] = {"populations": rows}
    for name, sequential in baselines(args, dataset).items():
        report["models"][name]["sequential"] = sequential
    report["sweep_compilations"] = count_sweep_compilations(
        build("mlp64", args.dtype, dataset.num_classes), dataset
    )
    report["load_average_at_end"] = list(os.getloadavg())
    report["total_seconds"] = time.perf_counter() - started
    print_table(report)
    with open(args.out, "w") as file:
        json.dump(report, file, indent=2)
    plot_path = args.plot or os.path.splitext(args.out)[0] + ".png"
    plot(report, plot_path)
    print(f"\nwrote {args.out} and {plot_path}")


if __name__ == "__main__":
    sys.exit(main(args))
