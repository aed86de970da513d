"""The loop that ties a sweep together: rounds on the device, records on the host.

A round (``popjax.round``) is one jitted call per group: PBT, ``interval`` training steps for
every member, then validation. The host only reads back per-member figures (a few numbers per
member) to log, record the lineage (``popjax.records``), checkpoint and draw progress.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from popjax import data as datasets
from popjax import mesh as meshes
from popjax.checkpoint import SweepCheckpoints
from popjax.config import SweepConfig
from popjax.distributed import Distributed, is_main_process
from popjax.distributed import start as start_distributed
from popjax.errors import PopjaxError
from popjax.groups import Group, member_ranges, resolve_groups
from popjax.interrupt import SweepInterrupted, stop_requests
from popjax.lineage import Lineage
from popjax.nn import MODELS
from popjax.population import Population, init_population
from popjax.records import check_not_all_diverged, merge_records, round_record
from popjax.round import Standing, make_round
from popjax.runfolder import CONFIG, LINEAGE, SUMMARY, RunFolder, check_new, default_run_dir
from popjax.train import LOSSES, PER_EXAMPLE_HPARAMS, cross_entropy, make_evaluate


@dataclass
class SweepResult:
    """A finished sweep. ``history`` holds one dict of per-member lists per round."""

    config: SweepConfig
    best_member: int
    best_hparams: dict[str, float]
    best_val: dict[str, float]
    best_test: dict[str, float]
    history: list[dict]
    lineage: Lineage
    population: Population
    test: dict[str, np.ndarray]
    wall_time: float
    devices: list[str]
    compilations: int
    run_dir: Path | None
    groups: dict[str, list[int]] | None = None  # name -> [first member, end)

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.config.name,
            "best_member": self.best_member,
            "best_hparams": self.best_hparams,
            "val": self.best_val,
            "test": self.best_test,
            "population": self.config.population,
            "steps": self.config.steps,
            "wall_time_s": round(self.wall_time, 3),
            "devices": self.devices,
            "compilations": self.compilations,
            "groups": self.groups,
        }


def build_model(config: SweepConfig, num_classes: int):
    fields = {k: v for k, v in config.model.items() if k != "name"}
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    return MODELS[config.model["name"]](num_classes=num_classes, **fields)


def load_data(config: SweepConfig) -> datasets.Dataset:
    """The dataset a config names, split as the config says."""
    return datasets.load(config.data["name"], path=config.data.get("path"),
                         val_fraction=config.data.get("val_fraction", 0.1), seed=config.seed)


def check_model_fits(model, sample_x, num_classes: int) -> None:
    """Runs the model once on one batch: a shape mismatch becomes a one-line error."""
    try:
        variables = jax.eval_shape(lambda k: model.init(k, sample_x, train=False),
                                   jax.random.PRNGKey(0))
        logits = jax.eval_shape(lambda v: model.apply(v, sample_x, train=False), variables)
    except Exception as error:  # flax raises many kinds on a shape mismatch
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
        raise PopjaxError(
            f"the model cannot take inputs of shape {tuple(sample_x.shape[1:])}: {first_line}"
        ) from None
    if logits.shape[-1] < num_classes:
        raise PopjaxError(
            f"the model outputs {logits.shape[-1]} logits but the labels have {num_classes} "
            "classes: give the model at least as many outputs"
        )


def run(config: SweepConfig | str | Path | None = None, *, model=None, loss_fn=None,
        data: datasets.Dataset | None = None, out: str | Path | None = None, write: bool = True,
        progress: bool = True, distributed: Distributed | None = None,
        resume: str | Path | None = None, tensorboard: bool = False,
        on_round: Callable[[dict], None] | None = None, **overrides) -> SweepResult:
    """Runs a whole sweep and returns its result.

    Args:
      config: a ``SweepConfig``, the path of a TOML config, or None for the built-in default.
      model: a flax linen module to train instead of the config's (see ``popjax.nn``).
      loss_fn: ``loss_fn(logits, labels) -> scalar``; softmax cross-entropy by default.
      data: a ``Dataset`` to train on instead of the config's.
      out: the run folder; ``runs/<name>-<timestamp>`` by default. Must not exist yet.
      write: False writes no run folder (and no checkpoints).
      progress: show a progress bar.
      distributed: join a multi-process run first (see ``popjax.distributed``).
      resume: a run folder to continue from its newest readable checkpoint, with its config
        (pass the same ``model``, ``loss_fn`` and ``data`` if the run was given its own).
      tensorboard: also stream each round's figures to TensorBoard event files in
        ``<run folder>/tensorboard`` (needs tensorboardX).
      on_round: called on the main process with each round's record (a metrics.jsonl line).
      **overrides: config fields to change, e.g. ``population=8, steps=200``.

    Raises:
      PopjaxError: bad input, or every member diverged.
      SweepInterrupted: SIGINT or SIGTERM arrived; a checkpoint was saved first.

    Example:
      >>> result = popjax.run(population=8, steps=400, interval=100, write=False)
      >>> result.best_hparams["learning_rate"], result.best_test["accuracy"]
    """
    start = time.perf_counter()
    if resume is not None:
        config, out = resume_target(config, resume, overrides)
    if config is None:
        config = SweepConfig()
    elif not isinstance(config, SweepConfig):
        config = SweepConfig.from_toml(config)
    config = config.replace(**overrides).validate()
    if distributed is not None:
        start_distributed(distributed)

    devices = jax.devices()
    write = write and is_main_process()
    run_dir = Path(out) if out is not None else default_run_dir(config.name)
    if write and resume is None:
        check_new(run_dir)
    if tensorboard and write:
        from popjax.tensorboard import TensorBoardLogger, summary_writer_class

        summary_writer_class()  # a missing package is an error before anything is written

    if data is None:
        data = load_data(config)
    config = config.with_budget(len(data.x_train))
    groups = resolve_groups(config)
    if model is not None and len(groups) > 1:
        raise PopjaxError("a sweep with groups builds each group's model from its config: "
                          "drop model= or the groups")
    sample_x = jnp.asarray(data.x_train[: config.batch_size])
    group_models, group_losses = [], []
    for group in groups:
        meshes.check_population_size(group.config.population, len(devices))
        group_loss = loss_fn or LOSSES[group.config.loss]
        if group_loss is not cross_entropy:
            needs = [n for n in PER_EXAMPLE_HPARAMS if n in group.config.space.priors]
            if needs:
                raise PopjaxError(f"{', '.join(needs)} work with popjax's own cross-entropy "
                                  "only: use loss = \"cross_entropy\" or remove them")
        group_model = model if model is not None else build_model(group.config,
                                                                  data.num_classes)
        check_model_fits(group_model, sample_x, data.num_classes)
        group_models.append(group_model)
        group_losses.append(group_loss)

    mesh = meshes.population_mesh(devices)
    members = meshes.member_sharding(mesh)
    train, val, test = (
        datasets.DeviceSplit(meshes.put_replicated(x, mesh), meshes.put_replicated(y, mesh))
        for x, y in ((data.x_train, data.y_train), (data.x_val, data.y_val),
                     (data.x_test, data.y_test)))

    init_key, pbt_key = jax.random.split(jax.random.PRNGKey(config.seed))
    programs = [GroupProgram.build(group, index, group_model, group_loss, sample_x, train, val,
                                   init_key, pbt_key, members, len(groups))
                for index, (group, group_model, group_loss) in enumerate(
                    zip(groups, group_models, group_losses))]

    # Checkpoints need every process to write its shards; multi-process runs go without.
    checkpointing = write and jax.process_count() == 1
    if resume is not None:
        if not checkpointing:
            raise PopjaxError("resuming needs a single-process run that writes its folder")
        checkpoints = SweepCheckpoints(run_dir, config.keep_checkpoints)
        abstract = [jax.tree_util.tree_map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=members),
            jax.eval_shape(program.init)) for program in programs]
        first_round, states, meta = checkpoints.restore_latest(abstract)
        lineage, history = Lineage.from_dict(meta["lineage"]), meta["history"]
        folder = RunFolder.reopen(run_dir, history)
    else:
        states = [program.init() for program in programs]
        first_round, history = 0, []
        lineage = Lineage(config.interval,
                          groups=member_ranges(groups) if len(groups) > 1 else {})
        folder = RunFolder(run_dir, config.to_toml()) if write else None
        checkpoints = SweepCheckpoints(run_dir, config.keep_checkpoints) if checkpointing else None
    round_callbacks = [on_round] if on_round and is_main_process() else []
    if tensorboard and write:
        round_callbacks.append(TensorBoardLogger(run_dir / "tensorboard"))

    bar = tqdm(total=config.rounds, initial=first_round, desc=config.name, unit="round",
               disable=not (progress and is_main_process()))
    with stop_requests() as stops:
        for round_index in range(first_round, config.rounds):
            # Every group's round is dispatched before any is read back, so they run back to
            # back on the device while the host waits once.
            outputs = []
            for index, program in enumerate(programs):
                population, standing, output = program.round_fn(*states[index], round_index)
                states[index] = (population, standing)
                outputs.append((output, population.hparams))
            group_records = []
            for program, host in zip(programs, meshes.to_host(outputs)):
                last_epochs = ([history[-1]["epochs"][m] for m in program.group.members]
                               if history else None)
                group_records.append(round_record(round_index, config, host, last_epochs,
                                                  len(data.x_train)))
            record = merge_records(group_records, groups)
            lineage.record(record["parents"], record["hparams"], record["epochs"])
            history.append(record)
            if folder:
                folder.append_round(record)
            for callback in round_callbacks:
                callback(record)
            check_not_all_diverged(record, config)
            bar.set_postfix(best=f"{np.nanmax(record['val_accuracy']):.3f}",
                            median=f"{np.nanmedian(record['val_accuracy']):.3f}")
            bar.update()
            done = round_index + 1
            if checkpoints and (done % config.checkpoint_every == 0 or done == config.rounds
                                or stops.requested):
                checkpoints.save(done, states,
                                 {"lineage": lineage.to_dict(), "history": history})
            if stops.requested and done < config.rounds:
                bar.close()
                where = (f"resume with: popjax run --resume {run_dir}" if checkpoints
                         else "no checkpoint was written")
                raise SweepInterrupted(f"stopped after round {done} of {config.rounds}; {where}",
                                       stops.signum)
    bar.close()
    if checkpoints:
        checkpoints.close()
    for callback in round_callbacks:
        if hasattr(callback, "close"):
            callback.close()

    test_metrics = [meshes.to_host(program.evaluate(population.params, test,
                                                    population.hparams))
                    for program, (population, _) in zip(programs, states)]
    last = history[-1]
    fitness = np.concatenate([np.asarray(meshes.to_host(standing.fitness))
                              for _, standing in states])
    best = int(np.argmax(np.nan_to_num(fitness, nan=-np.inf)))
    test_per_member = {name: np.concatenate([np.asarray(getattr(m, name)) for m in test_metrics])
                       for name in ("loss", "accuracy")}
    populations = [population for population, _ in states]
    result = SweepResult(
        config=config,
        best_member=best,
        best_hparams={k: v[best] for k, v in last["hparams"].items() if v[best] is not None},
        best_val={"loss": last["val_loss"][best], "accuracy": last["val_accuracy"][best]},
        best_test={k: float(v[best]) for k, v in test_per_member.items()},
        history=history,
        lineage=lineage,
        population=populations[0] if len(populations) == 1 else populations,
        test=test_per_member,
        wall_time=time.perf_counter() - start,
        devices=[str(d) for d in devices],
        compilations=sum(program.round_fn._cache_size() for program in programs),
        run_dir=run_dir if write else None,
        groups=member_ranges(groups),
    )
    if folder:
        folder.write_json(LINEAGE, lineage.to_dict())
        folder.write_json(SUMMARY, result.summary())
    return result


@dataclass
class GroupProgram:
    """One group's compiled pieces: init, the round, and evaluation."""

    group: Group
    init: Callable
    round_fn: Callable
    evaluate: Callable

    @classmethod
    def build(cls, group: Group, index: int, model, loss_fn, sample_x, train, val, init_key,
              pbt_key, members, num_groups: int) -> "GroupProgram":
        config = group.config
        if num_groups > 1:  # one group keeps the sweep's own keys
            init_key, pbt_key = (jax.random.fold_in(k, index) for k in (init_key, pbt_key))

        def init():
            population = init_population(init_key, model, sample_x, config.space,
                                         config.population)
            return population, Standing.initial(config.population)

        return cls(
            group=group,
            init=jax.jit(init, out_shardings=members),
            round_fn=jax.jit(make_round(model, loss_fn, train, val, config, pbt_key),
                             out_shardings=members, donate_argnums=(0, 1)),
            evaluate=jax.jit(make_evaluate(model, loss_fn), out_shardings=members),
        )


def resume_target(config, resume, overrides):
    """The config and folder of a run to resume; its settings cannot change midway."""
    run_dir = Path(resume)
    if config is not None or any(v is not None for v in overrides.values()):
        raise PopjaxError("a resumed run keeps its own config: give --resume alone")
    if not (run_dir / CONFIG).is_file():
        raise PopjaxError(f"{run_dir} is not a run folder (no {CONFIG}): give a folder that "
                          "popjax run wrote")
    return run_dir / CONFIG, run_dir
