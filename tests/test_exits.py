"""Every way a sweep ends closes what it opened (checkpoints, progress bar, TensorBoard
writer) and leaves its run folder resumable: the end, an error in a round, a user's callback
raising, a group whose members all diverge, Ctrl-C."""

import os
import signal

import pytest
from tqdm.auto import tqdm

import popjax
import popjax.progress
import popjax.sweep
import popjax.tensorboard
from popjax.checkpoint import SweepCheckpoints
from popjax.errors import PopjaxError
from popjax.interrupt import SweepInterrupted
from popjax.tensorboard import TensorBoardLogger

SETTINGS = dict(
    population=4,
    steps=50,
    interval=10,
    batch_size=16,
    checkpoint_every=1,
    progress=False,
    seed=5,
)
FAILING_ROUND = 2


def record_closes(patch) -> list:
    """The names of what the sweep closes, once each time it closes it, through ``patch`` (a
    MonkeyPatch). A progress bar closed only by the garbage collector does not count."""
    names = []

    class Checkpoints(SweepCheckpoints):
        def close(self):
            super().close()
            names.append("checkpoints")

    class Bar(tqdm):
        def close(self):
            if not getattr(self, "_collected", False):  # not when garbage collected
                names.append("bar")
            super().close()

        def __del__(self):
            self._collected = True
            super().__del__()

    class Logger(TensorBoardLogger):
        def close(self):
            super().close()
            names.append("tensorboard")

    patch.setattr(popjax.sweep, "SweepCheckpoints", Checkpoints)
    patch.setattr(popjax.progress, "tqdm", Bar)
    patch.setattr(popjax.tensorboard, "TensorBoardLogger", Logger)
    return names


@pytest.fixture
def closed(monkeypatch):
    return record_closes(monkeypatch)


def sweep(small_data, small_model, out, on_round=None):
    """The sweep every exit test runs, with a progress bar and a TensorBoard writer open."""
    return popjax.run(
        data=small_data,
        model=small_model,
        out=out,
        tensorboard=True,
        on_round=on_round,
        **{**SETTINGS, "progress": True},
    )


@pytest.fixture(scope="module")
def whole(tmp_path_factory, small_data, small_model):
    """The sweep run to its end, and what it closed."""
    out = tmp_path_factory.mktemp("whole") / "run"
    with pytest.MonkeyPatch.context() as patch:
        names = record_closes(patch)
        result = sweep(small_data, small_model, out)
    return result, names


def raise_in_callback(record):
    if record["round"] == FAILING_ROUND:
        raise RuntimeError("the callback failed")


def interrupt_in_callback(record):
    if record["round"] == FAILING_ROUND:
        os.kill(os.getpid(), signal.SIGINT)  # caught: the sweep stops after this round


def test_the_end_closes_what_it_opened(whole):
    assert sorted(whole[1]) == ["bar", "checkpoints", "tensorboard"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["round", "callback", "sigint"])
def test_every_exit_closes_what_it_opened_and_the_run_resumes(
    how, tmp_path, monkeypatch, closed, whole, small_data, small_model
):
    out = tmp_path / "run"
    on_round = {"callback": raise_in_callback, "sigint": interrupt_in_callback}.get(how)
    if how == "round":
        play_round = popjax.sweep.play_round

        def failing_round(programs, states, round_index, history, plan):
            if round_index == FAILING_ROUND:
                raise RuntimeError("the device failed")
            return play_round(programs, states, round_index, history, plan)

        monkeypatch.setattr(popjax.sweep, "play_round", failing_round)
    expected = {"round": RuntimeError, "callback": RuntimeError, "sigint": SweepInterrupted}[how]
    with pytest.raises(expected):
        sweep(small_data, small_model, out, on_round)
    assert sorted(closed) == ["bar", "checkpoints", "tensorboard"]

    monkeypatch.undo()
    resumed = popjax.run(resume=out, data=small_data, model=small_model, progress=False)
    whole_result = whole[0]
    assert resumed.history == whole_result.history
    assert resumed.best_test == whole_result.best_test


@pytest.mark.timeout(120)
def test_a_group_whose_members_all_diverge_is_an_error_naming_it(
    tmp_path, closed, small_data, small_model
):
    groups = [
        {"name": "calm", "population": 2},
        {
            "name": "wild",
            "population": 2,
            "space": {"learning_rate": {"prior": "log_uniform", "low": 1e6, "high": 1e8}},
        },
    ]
    config = popjax.SweepConfig(groups=groups, model={"name": "mlp", "hidden": [16]})
    with pytest.raises(PopjaxError) as error:
        popjax.run(config, data=small_data, out=tmp_path / "run", tensorboard=True, **SETTINGS)
    message = str(error.value)
    assert "every member of group 'wild' diverged" in message
    assert "learning_rate (1e+06..1e+08)" in message
    assert len(message.splitlines()) == 1
    assert sorted(closed) == ["bar", "checkpoints", "tensorboard"]
