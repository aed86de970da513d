"""Where a training step's time goes: the real step, with one part taken out at a time.

The population's training segment (``--steps`` vmapped steps of ``--population`` members, as a
round runs them) is timed as popjax builds it, then again with one part replaced by the
cheapest thing that keeps the program's shapes:

* dropout: the masks' random bits and their use (the layer returns its input);
* sampling: each member's batch drawn from the training split (a fixed batch instead);
* optimizer: the member's optimizer with its traced hyperparameters (a bare ``p - lr * g``);
* matmuls: what is left when all three are out, i.e. the forward and backward passes.

A part's share is the time its removal saves, over the whole step's time. Evaluation is timed
apart, as one validation of every member, and given as a share of a round of ``--steps`` steps
plus that validation. XLA's own FLOP count of the step and the dense matmul rate of the device
put the step against the hardware. Each figure is the fastest of ``--repeats`` runs; the variants
are timed in turn, round after round, so load on a shared machine falls on each alike.

Run:
    python scripts/profile_step.py                            # MLP-256, 32 members, one device
    python scripts/profile_step.py --model mlp1024 --population 32
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import optax

import popjax.nn
import popjax.tasks.supervised as supervised
from popjax import optim
from popjax.data import mnist1d
from popjax.nn import CNN1D, MLP
from popjax.population import init_population
from popjax.space import SearchSpace
from popjax.train import make_evaluate, make_segment


def build(name: str, dtype: str):
    if name == "cnn":
        return CNN1D(dtype=dtype)
    width = int(name.removeprefix("mlp"))
    return MLP(hidden=(width, width), dtype=dtype)


def fixed_batch(key, train_split, batch_size):
    return train_split["x"][:batch_size], train_split["y"][:batch_size]


def bare_sgd(hparams, learning_rate=None, family="sgd"):
    rate = hparams["learning_rate"] if learning_rate is None else learning_rate
    return optax.GradientTransformation(
        lambda params: optax.EmptyState(),
        lambda grads, state, params=None: (jax.tree.map(lambda g: -rate * g, grads), state),
    )


# Each variant: the module attributes it replaces while its program is traced.
VARIANTS = {
    "step": {},
    "no dropout": {(popjax.nn, "dropout"): lambda x, rate, key: x},
    "no sampling": {(supervised, "sample_uniform"): fixed_batch},
    "no optimizer": {(optim, "member_optimizer"): bare_sgd},
}
VARIANTS["matmuls only"] = {k: v for d in list(VARIANTS.values()) for k, v in d.items()}


def compiled_segment(task, population, replaced, steps):
    saved = {target: getattr(*target) for target in replaced}
    for (module, name), value in replaced.items():
        setattr(module, name, value)
    try:
        segment = jax.jit(make_segment(task, steps))
        return segment.lower(population, task.data.train).compile()
    finally:
        for (module, name), value in saved.items():
            setattr(module, name, value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="mlp256", choices=("mlp64", "mlp256", "mlp1024", "cnn"))
    parser.add_argument("--population", type=int, default=32)
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--dropout", type=float, default=0.1, help="every member's rate")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()

    dataset = mnist1d()
    task = supervised.classification(
        build(options.model, options.dtype), dataset, batch_size=options.batch_size
    )
    task = task._replace(data=jax.device_put(task.data))
    population = init_population(
        jax.random.PRNGKey(0), task, SearchSpace(), options.population, task.data.train
    )
    hparams = dict(population.hparams)
    hparams["dropout"] = jnp.full_like(hparams["dropout"], options.dropout)
    population = population._replace(hparams=hparams)

    programs = {
        name: compiled_segment(task, population, replaced, options.steps)
        for name, replaced in VARIANTS.items()
    }
    evaluate = jax.jit(lambda p, split: make_evaluate(task)(p, split)[1])
    evaluate = evaluate.lower(population, task.data.val).compile()

    def timed(call):
        start = time.perf_counter()
        jax.block_until_ready(call())
        return time.perf_counter() - start

    seconds = {name: [] for name in [*programs, "validation"]}
    for program in programs.values():  # the first call allocates
        jax.block_until_ready(program(population, task.data.train))
    for _ in range(options.repeats):
        for name, program in programs.items():
            seconds[name].append(timed(lambda p=program: p(population, task.data.train)))
        seconds["validation"].append(timed(lambda: evaluate(population, task.data.val)))
    best = {name: min(values) for name, values in seconds.items()}

    # XLA counts a loop's body once, so the FLOPs come from one vmapped step outside a loop.
    one_step = jax.jit(jax.vmap(task.train, in_axes=(0, 0, 0, 0, None)))
    analysis = (
        one_step.lower(
            population.state, population.hparams, population.rng, population.step, task.data.train
        )
        .compile()
        .cost_analysis()
    )
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    flops_per_member_step = analysis["flops"] / options.population
    n = 2048
    a = jnp.ones((n, n), options.dtype)
    matmul = jax.jit(lambda x: x @ x).lower(a).compile()
    jax.block_until_ready(matmul(a))
    matmul_rate = 2 * n**3 / min(timed(lambda: matmul(a)) for _ in range(5))

    work = options.population * options.steps
    step = best["step"]
    print(
        f"{options.model}, {options.population} members x {options.steps} steps, batch "
        f"{options.batch_size}, dropout {options.dropout}, {options.dtype}, "
        f"{jax.device_count()} device(s) ({jax.devices()[0].device_kind})"
    )
    print(f"whole step: {work / step:,.0f} member-steps/s")
    for name in ("no dropout", "no sampling", "no optimizer"):
        part = name.removeprefix("no ")
        print(
            f"  {part:<10} {(step - best[name]) / step:6.1%} of the step "
            f"({work / best[name]:,.0f} member-steps/s without it)"
        )
    print(
        f"  {'matmuls':<10} {best['matmuls only'] / step:6.1%} of the step "
        f"(forward and backward alone: {work / best['matmuls only']:,.0f} member-steps/s)"
    )
    round_seconds = step + best["validation"]
    print(f"validation: {best['validation'] / round_seconds:.1%} of a round of {options.steps}")
    print(
        f"XLA's count: {flops_per_member_step / 1e6:.1f} MFLOP a member-step; at the step's rate "
        f"{flops_per_member_step * work / step / 1e9:.0f} GFLOP/s, "
        f"{flops_per_member_step * work / step / matmul_rate:.0%} of a {n}x{n} matmul's "
        f"{matmul_rate / 1e9:.0f} GFLOP/s"
    )


if __name__ == "__main__":
    main()
