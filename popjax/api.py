"""The public ``popjax.run``: a sweep from a config, watched by the face's round callbacks (the
progress bar, TensorBoard events, W&B and MLflow, the user's ``on_round``) as the sweep's loop
plays it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from popjax import data as datasets
from popjax import loggers
from popjax import sweep as sweeps
from popjax import tensorboard as events
from popjax.config import SweepConfig
from popjax.devices import device_divisor, use_cpu_cores
from popjax.distributed import Distributed
from popjax.launch import plan_run
from popjax.plan import Plan
from popjax.progress import ProgressBar
from popjax.result import SweepResult
from popjax.task import Task


def run(
    config: SweepConfig | str | Path | None = None,
    *,
    task: Task | Callable | str | None = None,
    model=None,
    loss_fn=None,
    data: datasets.Dataset | None = None,
    out: str | Path | None = None,
    write: bool = True,
    progress: bool = True,
    distributed: Distributed | None = None,
    resume: str | Path | None = None,
    tensorboard: bool = False,
    wandb: str | dict | None = None,
    mlflow: str | dict | None = None,
    on_round: Callable[[dict], None] | None = None,
    cache: bool = True,
    **overrides,
) -> SweepResult:
    """Runs a whole sweep and returns its result.

    On a CPU, as ``popjax run`` does, JAX shows one device per core (as many as divide the
    population) and the members are sharded over them, if JAX has not started yet in this
    process (no operation run, no device queried); ``JAX_NUM_CPU_DEVICES=1`` keeps one device.

    Args:
      config: a ``SweepConfig``, the path of a TOML config, or None for the built-in default.
      task: a ``popjax.Task`` to run instead of the config's (see ``popjax.task``), a
        function that returns one (called with the run's settings that it names: ``steps``,
        ``interval``, ``seed``, ``batch_size``), or a config's task by name ("regression",
        "package.module:factory").
      model: a model to train instead of the config's: a flax linen module (see
        ``popjax.nn``), an nnx or equinox module class, or a function ``key -> module``
        (see ``popjax.models``).
      loss_fn: ``loss_fn(logits, labels) -> scalar``; softmax cross-entropy by default.
      data: a ``Dataset`` to train on instead of the config's.
      out: the run folder; ``runs/<name>-<timestamp>`` by default. Must not exist yet.
      write: False writes no run folder (and no checkpoints).
      progress: show a progress bar.
      distributed: join a multi-process run first (see ``popjax.distributed``).
      resume: a run folder to continue from its newest readable checkpoint, with its config
        (pass the same ``task``, ``model``, ``loss_fn`` and ``data`` if the run was given them).
      tensorboard: also stream each round's figures to TensorBoard event files in
        ``<run folder>/tensorboard`` (needs tensorboardX).
      wandb: also log each round to Weights & Biases: a project's name, or keyword arguments
        of ``wandb.init`` (see ``popjax.loggers.WandbLogger``; needs wandb).
      mlflow: also log each round to MLflow: a tracking URI (``""`` for MLflow's default), or a
        dict of ``tracking_uri``, ``experiment``, ``run_name``, ``tags`` (see
        ``popjax.loggers.MLflowLogger``; needs mlflow).
      on_round: called on the main process with each round's record (a metrics.jsonl line).
      cache: keep compiled programs and generated datasets in popjax's per-user cache
        (``popjax.cache``), so that a rerun compiles and generates nothing twice.
      **overrides: config fields to change, e.g. ``population=8, steps=200``.

    Raises:
      PopjaxError: bad input, or every member diverged.
      SweepInterrupted: SIGINT or SIGTERM arrived; a checkpoint was saved first.

    Example:
      >>> result = popjax.run(population=8, steps=400, interval=100, write=False)
      >>> result.best_hparams["learning_rate"], result.best_test["accuracy"]
    """
    plan, task, out = plan_run(config, task=task, out=out, write=write, resume=resume, **overrides)
    if distributed is None:
        # As the command does: a device per core, where JAX has not started (a no-op if it has).
        use_cpu_cores(device_divisor(plan))
    return run_plan(
        plan,
        task=task,
        model=model,
        loss_fn=loss_fn,
        data=data,
        out=out,
        write=write,
        progress=progress,
        distributed=distributed,
        resume=resume is not None,
        tensorboard=tensorboard,
        wandb=wandb,
        mlflow=mlflow,
        on_round=on_round,
        cache=cache,
    )


def run_plan(
    plan: Plan,
    *,
    write: bool = True,
    progress: bool = True,
    tensorboard: bool = False,
    wandb: str | dict | None = None,
    mlflow: str | dict | None = None,
    on_round: Callable[[dict], None] | None = None,
    **sweep,
) -> SweepResult:
    """Runs a resolved plan (``popjax.launch.plan_run``) with the face's round callbacks: the
    user's ``on_round``, then TensorBoard events, W&B and MLflow, then the progress bar.
    ``sweep`` holds the other arguments of ``popjax.sweep.run_plan``."""
    callbacks = [on_round] if on_round else []
    if tensorboard and write:
        events.summary_writer_class()  # a missing package is an error before anything is written
        callbacks.append(events.TensorBoardLogger())
    # Made before the sweep starts: a missing package or an unreachable MLflow is an error
    # before anything is written.
    if wandb is not None:
        callbacks.append(loggers.WandbLogger(wandb))
    if mlflow is not None:
        callbacks.append(loggers.MLflowLogger(mlflow, experiment=plan.config.name))
    callbacks.append(ProgressBar(progress))
    return sweeps.run_plan(plan, write=write, callbacks=callbacks, **sweep)
