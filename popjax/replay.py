"""Retraining one model from scratch with a PBT member's replayed hyperparameter schedules.

A PBT member's weights were shaped by every hyperparameter its ancestors trained with. Replaying
those schedules on a fresh model (fresh weights, fresh batch order) shows whether the schedule
itself, rather than the luck of one lineage, reaches the member's result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
from tqdm.auto import tqdm

from popjax import data as datasets
from popjax.config import SweepConfig
from popjax.errors import PopjaxError
from popjax.population import init_members, member_keys
from popjax.runfolder import CONFIG, read_metrics, read_summary
from popjax.schedules import from_trajectories, member_group, member_trajectories
from popjax.train import LOSSES, make_evaluate, make_member_step


@dataclass
class ReplayResult:
    member: int
    steps: int
    seed: int
    member_val_accuracy: float  # what the member reached in the sweep
    member_test_accuracy: float | None  # known for the run's best member only
    val: dict[str, float]  # what the replay reached
    test: dict[str, float]
    wall_time: float

    @property
    def val_gap(self) -> float:
        """Replay minus member, in validation accuracy: negative when the replay falls short."""
        return self.val["accuracy"] - self.member_val_accuracy

    @property
    def test_gap(self) -> float | None:
        """Replay minus member in test accuracy: free of the member's selection on validation."""
        if self.member_test_accuracy is None:
            return None
        return self.test["accuracy"] - self.member_test_accuracy

    def summary(self) -> dict:
        return {"member": self.member, "steps": self.steps, "seed": self.seed,
                "member_val_accuracy": self.member_val_accuracy,
                "member_test_accuracy": self.member_test_accuracy, "val": self.val,
                "test": self.test, "val_gap": self.val_gap, "test_gap": self.test_gap,
                "wall_time_s": round(self.wall_time, 3)}


def retrain(run, member="best", *, seed: int | None = None, model=None, loss_fn=None,
            data: datasets.Dataset | None = None, progress: bool = True) -> ReplayResult:
    """Trains one new model with ``member``'s replayed schedules, on the run's data and model.

    Args:
      run: a finished run folder.
      member: a member id, or "best".
      seed: initial weights and batch order; the run's seed by default (the member itself
        started from another key, so this is a fresh model either way).
      model, loss_fn, data: what the run was given instead of its config's, if anything.
    Returns:
      A ``ReplayResult``: the replay's validation and test figures beside the member's.
    """
    start = time.perf_counter()
    run_dir = Path(run)
    if not (run_dir / CONFIG).is_file():
        raise PopjaxError(f"{run_dir} is not a run folder (no {CONFIG})")
    sweep_config = SweepConfig.from_toml(run_dir / CONFIG).validate()
    trajectories = member_trajectories(run_dir, member)
    member = trajectories["member"]
    config = member_group(sweep_config, member).config  # its group's model, loss, optimizer
    last_round = read_metrics(run_dir)[-1]
    summary = read_summary(run_dir)
    seed = config.seed if seed is None else seed

    from popjax.sweep import build_model, load_data  # the sweep builds these from configs

    if data is None:
        data = load_data(config)
    config = config.with_budget(len(data.x_train))
    model = model if model is not None else build_model(config, data.num_classes)
    loss_fn = loss_fn or LOSSES[config.loss]
    train, val, test = (datasets.to_device(x, y) for x, y in (
        (data.x_train, data.y_train), (data.x_val, data.y_val), (data.x_test, data.y_test)))
    schedules = {name: from_trajectories(trajectories, name)
                 for name in trajectories["schedules"]}

    # The replayed learning_rate is already the rate at each step, schedule included.
    step_fn = make_member_step(model, loss_fn, train, config.batch_size,
                               optimizer=config.space.optimizer)

    @jax.jit
    def segment(params, opt_state, rng, first_step):
        def body(carry, step):
            params, opt_state, rng = carry
            hparams = {name: schedule(step) for name, schedule in schedules.items()}
            params, opt_state, rng, loss = step_fn(params, opt_state, hparams, rng, step)
            return (params, opt_state, rng), loss

        steps = first_step + jnp.arange(config.interval)
        return jax.lax.scan(body, (params, opt_state, rng), steps)[0]

    first_hparams = {name: jnp.asarray([s["values"][0]], jnp.float32)
                     for name, s in trajectories["schedules"].items()}
    key = jax.random.PRNGKey(seed)
    fresh = init_members(model, train.x[: config.batch_size], member_keys(key, 1), first_hparams,
                         optimizer=config.space.optimizer)
    state = jax.tree_util.tree_map(lambda leaf: leaf[0],
                                   (fresh.params, fresh.opt_state, fresh.rng))
    for first_step in tqdm(range(0, trajectories["steps"], config.interval),
                           desc=f"replay of member {member}", unit="round",
                           disable=not progress):
        state = segment(*state, first_step)

    evaluate = jax.jit(make_evaluate(model, loss_fn))
    params = jax.tree_util.tree_map(lambda leaf: leaf[None], state[0])
    last_hparams = {name: jnp.asarray([schedule(trajectories["steps"] - 1)])
                    for name, schedule in schedules.items()}
    figures = {}
    for split_name, split in (("val", val), ("test", test)):
        metrics = evaluate(params, split, last_hparams)
        figures[split_name] = {"loss": float(metrics.loss[0]),
                               "accuracy": float(metrics.accuracy[0])}
    return ReplayResult(member=member, steps=trajectories["steps"], seed=seed,
                        member_val_accuracy=float(last_round["val_accuracy"][member]),
                        member_test_accuracy=(summary["test"]["accuracy"]
                                              if member == summary["best_member"] else None),
                        val=figures["val"], test=figures["test"],
                        wall_time=time.perf_counter() - start)
