"""A member's optimizer reads what its family needs and takes the documented default for what
the search space does not name, matching optax's own optimizers."""

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from popjax import PopjaxError, optim
from popjax.space import Fixed, LogUniform, SearchSpace, Uniform


def updates_of(optimizer, steps=5):
    """The parameters after ``steps`` updates on fixed pseudo-random gradients."""
    params = {"w": jnp.linspace(-1.0, 1.0, 6), "b": jnp.ones(2)}
    state = optimizer.init(params)
    for i in range(steps):
        grads = jax.tree.map(lambda p: jnp.sin(p * (i + 1.0)) + 0.1 * i, params)
        updates, state = optimizer.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params


def test_adam_takes_defaults_for_what_the_space_lacks():
    mine = optim.member_optimizer({"learning_rate": 0.01, "b1": 0.8}, family="adam")
    theirs = optax.adam(0.01, b1=0.8, b2=0.999, eps=1e-8)
    for a, b in zip(jax.tree.leaves(updates_of(mine)), jax.tree.leaves(updates_of(theirs))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_sgd_without_momentum_or_decay_is_plain_sgd():
    mine = optim.member_optimizer({"learning_rate": 0.1}, family="sgd")
    theirs = optax.sgd(0.1)
    for a, b in zip(jax.tree.leaves(updates_of(mine)), jax.tree.leaves(updates_of(theirs))):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_init_state_fits_the_optimizer_of_a_partial_space():
    hparams = {"learning_rate": jnp.float32(0.01)}
    params = {"w": jnp.zeros(3)}
    state = optim.init_state(params, hparams, family="adam")
    optimizer = optim.member_optimizer(hparams, family="adam")
    expected = jax.tree.structure(optimizer.init(params))
    assert jax.tree.structure(state) == expected


def test_a_missing_learning_rate_or_unknown_family_is_one_line():
    with pytest.raises(PopjaxError, match="reads learning_rate") as error:
        optim.member_optimizer({"momentum": 0.9})
    assert "\n" not in str(error.value)
    with pytest.raises(PopjaxError, match="unknown optimizer 'lino': did you mean 'lion'"):
        optim.member_optimizer({"learning_rate": 0.1}, family="lino")


def test_every_family_default_is_documented_in_the_guide():
    from test_readme import TASKS_PAGE

    text = TASKS_PAGE.read_text()
    for family, reads in optim.FAMILY_HPARAMS.items():
        row = next(line for line in text.splitlines() if line.startswith(f"| `{family}`"))
        for name, default in reads.items():
            assert f"`{name}`" in row, (family, name)
            if default is not None:
                assert f"{default:g}" in row, (family, name, default)


# Three families of optax with per-member values of their numeric arguments: each member's
# updates are optax's own optimizer built with that member's values.
FAMILY_VALUES = {
    "lion": {
        "learning_rate": [1e-3, 3e-3, 1e-2],
        "b1": [0.8, 0.9, 0.95],
        "weight_decay": [0.0, 0.1, 0.01],
    },
    "adamw": {
        "learning_rate": [1e-3, 1e-2, 3e-2],
        "b2": [0.9, 0.99, 0.999],
        "eps": [1e-8, 1e-6, 1e-3],
    },
    "adafactor": {
        "learning_rate": [0.1, 0.03, 0.01],
        "decay_rate": [0.5, 0.8, 0.9],
        "momentum": [0.0, 0.5, 0.9],
    },
}
MATRIX_PARAMS = {"w": jnp.linspace(-1.0, 1.0, 6 * 4).reshape(6, 4), "b": jnp.ones(4)}


def vmapped_updates(family, hparams, steps=3, traces=None):
    """``updates_of`` for every member at once, one jitted call whose trace count is kept."""

    def run(member_hparams):
        if traces is not None:
            traces.append(1)
        params = MATRIX_PARAMS
        state = optim.init_state(params, member_hparams, family)
        tx = optim.member_optimizer(member_hparams, family=family)
        for i in range(steps):
            grads = jax.tree.map(lambda p: jnp.sin(p * (i + 1.0)) + 0.1 * i, params)
            updates, state = tx.update(grads, state, params)
            params = optax.apply_updates(params, updates)
        return params

    return jax.jit(jax.vmap(run))


def plain_updates(optimizer, steps=3):
    """``updates_of`` for a plain optax optimizer, jitted (optax's eager dispatch is slow)."""

    def run():
        params = MATRIX_PARAMS
        state = optimizer.init(params)
        for i in range(steps):
            grads = jax.tree.map(lambda p: jnp.sin(p * (i + 1.0)) + 0.1 * i, params)
            updates, state = optimizer.update(grads, state, params)
            params = optax.apply_updates(params, updates)
        return params

    return jax.jit(run)()


@pytest.mark.parametrize("family", sorted(FAMILY_VALUES))
def test_each_member_is_optax_own_optimizer_with_its_values_compiled_once(family):
    values = FAMILY_VALUES[family]
    traces = []
    run = vmapped_updates(family, None, traces=traces)
    hparams = {name: jnp.asarray(v, jnp.float32) for name, v in values.items()}
    mine = run(hparams)
    for member in range(3):
        theirs = plain_updates(getattr(optax, family)(**{n: v[member] for n, v in values.items()}))
        for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(theirs)):
            np.testing.assert_allclose(a[member], b, rtol=1e-5, atol=1e-6)
    # Other values, as PBT writes them: the same compiled step, other results.
    other = run({name: v[::-1] for name, v in hparams.items()})
    assert len(traces) == 1
    assert not np.allclose(other["w"][0], mine["w"][0])


def make_opt(learning_rate, decay: float = 0.9, nesterov: bool = False, steps: int = 1):
    """A user's factory: ``decay`` is read per member, the flag and the count are fixed."""
    return optax.chain(*[optax.trace(decay, nesterov)] * steps, optax.scale(-learning_rate))


def test_a_factory_from_python_or_an_import_path_reads_its_numbers_per_member(
    tmp_path, monkeypatch
):
    (tmp_path / "my_optimizers.py").write_text(
        "import optax\n\n"
        "def make_opt(learning_rate, decay: float = 0.9, nesterov: bool = False):\n"
        "    return optax.chain(optax.trace(decay, nesterov), optax.scale(-learning_rate))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    family = optim.resolve_family(make_opt)
    assert family.reads == {"learning_rate": optim.REQUIRED, "decay": 0.9}
    assert family.static == ("nesterov", "steps")
    hparams = {"learning_rate": jnp.array([0.1, 0.01]), "decay": jnp.array([0.5, 0.9])}
    for spec in (make_opt, {"name": make_opt, "nesterov": True}, "my_optimizers:make_opt"):
        mine = vmapped_updates(spec, None)(hparams)
        nesterov = isinstance(spec, dict)
        for member in range(2):
            theirs = plain_updates(
                make_opt(
                    float(hparams["learning_rate"][member]),
                    float(hparams["decay"][member]),
                    nesterov,
                )
            )
            for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(theirs)):
                np.testing.assert_allclose(a[member], b, rtol=1e-6)


def test_fixed_arguments_shape_the_state_and_are_not_read_per_member():
    # Adafactor keeps a row and a column statistic for a matrix it factors, else a whole one.
    factored = optim.init_state(
        MATRIX_PARAMS, {"learning_rate": 0.1}, {"name": "adafactor", "min_dim_size_to_factor": 2}
    )
    whole = optim.init_state(MATRIX_PARAMS, {"learning_rate": 0.1}, "optax.adafactor")
    shapes = lambda state: {leaf.shape for leaf in jax.tree.leaves(state)}  # noqa: E731
    assert (6,) in shapes(factored) and (6,) not in shapes(whole)
    fixed = optim.resolve_family({"name": "lion", "b1": 0.5})
    assert "b1" not in fixed.reads and fixed.fixed == {"b1": 0.5}


def one_line_error(call, match):
    with pytest.raises(PopjaxError, match=match) as error:
        call()
    assert "\n" not in str(error.value)


def test_optax_errors_are_one_line_and_name_what_exists():
    hp = {"learning_rate": 0.1}
    one_line_error(lambda: optim.resolve_family("adafactr"), "did you mean 'adafactor'.*lion")
    one_line_error(
        lambda: optim.resolve_family({"name": "adafactor", "factor": False}),
        "adafactor takes no argument 'factor': did you mean 'factored'",
    )
    one_line_error(lambda: optim.resolve_family({"factored": False}), "needs its name")
    one_line_error(lambda: optim.resolve_family(3), "optimizer must be a name")
    one_line_error(lambda: optim.resolve_family("no_such_module:f"), "cannot import optimizer")
    one_line_error(
        lambda: optim.member_optimizer({"b1": 0.9}, family="lion"), "reads learning_rate"
    )
    one_line_error(lambda: optim.resolve_family({"name": "adam", "b1": 0.9}), "optax.adam")

    def branching(learning_rate, threshold: float = 1.0):
        if threshold > 0.5:  # Python control flow on a value cannot vary per member
            return optax.sgd(learning_rate)
        return optax.adam(learning_rate)

    traced = jax.vmap(lambda t: optim.member_optimizer({**hp, "threshold": t}, family=branching))
    one_line_error(lambda: traced(jnp.ones(2)), "cannot differ per member: fix it")


def test_a_built_in_space_holds_what_the_optax_family_reads():
    space = SearchSpace({"b1": Uniform(0.8, 0.95)}, optimizer="lion")
    # Required: the learning rate (a sign optimizer's smaller prior) and the weight decay
    # lion takes; b1 because the space names it; b2 keeps lion's default.
    assert set(space.priors) == {"learning_rate", "weight_decay", "dropout", "b1"}
    assert space.priors["learning_rate"] == LogUniform(1e-5, 1e-3)
    adafactor = SearchSpace(optimizer={"name": "adafactor", "factored": False})
    assert "weight_decay" not in adafactor.priors  # adafactor has weight_decay_rate instead
    again = SearchSpace.from_dict(adafactor.to_dict())
    assert again.optimizer == {"name": "adafactor", "factored": False}
    assert again.priors == adafactor.priors
    # A group changing the optimizer drops the old one's own hyperparameters.
    assert "b1" not in space.updated({"optimizer": "adamw"}).priors


def test_a_built_in_space_refuses_what_the_family_does_not_read_in_one_line():
    def refused(match, *args, **kwargs):
        one_line_error(lambda: SearchSpace(*args, **kwargs), match)

    refused(
        "unknown hyperparameter 'b3'.*known: learning_rate", {"b3": Fixed(0.9)}, optimizer="lion"
    )
    refused("did you mean 'lion'", optimizer="lino")
    refused(
        "decay_rate is both a parameter of the adafactor optimizer and of the schedule",
        {"decay_rate": LogUniform(0.1, 0.9)},
        schedule="warmup_exponential",
        optimizer="adafactor",
    )


@pytest.mark.slow
def test_a_sweep_with_an_optax_optimizer_trains_and_records_it(tmp_path, tiny_run):
    import tomllib

    optimizer = {"name": "adafactor", "min_dim_size_to_factor": 2}
    space = {
        "optimizer": optimizer,
        "learning_rate": {"prior": "log_uniform", "low": 0.01, "high": 0.1},
        "momentum": {"prior": "uniform", "low": 0.0, "high": 0.9},
    }
    run = tiny_run(population=2, steps=10, interval=5, space=space, out=tmp_path / "run")
    assert {"learning_rate", "momentum", "decay_rate"} - set(run.best_hparams) == {"decay_rate"}
    written = tomllib.loads((tmp_path / "run" / "config.toml").read_text())
    assert written["space"]["optimizer"] == optimizer


@pytest.mark.slow
def test_a_pbt_copy_carries_the_optax_optimizer_state():
    from popjax.data import Dataset
    from popjax.mesh import population_mesh
    from popjax.nn import MLP
    from popjax.pbt import copy_members
    from popjax.population import select

    from conftest import classifier, members, segment_of, tree_equal

    family = {"name": "adafactor", "min_dim_size_to_factor": 2}
    x, y = np.linspace(-1, 1, 8 * 5, dtype=np.float32).reshape(8, 5), np.arange(8) % 3
    data = Dataset(x, y, x, y, x, y)
    task = classifier(data, MLP(hidden=(8,), num_classes=3), batch_size=4, optimizer=family)
    space = SearchSpace({"momentum": Uniform(0.0, 0.9)}, optimizer=family)
    # Made and trained in one compiled call: popjax's eager init compiles op by op.
    trained = jax.jit(lambda hparams: segment_of(task, 2)(members(task, hparams))[0])
    population = trained(space.sample(jax.random.key(0), 3))
    source, rank = jnp.array([2, 1, 2]), jnp.array([0, 1, 2])  # member 0 copies member 2
    copied = copy_members(population, source, rank, population_mesh(jax.devices()[:1]))
    moments = select(copied, 0).state["opt_state"]
    assert tree_equal(moments, select(population, 2).state["opt_state"])
    assert not tree_equal(moments, select(population, 0).state["opt_state"])
    assert float(select(copied, 0).hparams["momentum"]) == float(population.hparams["momentum"][2])


DOCS = Path(__file__).parent.parent / "docs" / "optimizers.md"


def test_the_docs_table_is_what_the_code_reads():
    text = DOCS.read_text()
    marker = re.search(
        r"<!-- optimizer table: popjax\.optim\.optimizer_table\(\), optax (\S+) -->", text
    )
    table = text[marker.end() : text.index("<!-- end of optimizer table -->")].strip()
    names = [re.match(r"\| `([^`]+)`", row).group(1) for row in table.splitlines()[2:]]
    if marker.group(1) == optax.__version__:
        assert table == optim.optimizer_table(), "regenerate the table: optim.optimizer_table()"
    else:  # another optax: popjax's own rows hold, and every optimizer listed still exists
        assert table.splitlines()[:4] == optim.optimizer_table(names[:2]).splitlines()
        for name in names:
            optim.resolve_family(name)


def test_the_docs_factory_reads_what_the_page_says():
    block = DOCS.read_text().split("# my_optimizers.py\n")[1].split("```")[0]
    scope = {}
    exec(block, scope)
    family = optim.resolve_family({"name": scope["clipped_adamw"], "nesterov": True})
    assert list(family.reads) == ["learning_rate", "clip", "weight_decay"]
    assert family.fixed == {"nesterov": True}
    hparams = {"learning_rate": jnp.array([0.1, 0.01]), "clip": jnp.array([0.5, 2.0])}
    vmapped_updates(family, None)(hparams)  # traces with per-member values
