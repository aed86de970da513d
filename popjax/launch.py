"""What a run starts from: the plan resolved once from what ``popjax.run`` or ``popjax run``
was given, the folder a resumed run goes on in, and the config a run folder keeps."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from popjax.config import PYTHON_TASK, SweepConfig
from popjax.errors import PopjaxError
from popjax.plan import Plan
from popjax.runfolder import CONFIG
from popjax.task import Task
from popjax.task_loading import IMPORT_FOLDER, import_folder


def plan_run(
    config: SweepConfig | str | Path | None = None,
    *,
    task: Task | Callable | str | None = None,
    out: str | Path | None = None,
    write: bool = True,
    resume: str | Path | None = None,
    **overrides,
) -> tuple[Plan, Task | Callable | None, str | Path | None]:
    """A sweep's plan, resolved once from what ``popjax.run`` (or ``popjax run``) was given,
    with the task given from Python, if any, and the run folder (a resumed run's own).

    Raises:
      PopjaxError: a config that cannot run, or a resume that changes it.
    """
    if out is not None and not isinstance(out, (str, os.PathLike)):
        raise PopjaxError(f"out must be a folder path (got a {type(out).__name__})")
    if isinstance(task, (str, dict)):  # a config's task: "regression", "package.module:factory"
        overrides["task"], task = task, None
    if resume is not None:
        if not write:
            raise PopjaxError("a resumed run goes on writing its folder: leave write on")
        config, out = resume_target(config, resume, overrides)
    elif task is not None:
        overrides["task"] = {"name": PYTHON_TASK}
    return Plan.from_config(config, **overrides), task, out


def with_import_folder(config: SweepConfig) -> SweepConfig:
    """The config a run folder keeps: a task of one's own with the folder its module was
    imported from, so that the run resumes, reports and replays from any current folder."""
    if config.builtin_task or config.task["name"] == PYTHON_TASK:
        return config
    folder = import_folder(config.task["name"])
    if folder is None:
        return config
    return config.replace(task={**config.task, IMPORT_FOLDER: folder})


def resume_target(config, resume, overrides):
    """The config and folder of a run to resume; its settings cannot change midway."""
    run_dir = Path(resume)
    if config is not None or any(v is not None for v in overrides.values()):
        raise PopjaxError("a resumed run keeps its own config: give --resume alone")
    if not (run_dir / CONFIG).is_file():
        raise PopjaxError(
            f"{run_dir} is not a run folder (no {CONFIG}): give a folder that popjax run wrote"
        )
    return run_dir / CONFIG, run_dir
