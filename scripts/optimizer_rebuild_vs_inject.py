"""A member's optax optimizer rebuilt in the step from its hyperparameters (what popjax.optim
does) against optax.inject_hyperparams with the values written into its state each step:
compile time, run time and results of a vmapped, scanned step (8 members, MLP 40-256-256-10).

    python scripts/optimizer_rebuild_vs_inject.py [lion adamw adafactor]
"""

import sys
import time

import jax
import jax.numpy as jnp
import optax

P, STEPS = 8, 200
sizes = [(40, 256), (256, 256), (256, 10)]


def params_of(key):
    ks = jax.random.split(key, len(sizes))
    return [{"w": jax.random.normal(k, s) * 0.05, "b": jnp.zeros(s[1])} for k, s in zip(ks, sizes)]


def loss(p, x, y):
    h = x
    for i, layer in enumerate(p):
        h = h @ layer["w"] + layer["b"]
        if i < len(p) - 1:
            h = jax.nn.relu(h)
    return optax.softmax_cross_entropy_with_integer_labels(h, y).mean()


x = jax.random.normal(jax.random.key(1), (128, 40))
y = jax.random.randint(jax.random.key(2), (128,), 0, 10)

FAM = {
    "lion": (optax.lion, dict(learning_rate=1e-4, b1=0.9, b2=0.99, weight_decay=1e-3)),
    "adamw": (optax.adamw, dict(learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4)),
    "adafactor": (
        optax.adafactor,
        dict(learning_rate=1e-2, decay_rate=0.8, clipping_threshold=1.0, eps=1e-30),
    ),
}


def run(name, mode):
    fac, hp0 = FAM[name]
    hps = {k: jnp.full((P,), v, jnp.float32) * jnp.linspace(0.5, 1.5, P) for k, v in hp0.items()}
    params = jax.vmap(params_of)(jax.random.split(jax.random.key(0), P))
    if mode == "rebuild":
        init = lambda p, hp: fac(**hp).init(p)

        def upd(g, s, p, hp):
            return fac(**hp).update(g, s, p)
    else:
        # inject_hyperparams would trace Adafactor's integer sizes too: they must stay static.
        static = ("min_dim_size_to_factor", "decay_offset") if fac is optax.adafactor else ()
        tx = optax.inject_hyperparams(fac, static_args=static)(**hp0)

        def init(p, hp):
            s = tx.init(p)
            return s._replace(hyperparams={**s.hyperparams, **hp})

        def upd(g, s, p, hp):
            s = s._replace(hyperparams={**s.hyperparams, **hp})  # one home: Population.hparams
            return tx.update(g, s, p)

    state = jax.vmap(init)(params, hps)

    def member_step(p, s, hp):
        g = jax.grad(loss)(p, x, y)
        u, s = upd(g, s, p, hp)
        return optax.apply_updates(p, u), s

    def many(p, s, hp):
        def body(c, _):
            return jax.vmap(member_step)(*c, hp), None

        return jax.lax.scan(body, (p, s), None, STEPS)[0]

    f = jax.jit(many)
    t = time.perf_counter()
    c = f.lower(params, state, hps).compile()
    tc = time.perf_counter() - t
    out = c(params, state, hps)
    jax.block_until_ready(out)
    t = time.perf_counter()
    for _ in range(3):
        out = c(params, state, hps)
        jax.block_until_ready(out)
    tr = (time.perf_counter() - t) / 3
    nbytes = sum(a.nbytes for a in jax.tree.leaves(state))
    return tc, tr, nbytes, out


for name in sys.argv[1:] or FAM:
    res = {m: run(name, m) for m in ("rebuild", "inject")}
    diff = max(
        float(jnp.abs(a - b).max())
        for a, b in zip(jax.tree.leaves(res["rebuild"][3][0]), jax.tree.leaves(res["inject"][3][0]))
    )
    for m, (tc, tr, nb, _) in res.items():
        print(
            f"{name:9s} {m:7s} compile {tc:5.2f}s  {STEPS} steps {tr:5.2f}s "
            f" opt state {nb / 1e6:.2f} MB"
        )
    print(f"{name:9s} max |params rebuild - inject| {diff:.2e}")
