"""Weights & Biases and MLflow: round callbacks (see ``popjax.sweep.run_plan``) that log each
round's figures to the tracker a team already uses.

Both log the same figures each round, at the round's training step (``round_figures``): the
selected metric's best value and every member's, the median of each train and validation
metric, PBT's copies and diverged members, the best member's hyperparameters and every member's.
The run's config goes where each tracker keeps inputs (W&B: ``wandb.config``; MLflow: params),
and at the end the best member, its hyperparameters and its validation and test figures go
where each keeps results (W&B: the run's summary; MLflow: metrics and params named ``best``).

A run folder keeps the tracker's run id (``wandb-run.json``, ``mlflow-run.json``), so that
``popjax run --resume`` goes on logging into the same tracker run. Needs ``wandb``
(``pip install 'popjax[wandb]'``) or ``mlflow`` (``pip install 'popjax[mlflow]'``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from popjax.errors import PopjaxError
from popjax.interrupt import SweepInterrupted
from popjax.records import fitness_values, selected_metric

WANDB_RUN = "wandb-run.json"
MLFLOW_RUN = "mlflow-run.json"
# What an older MLflow server takes as a param's value; a longer one is cut.
MLFLOW_PARAM_LENGTH = 500
# MLflow's log_batch takes at most 1000 metrics and 100 params a call.
MLFLOW_BATCH = {"metrics": 1000, "params": 100}
MLFLOW_KEYS = ("tracking_uri", "experiment", "run_name", "tags")


def round_figures(record: dict) -> dict[str, float]:
    """The figures of one round's record (a metrics.jsonl line) that the trackers log, by key.

    ``<selected>/best`` and ``<selected>/member_<m>`` (e.g. ``val_accuracy/member_03``, the
    member number padded so that the keys sort in order), ``<metric>/median`` for each train
    and validation metric, ``pbt/copies``, ``pbt/diverged``, ``best_member_hparams/<name>`` and
    ``hparams/<name>/member_<m>``. Non-finite values (a diverged member's) are left out.

    Example:
      >>> popjax.loggers.round_figures(result.history[0])["val_accuracy/best"]
    """
    key, values = selected_metric(record)
    best = int(np.argmax(fitness_values(record)))
    width = len(str(len(values) - 1))
    figures = {f"{key}/best": values[best]}
    for name, series in record.items():
        if name.startswith(("train_", "val_")) and isinstance(series, list):
            finite = [x for x in series if x is not None and np.isfinite(x)]
            if finite:
                figures[f"{name}/median"] = np.median(finite)
    figures["pbt/copies"] = sum(p != m for m, p in enumerate(record["parents"]))
    figures["pbt/diverged"] = sum(record["diverged"])
    figures.update({f"{key}/member_{m:0{width}d}": v for m, v in enumerate(values)})
    for name, series in record["hparams"].items():
        if series[best] is not None:
            figures[f"best_member_hparams/{name}"] = series[best]
        for m, value in enumerate(series):
            if value is not None:
                figures[f"hparams/{name}/member_{m:0{width}d}"] = value
    return {k: float(v) for k, v in figures.items() if v is not None and np.isfinite(v)}


def result_figures(result) -> dict[str, float]:
    """The end of a sweep (a ``SweepResult``): ``best_member``, ``best_hparams/<name>``,
    ``best_val/<metric>``, ``best_test/<metric>`` and ``wall_time_s``."""
    figures = {"best_member": result.best_member, "wall_time_s": result.wall_time}
    for prefix, values in (
        ("best_hparams", result.best_hparams),
        ("best_val", result.best_val),
        ("best_test", result.best_test),
    ):
        figures.update({f"{prefix}/{name}": value for name, value in values.items()})
    return {k: float(v) for k, v in figures.items() if v is not None and np.isfinite(v)}


def unfinished_status() -> str:
    """How a sweep that did not finish ends, read in a callback's ``close``: killed by a stop
    the user asked for (Ctrl-C, SIGTERM), else failed."""
    error = sys.exc_info()[1]
    return "KILLED" if isinstance(error, (SweepInterrupted, KeyboardInterrupt)) else "FAILED"


def stored_run_id(run_dir, name: str) -> str | None:
    """The tracker's run id that a run folder keeps, if any (a resumed run logs into it)."""
    path = Path(run_dir) / name if run_dir is not None else None
    return json.loads(path.read_text())["run_id"] if path and path.exists() else None


def store_run_id(run_dir, name: str, run_id: str, **extra) -> None:
    if run_dir is not None:
        (Path(run_dir) / name).write_text(json.dumps({"run_id": run_id, **extra}) + "\n")


class WandbLogger:
    """Logs each round to Weights & Biases: ``wandb.log`` at the round's step, the run's config
    in ``wandb.config``, the best member in the run's summary at the end.

    Args:
      settings: a project's name, or keyword arguments of ``wandb.init`` (``project``,
        ``entity``, ``name``, ``mode``, ``tags``, ``dir``, ...). The run's name defaults to the
        run folder's, or the config's name without one. ``mode="offline"`` (or
        ``WANDB_MODE=offline``) writes the run under ``wandb/`` for ``wandb sync`` later.
    """

    def __init__(self, settings: str | dict):
        self.settings = tracker_settings(settings, "project", "wandb")
        self.wandb = import_tracker("wandb", "W&B logging (--wandb)")
        self.run = None
        self.ended = False

    def start(self, config, first_round: int, run_dir) -> None:
        settings = {"name": Path(run_dir).name if run_dir else config.name, **self.settings}
        settings.setdefault("config", config.to_dict())
        run_id = stored_run_id(run_dir, WANDB_RUN)
        if run_id is not None:
            settings.update(id=run_id, resume="allow")
        try:
            self.run = self.wandb.init(**settings)
        except (self.wandb.Error, ValueError) as error:
            raise PopjaxError(
                f"W&B could not start a run: {one_line(error)} (or log offline: WANDB_MODE=offline)"
            ) from None
        store_run_id(run_dir, WANDB_RUN, self.run.id)

    def __call__(self, record: dict) -> None:
        if self.run is not None:
            self.run.log(round_figures(record), step=record["step"])

    def end(self, result) -> None:
        if self.run is not None:
            self.run.summary.update(result_figures(result))
        self.ended = True

    def close(self) -> None:
        if self.run is not None:
            self.run.finish(exit_code=0 if self.ended else 1)
            self.run = None


class MLflowLogger:
    """Logs each round to MLflow: each figure a metric at the round's step, the run's config as
    params (nested keys joined by dots), the best member as ``best_...`` metrics and its
    hyperparameters as ``best_hparams.<name>`` params at the end; the MLflow run ends FINISHED,
    FAILED or KILLED (Ctrl-C) as the sweep does.

    Args:
      settings: a tracking URI (``"http://host:5000"``, ``"sqlite:///mlflow.db"``; ``""`` for
        MLflow's default, ``MLFLOW_TRACKING_URI``), or a dict of ``tracking_uri``,
        ``experiment`` (default: the config's name), ``run_name`` (default: the run folder's
        name) and ``tags``.
      experiment: the experiment when ``settings`` names none.

    The tracking server is reached, and the experiment made if new, here: before a sweep
    starts, so that a wrong URI stops it before it writes anything.
    """

    def __init__(self, settings: str | dict, experiment: str):
        self.settings = tracker_settings(settings, "tracking_uri", "mlflow")
        unknown = set(self.settings) - set(MLFLOW_KEYS)
        if unknown:
            raise PopjaxError(
                f"mlflow settings take {', '.join(MLFLOW_KEYS)} (got {', '.join(sorted(unknown))})"
            )
        import_tracker("mlflow", "MLflow logging (--mlflow)")
        from mlflow.entities import Metric, Param
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        self.Metric, self.Param, self.error = Metric, Param, MlflowException
        uri = self.settings.get("tracking_uri") or None
        with self.errors(f"MLflow at {uri or 'its default tracking URI'}"):
            self.client = MlflowClient(uri)
            name = self.settings.get("experiment", experiment)
            found = self.client.get_experiment_by_name(name)
            self.experiment_id = (
                found.experiment_id if found else self.client.create_experiment(name)
            )
        self.run_id = None
        self.ended = False

    def errors(self, where: str):
        """MLflow's exceptions, as one-line errors that say where."""
        logger = self

        class Errors:
            def __enter__(self):
                return self

            def __exit__(self, kind, error, trace):
                if isinstance(error, logger.error):
                    raise PopjaxError(f"{where}: {one_line(error.message)}") from None

        return Errors()

    def start(self, config, first_round: int, run_dir) -> None:
        self.run_id = stored_run_id(run_dir, MLFLOW_RUN)
        with self.errors("MLflow could not start a run"):
            if self.run_id is not None:
                self.client.update_run(self.run_id, status="RUNNING")
                return
            name = self.settings.get("run_name") or (Path(run_dir).name if run_dir else config.name)
            run = self.client.create_run(
                self.experiment_id, run_name=name, tags=self.settings.get("tags")
            )
            self.run_id = run.info.run_id
            self.log(params=flat_params(config.to_dict()))
        store_run_id(run_dir, MLFLOW_RUN, self.run_id, tracking_uri=self.client.tracking_uri)

    def log(self, metrics=None, params=None, step: int = 0) -> None:
        now = int(time.time() * 1000)
        metrics = [self.Metric(k, v, now, step) for k, v in (metrics or {}).items()]
        params = [self.Param(k, v) for k, v in (params or {}).items()]
        for items, kind in ((metrics, "metrics"), (params, "params")):
            size = MLFLOW_BATCH[kind]
            for start in range(0, len(items), size):
                self.client.log_batch(self.run_id, **{kind: items[start : start + size]})

    def __call__(self, record: dict) -> None:
        if self.run_id is not None:
            self.log(metrics=round_figures(record), step=record["step"])

    def end(self, result) -> None:
        if self.run_id is not None:
            figures = result_figures(result)
            hparams = {k: v for k, v in figures.items() if k.startswith("best_hparams/")}
            self.log(
                metrics={k: v for k, v in figures.items() if k not in hparams},
                params={k.replace("/", "."): repr(v) for k, v in hparams.items()},
                step=result.config.steps,
            )
        self.ended = True

    def close(self) -> None:
        if self.run_id is not None:
            status = "FINISHED" if self.ended else unfinished_status()
            self.client.set_terminated(self.run_id, status)
            self.run_id = None


def flat_params(table: dict, prefix: str = "") -> dict[str, str]:
    """A config's fields as MLflow params: nested tables' keys joined by dots, other values as
    JSON, cut to what every MLflow server takes."""
    params = {}
    for key, value in table.items():
        if isinstance(value, dict) and value:
            params.update(flat_params(value, f"{prefix}{key}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value)
            params[f"{prefix}{key}"] = text[:MLFLOW_PARAM_LENGTH]
    return params


def import_tracker(module: str, what: str):
    """The tracker's package; a missing one is an error that names the extra to install."""
    try:
        return __import__(module)
    except ImportError:
        raise PopjaxError(f"{what} needs {module}: pip install 'popjax[{module}]'") from None


def tracker_settings(settings, key: str, option: str) -> dict:
    if isinstance(settings, str):
        return {key: settings} if settings else {}
    if isinstance(settings, dict):
        return dict(settings)
    raise PopjaxError(
        f"{option} must be a {key.replace('_', ' ')} or a dict of settings "
        f"(got a {type(settings).__name__})"
    )


def one_line(error) -> str:
    return " ".join(str(error).split())
