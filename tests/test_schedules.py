"""Schedules: optax-compatible, per-member under vmap, and the exact replay of a lineage."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import popjax
from popjax import replay, schedules
from popjax.cli import main
from popjax.errors import PopjaxError
from popjax.lineage import Lineage


def test_warmup_then_decay_shapes():
    cosine = schedules.warmup_cosine(peak=1.0, warmup_steps=10, decay_steps=100, end_value=0.1)
    assert float(cosine(0)) == 0.0
    assert float(cosine(5)) == pytest.approx(0.5)
    assert float(cosine(10)) == pytest.approx(1.0)
    assert float(cosine(60)) == pytest.approx(0.55, abs=1e-6)  # half way: the mean
    assert float(cosine(110)) == pytest.approx(0.1) and float(cosine(500)) == pytest.approx(0.1)
    linear = schedules.warmup_linear(2.0, 0, 100, 0.0)
    assert float(linear(0)) == 2.0 and float(linear(50)) == pytest.approx(1.0)
    exponential = schedules.warmup_exponential(1.0, 0, decay_rate=0.5, transition_steps=10)
    assert float(exponential(20)) == pytest.approx(0.25)
    step = schedules.step_decay(0.8, every=100, factor=0.5)
    assert [float(step(s)) for s in (0, 99, 100, 250)] == pytest.approx([0.8, 0.8, 0.4, 0.2])
    assert float(schedules.constant(0.3)(1234)) == pytest.approx(0.3)


def test_per_member_parameters_under_jit_and_vmap():
    peaks = jnp.array([0.1, 0.2, 0.4])
    warmups = jnp.array([0.0, 10.0, 20.0])

    def member_rate(peak, warmup, step):
        return schedules.warmup_cosine(peak, warmup, 100, 0.0)(step)

    rates = jax.jit(jax.vmap(member_rate, in_axes=(0, 0, None)))(peaks, warmups, 10)
    expected = [
        schedules.warmup_cosine(float(p), float(w), 100, 0.0)(10) for p, w in zip(peaks, warmups)
    ]
    np.testing.assert_allclose(rates, expected, rtol=1e-6)
    assert float(rates[2]) == pytest.approx(0.2)  # half way through its 20-step warmup


def test_schedule_is_the_learning_rate_of_an_optax_optimizer():
    schedule = schedules.step_decay(0.5, every=2, factor=0.1)
    optimizer = optax.sgd(learning_rate=schedule)
    w = jnp.array(0.0)
    state = optimizer.init(w)
    update = jax.jit(optimizer.update)
    for _ in range(4):
        updates, state = update(jnp.array(1.0), state)
        w = optax.apply_updates(w, updates)
    assert float(w) == pytest.approx(-(0.5 + 0.5 + 0.05 + 0.05))


def hand_lineage():
    lineage = Lineage(interval=10)
    lineage.record([0, 1], {"learning_rate": [0.1, 0.2], "momentum": [0.9, 0.5]})
    lineage.record([0, 0], {"learning_rate": [0.1, 0.12], "momentum": [0.9, 0.9]})
    lineage.record([1, 1], {"learning_rate": [0.096, 0.12], "momentum": [0.72, 0.9]})
    return lineage


def test_replay_follows_the_ancestry_at_every_step_and_boundary():
    result = type("Result", (), {"lineage": hand_lineage(), "best_member": 0})()
    lr = jax.jit(replay.schedule(result, member=0))
    # Member 0 copied member 1 at round 2, which had copied member 0 at round 1: the weights
    # trained as member 0, then as member 1, then as member 0 again.
    expected = {0: 0.1, 9: 0.1, 10: 0.12, 19: 0.12, 20: 0.096, 29: 0.096, 30: 0.096}
    for step, value in expected.items():
        assert float(lr(step)) == pytest.approx(value), step
    lr1 = replay.schedule(result, member=1)
    # Member 1 carries the weights member 0 trained in round 0.
    assert [float(lr1(s)) for s in (9, 10, 19, 20)] == pytest.approx([0.1, 0.12, 0.12, 0.12])


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, tiny_run):
    """A tiny sweep's result and run folder, shared by the tests that replay and export it."""
    out = tmp_path_factory.mktemp("real") / "run"
    return tiny_run(steps=80, out=out, seed=2), out


def command(capsys, *args) -> tuple[int, str, str]:
    """``popjax ARGS`` through the command's entry point: its exit code, stdout and stderr."""
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_replay_of_a_real_run_matches_its_lineage_at_every_step(real_run):
    run, out = real_run
    assert any(p != m for r in run.lineage.parents for m, p in enumerate(r))
    ancestry = run.lineage.ancestry(run.best_member)
    for name in run.best_hparams:
        schedule = jax.jit(replay.schedule(out, member="best", name=name))
        values = np.asarray(jax.vmap(schedule)(jnp.arange(80)))
        for step in range(80):
            r = step // 10
            want = np.float32(run.lineage.hparams[r][name][ancestry[r]])
            assert values[step] == want, (name, step)
        assert values[-1] == np.float32(run.best_hparams[name])


def test_export_and_load_round_trip_exactly(tmp_path, real_run, capsys):
    _, run = real_run
    path = tmp_path / "schedule.json"
    code, _, err = command(
        capsys, "export-schedule", str(run), "--member", "best", "--out", str(path)
    )
    assert code == 0, err
    written = json.loads(path.read_text())
    loaded = schedules.load(path)
    assert set(loaded) == {"learning_rate", "momentum", "dropout", "weight_decay"}
    for name, schedule in loaded.items():
        replayed = replay.schedule(run, member="best", name=name)
        steps = jnp.arange(written["steps"] + 5)
        assert np.array_equal(jax.vmap(schedule)(steps), jax.vmap(replayed)(steps))
        values = written["schedules"][name]["values"]
        assert [float(np.float32(v)) for v in values] == values  # float32 kept exactly
    code, _, err = command(capsys, "export-schedule", str(run), "--out", str(path))
    assert code == 2 and "already exists" in err


def test_loaded_schedule_drives_a_plain_optax_loop(tmp_path):
    path = tmp_path / "schedule.json"
    result = type("Result", (), {"lineage": hand_lineage(), "best_member": 0})()
    replay.export(result, path, member=0)
    lr = schedules.load(path)["learning_rate"]
    opt = optax.sgd(learning_rate=lr)
    w = jnp.array(0.0)
    state = opt.init(w)
    update = jax.jit(opt.update)
    for _ in range(30):
        updates, state = update(jnp.array(1.0), state)
        w = optax.apply_updates(w, updates)
    assert float(w) == pytest.approx(-(10 * 0.1 + 10 * 0.12 + 10 * 0.096), rel=1e-5)


def test_bad_member_and_name_are_clear_errors():
    result = type("Result", (), {"lineage": hand_lineage(), "best_member": 0})()
    with pytest.raises(PopjaxError, match="member 5 is not in the run"):
        replay.schedule(result, member=5)
    with pytest.raises(PopjaxError, match="no hyperparameter 'lr'"):
        replay.schedule(result, name="lr")


def test_tuned_warmup_changes_each_members_learning_rate(small_data, small_model):
    from popjax.train import make_segment

    from conftest import classifier, hparams_for, members

    hparams = hparams_for(2, learning_rate=0.5)
    hparams["warmup_steps"] = jnp.array([0.0, 1000.0])  # member 1 starts at rate 0

    def hparams_at(hp, step):
        return schedules.at_step(hp, {"learning_rate": "warmup_cosine"}, step, 2000)

    task = classifier(small_data, small_model)
    population = members(task, hparams, seed=0)
    segment = jax.jit(make_segment(task, 1, hparams_at=hparams_at))
    after, _ = segment(population, task.data.train)
    moved = jax.tree.map(
        lambda a, b: np.abs(np.asarray(a) - np.asarray(b)).max(axis=tuple(range(1, a.ndim))),
        after.params,
        population.params,
    )
    assert all(m[0] > 0 and m[1] == 0 for m in jax.tree.leaves(moved))
    # The next segment starts at step 1, where member 1's warmup gives 0.5 / 1000.
    member_1 = jax.tree.map(lambda v: v[1], hparams)
    assert float(hparams_at(member_1, after.step[1])["learning_rate"]) == pytest.approx(0.5 / 1000)


def test_pbt_tunes_schedule_parameters_and_replay_applies_them(tmp_path, tiny_run):
    space = popjax.SearchSpace(
        {"warmup_steps": popjax.Uniform(0.0, 60.0)}, schedule="warmup_cosine"
    )
    run = tiny_run(
        steps=80,
        out=tmp_path / "run",
        seed=2,
        space=space,
    )
    warmups = [r["warmup_steps"] for r in run.lineage.hparams]
    assert any(a != b for r0, r1 in zip(warmups, warmups[1:]) for a, b in zip(r0, r1))
    ancestry = run.lineage.ancestry(run.best_member)
    lr = jax.jit(replay.schedule(tmp_path / "run", member="best", name="learning_rate"))
    values = np.asarray(jax.vmap(lr)(jnp.arange(80)))
    for step in range(80):
        r = step // 10
        hp = {
            name: np.float32(run.lineage.hparams[r][name][ancestry[r]])
            for name in ("learning_rate", "warmup_steps")
        }
        peak, warmup = float(hp["learning_rate"]), float(hp["warmup_steps"])
        if step < warmup:
            want = peak * step / warmup
        else:
            want = peak * 0.5 * (1 + np.cos(np.pi * min((step - warmup) / (80 - warmup), 1.0)))
        assert values[step] == pytest.approx(want, rel=1e-5, abs=1e-7), step
    # The export carries the schedule kind, so a loaded learning_rate is the same function.
    replay.export(tmp_path / "run", tmp_path / "s.json")
    loaded = schedules.load(tmp_path / "s.json")["learning_rate"]
    np.testing.assert_array_equal(jax.vmap(loaded)(jnp.arange(80)), values)


def test_schedule_parameters_need_their_schedule():
    with pytest.raises(PopjaxError, match="warmup_steps is a parameter of the warmup_cosine"):
        popjax.SearchSpace({"warmup_steps": popjax.Uniform(0.0, 10.0)})
    with pytest.raises(PopjaxError, match="unknown schedule 'cosine'"):
        popjax.SearchSpace.from_dict({"schedule": "cosine"})
    space = popjax.SearchSpace.from_dict({"schedule": "step_decay"})
    assert {"decay_every", "decay_factor"} <= set(space.names)
    assert popjax.SearchSpace.from_dict(space.to_dict()).schedule == "step_decay"


@pytest.mark.slow
def test_popjax_replay_retrains_the_best_member_close_to_its_result(tmp_path, capsys):
    config = popjax.SweepConfig(model={"name": "mlp", "hidden": [64, 64]})
    run = popjax.run(
        config,
        population=4,
        steps=1500,
        interval=250,
        batch_size=64,
        out=tmp_path / "run",
        progress=False,
    )
    code, out, err = command(
        capsys, "replay", str(tmp_path / "run"), "--quiet", "--out", str(tmp_path / "replay.json")
    )
    assert code == 0, err
    assert "gap" in out
    report = json.loads((tmp_path / "replay.json").read_text())
    assert report["member"] == run.best_member
    assert report["metric"] == "accuracy"
    assert report["member_val"] == pytest.approx(run.best_val["accuracy"])
    # A fresh model differs from the member by its initial weights and batch order only. On
    # this 400-example validation split one standard error is about 2.4 points at 60%, and the
    # member is the best of 4 there, which alone lifts it by about 1.0 standard error (2.5
    # points): the replay may fall short on validation by that bias plus two standard errors of
    # a difference (~7 points), under 10 in all. On test, which chose nothing, it must come
    # within 6.
    assert report["val_gap"] > -0.10, report
    assert report["test_gap"] > -0.06, report
    assert report["val"]["accuracy"] > 0.4  # far above chance (0.1): the schedule trains


def peak_warmup(step, hp):
    """The warmup's rate at ``step``, from 0 to the peak, or None past the warmup."""
    peak, warmup = float(hp["learning_rate"]), float(hp.get("warmup_steps", 0.0))
    return peak * step / warmup if step < warmup else None


# Each tuned schedule's rate, written here with numpy from its definition in docs/schedules.md.
RATES = {
    "warmup_linear": lambda step, hp, total: (
        peak_warmup(step, hp)
        if peak_warmup(step, hp) is not None
        else float(hp["learning_rate"])
        * (1 - min((step - float(hp["warmup_steps"])) / (total - float(hp["warmup_steps"])), 1.0))
    ),
    "warmup_exponential": lambda step, hp, total: (
        peak_warmup(step, hp)
        if peak_warmup(step, hp) is not None
        else float(hp["learning_rate"])
        * float(hp["decay_rate"]) ** ((step - float(hp["warmup_steps"])) / 1000)
    ),
    "step_decay": lambda step, hp, total: (
        float(hp["learning_rate"])
        * float(hp["decay_factor"]) ** np.floor(step / float(hp["decay_every"]))
    ),
}
TUNED = {
    "warmup_linear": {"warmup_steps": popjax.Uniform(0.0, 60.0)},
    "warmup_exponential": {
        "warmup_steps": popjax.Uniform(0.0, 30.0),
        "decay_rate": popjax.LogUniform(0.001, 0.5),
    },
    "step_decay": {
        "decay_every": popjax.Uniform(5.0, 40.0),
        "decay_factor": popjax.Uniform(0.1, 0.9),
    },
}


@pytest.mark.parametrize("kind", sorted(TUNED))
def test_tuned_schedules_replay_and_export_their_rates(tmp_path, kind, tiny_run):
    space = popjax.SearchSpace(TUNED[kind], schedule=kind)
    run = tiny_run(
        steps=80,
        out=tmp_path / "run",
        seed=2,
        space=space,
    )
    names = ["learning_rate", *TUNED[kind]]
    for name in TUNED[kind]:  # PBT moved the schedule's own parameters
        rounds = [r[name] for r in run.lineage.hparams]
        assert any(a != b for r0, r1 in zip(rounds, rounds[1:]) for a, b in zip(r0, r1)), name
    ancestry = run.lineage.ancestry(run.best_member)
    lr = jax.jit(replay.schedule(tmp_path / "run", member="best", name="learning_rate"))
    values = np.asarray(jax.vmap(lr)(jnp.arange(80)))
    for step in range(80):
        r = step // 10
        hp = {name: np.float32(run.lineage.hparams[r][name][ancestry[r]]) for name in names}
        want = RATES[kind](step, hp, 80)
        assert values[step] == pytest.approx(want, rel=1e-5, abs=1e-7), step
    # The schedule moves the rate within rounds too, not only where PBT sets new values.
    assert any(values[step] != values[step - 1] for step in range(1, 80) if step % 10)
    replay.export(tmp_path / "run", tmp_path / "s.json")
    loaded = schedules.load(tmp_path / "s.json")
    assert json.loads((tmp_path / "s.json").read_text())["schedule_kinds"] == {
        "learning_rate": kind
    }
    # Equal at every step to the replay, computed the same way (jit may fuse differently).
    replayed = replay.schedule(tmp_path / "run", member="best", name="learning_rate")
    steps = jnp.arange(80)
    np.testing.assert_array_equal(
        jax.vmap(loaded["learning_rate"])(steps), jax.vmap(replayed)(steps)
    )
