"""The ``popjax`` command."""

from __future__ import annotations

import argparse
import sys

from popjax.errors import PopjaxError
from popjax.interrupt import SweepInterrupted


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose errors are one line, as every other error of the command."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv=None) -> int:
    args = command_parser().parse_args(argv)
    try:
        if args.command == "export-schedule":
            return export_command(args)
        if args.command == "replay":
            return replay_command(args)
        if args.command == "report":
            return report_command(args)
        return run_command(args)
    except PopjaxError as error:
        print(f"popjax: error: {error}", file=sys.stderr)
        return 2
    except SweepInterrupted as stop:
        print(f"popjax: {stop}", file=sys.stderr)
        return stop.exit_code


def command_parser() -> ArgumentParser:
    """The parser of ``popjax``'s command line and its subcommands."""
    parser = ArgumentParser(prog="popjax", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="train a population with PBT")
    run.add_argument("config", nargs="?", help="a TOML config; the built-in default if omitted")
    run.add_argument(
        "--population",
        type=population_arg,
        help='members trained together; "auto" for as many as fit in a device\'s memory',
    )
    run.add_argument(
        "--memory-limit",
        dest="memory_limit",
        help='memory one device may use, e.g. "2GiB" (default: what the device has); a '
        "population that needs more trains in slices of members",
    )
    run.add_argument("--steps", type=int, help="training steps per member")
    run.add_argument("--interval", type=int, help="steps between PBT rounds")
    run.add_argument("--batch-size", type=int, dest="batch_size", help="examples per step")
    run.add_argument("--seed", type=int)
    run.add_argument("--name", help="names the run folder")
    run.add_argument("--out", help="the run folder (default runs/<name>-<timestamp>)")
    run.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a run from its newest checkpoint, with its own config",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument(
        "--no-report",
        action="store_true",
        dest="no_report",
        help="skip the plots and report.md written at the end",
    )
    run.add_argument(
        "--tensorboard",
        action="store_true",
        help="also stream metrics to TensorBoard event files in RUN/tensorboard",
    )
    run.add_argument(
        "--wandb",
        metavar="PROJECT",
        help="also log each round to this Weights & Biases project (needs popjax[wandb]; "
        "WANDB_MODE=offline logs to ./wandb for `wandb sync`)",
    )
    run.add_argument(
        "--mlflow",
        metavar="URI",
        help='also log each round to MLflow at this tracking URI ("" for MLFLOW_TRACKING_URI '
        "or MLflow's default), in an experiment named after the config (needs popjax[mlflow])",
    )
    run.add_argument(
        "--no-cache",
        action="store_false",
        dest="cache",
        help="compile every program and generate the data anew, without popjax's cache "
        "(also: POPJAX_CACHE=off)",
    )
    run.add_argument(
        "--cpu-devices",
        choices=("cores", "one"),
        default="cores",
        dest="cpu_devices",
        help="on the CPU, spread members over one JAX device per core (default) "
        "or run them all on one device",
    )
    hosts = run.add_argument_group("several hosts (every process runs the same command)")
    hosts.add_argument(
        "--distributed",
        action="store_true",
        help="join a multi-process run described by the cluster's environment "
        "(Cloud TPU, Slurm, Kubernetes)",
    )
    hosts.add_argument("--coordinator", help="ADDRESS:PORT of process 0")
    hosts.add_argument("--num-processes", type=int, dest="num_processes")
    hosts.add_argument("--process-id", type=int, dest="process_id")
    report = commands.add_parser("report", help="write plots and report.md for a finished run")
    report.add_argument("run_dir", metavar="RUN", help="a finished run folder")
    export = commands.add_parser(
        "export-schedule", help="write a member's replayed hyperparameter schedules"
    )
    export.add_argument("run_dir", metavar="RUN", help="a finished run folder")
    export.add_argument("--member", default="best", help="a member id, or 'best' (default)")
    export.add_argument("--out", default="schedule.json", help="the JSON file to write")
    replay = commands.add_parser(
        "replay", help="retrain one model from scratch with a member's replayed schedules"
    )
    replay.add_argument("run_dir", metavar="RUN", help="a finished run folder")
    replay.add_argument("--member", default="best", help="a member id, or 'best' (default)")
    replay.add_argument(
        "--seed", type=int, help="initial weights and batch order (default: the run's seed)"
    )
    replay.add_argument("--out", help="also write the figures to this JSON file")
    replay.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def run_plan_of(args):
    """``(plan, run folder)`` of ``popjax run``'s parsed arguments, resolved once."""
    from popjax.launch import plan_run

    plan, _, out = plan_run(
        args.config,
        out=args.out,
        resume=args.resume,
        population=args.population,
        memory_limit=args.memory_limit,
        steps=args.steps,
        interval=args.interval,
        batch_size=args.batch_size,
        seed=args.seed,
        name=args.name,
    )
    return plan, out


def run_command(args) -> int:
    # Imported here so that `popjax --help` answers without starting JAX.
    from popjax.api import run_plan
    from popjax.devices import device_divisor, use_cpu_cores
    from popjax.distributed import Distributed
    from popjax.report import best_members_table

    # The plan, resolved once and before JAX starts: the CPU's devices must divide the members.
    plan, out = run_plan_of(args)
    distributed = None
    if args.distributed or args.coordinator or args.num_processes or args.process_id is not None:
        distributed = Distributed(args.coordinator, args.num_processes, args.process_id)
    elif args.cpu_devices == "cores":
        use_cpu_cores(device_divisor(plan))
    result = run_plan(
        plan,
        out=out,
        progress=not args.quiet,
        distributed=distributed,
        resume=args.resume is not None,
        tensorboard=args.tensorboard,
        wandb=args.wandb,
        mlflow=args.mlflow,
        cache=args.cache,
    )
    if result.run_dir is None:  # another process than 0 of a multi-process run
        return 0
    print(best_members_table(result))
    metric = result.fitness
    test = f", test {metric} {result.best_test[metric]:.4f}" if metric in result.best_test else ""
    print(
        f"best member {result.best_member}: validation {metric} "
        f"{result.best_val[metric]:.4f}{test} "
        f"({result.wall_time:.1f} s on {len(result.devices)} device(s))"
    )
    if not args.no_report:
        from popjax.report import write_report

        print(f"report: {write_report(result.run_dir)}")
    print(f"results in {result.run_dir}")
    return 0


def report_command(args) -> int:
    from popjax.report import write_report

    print(f"wrote {write_report(args.run_dir)} and its plots")
    return 0


def replay_command(args) -> int:
    import json
    from pathlib import Path

    from popjax.replay import retrain

    if args.out:
        refuse_existing(args.out)
    result = retrain(args.run_dir, args.member, seed=args.seed, progress=not args.quiet)
    metric = result.metric
    test = f", test {result.member_test:.4f}" if result.member_test is not None else ""
    print(f"member {result.member} in the sweep: validation {metric} {result.member_val:.4f}{test}")
    replay_test = f", test {result.test[metric]:.4f}" if metric in result.test else ""
    print(
        f"replay from scratch (seed {result.seed}, {result.steps} steps): validation {metric} "
        f"{result.val[metric]:.4f}{replay_test} ({result.wall_time:.1f} s)"
    )
    test_gap = f", test {result.test_gap:+.4f}" if result.test_gap is not None else ""
    print(
        f"gap (replay - member): validation {result.val_gap:+.4f}{test_gap}; the member's "
        "validation figure is the best of its population, so it is biased "
        + ("downward" if result.minimize else "upward")
    )
    if args.out:
        Path(args.out).write_text(json.dumps(result.summary(), indent=1))
    return 0


def population_arg(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'give a whole number of members or "auto" (got {text!r})'
        ) from None


def refuse_existing(path) -> None:
    """A command never overwrites a file it would write."""
    from pathlib import Path

    if Path(path).exists():
        raise PopjaxError(f"{path} already exists: choose another --out")


def export_command(args) -> int:
    from popjax.replay import export

    refuse_existing(args.out)
    written = export(args.run_dir, args.out, member=args.member)
    print(
        f"member {written['member']}: {', '.join(written['schedules'])} over "
        f"{written['steps']} steps written to {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
