#!/usr/bin/env bash
# The GPU check: the test suite and the benchmark on a GPU machine, with the jax, flax and optax
# installed there. At most about 5 minutes.
#
#   bash scripts/gpu_check.sh            # prints versions, test results and the benchmark table
#
# popjax's other dependencies (mnist1d, scikit-learn, tqdm, tomli-w, orbax-checkpoint, pytest)
# are installed from PyPI when missing, or from ./wheelhouse when the machine has no network
# (fill it elsewhere with: pip download -d wheelhouse mnist1d scikit-learn tqdm tomli-w pytest).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

$PY - <<'PY'
import jax, flax, optax
print("jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__)
print("backend", jax.default_backend(), "devices", jax.devices())
PY

find_links=()
[ -d wheelhouse ] && find_links=(--no-index --find-links wheelhouse)
# --no-deps for popjax itself: keep the machine's jax, flax and optax exactly as they are.
$PY -m pip install --quiet "${find_links[@]}" mnist1d scikit-learn tqdm tomli-w pytest \
  orbax-checkpoint chex 2>&1 | tail -2
$PY -m pip install --quiet --no-deps --no-build-isolation -e . 2>&1 | tail -2

echo "=== tests ==="
# The notebook test needs a Jupyter kernel, which GPU images rarely carry.
timeout 150 $PY -m pytest -q -x --ignore=tests/test_notebook.py -p no:cacheprovider
echo "=== benchmark: width 256, float32 (target: 50x the step loop at 256 members) ==="
timeout 100 $PY scripts/bench.py --models mlp64 mlp256 --populations 1 32 256 --repeats 2 \
  --out gpu_bench_f32.json
echo "=== benchmark: width 1024, bfloat16 (target: 40% of the bfloat16 matmul rate) ==="
timeout 100 $PY scripts/bench.py --models mlp1024 cnn --populations 32 256 1024 --dtype bfloat16 \
  --repeats 2 --out gpu_bench_bf16.json
