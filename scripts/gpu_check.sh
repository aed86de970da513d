#!/usr/bin/env bash
# The GPU check, in at most 7 minutes on a GPU machine with no network: versions, the test suite,
# the start time, a step's profile and the benchmark, all on the machine's own jax, flax and
# optax. What popjax needs beyond that machine's packages comes as wheels in ./wheelhouse (fill
# it beforehand with network: bash scripts/gpu_wheels.sh).
#
#   bash scripts/gpu_check.sh        # figures to stdout; JSON files to $OUT (or ./gpu_check)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-gpu_check}
mkdir -p "$OUT"
started=$(date +%s)
elapsed() { echo "[$(( $(date +%s) - started )) s]"; }

$PY - <<'PY'
import jax, flax, optax
print("jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__)
print("backend", jax.default_backend(), "devices", jax.devices())
PY

# Only the wheels of packages the machine lacks, into a folder of their own: the machine's jax
# and everything else it has stay exactly as they are.
missing=$($PY - <<'PY'
import glob, importlib.metadata as metadata, re
for wheel in sorted(glob.glob("wheelhouse/*.whl")):
    name = re.split(r"-\d", wheel.split("/")[-1])[0]
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        print(wheel)
PY
)
if [ -n "$missing" ]; then
  $PY -m pip install --quiet --no-index --no-deps --target .gpu-site $missing 2>&1 | tail -2
fi
export PYTHONPATH="$PWD/.gpu-site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export POPJAX_CACHE_DIR="$PWD/.gpu-site/cache"
echo "installed from wheelhouse: $(echo $missing | wc -w) $(elapsed)"

echo "=== tests $(elapsed) ==="
# The notebook test needs a Jupyter kernel, which GPU images rarely carry. One test process on
# the one GPU: -o addopts drops pyproject's pytest-xdist options (the image has no xdist).
timeout 140 $PY -m pytest -q -x -o addopts= --ignore=tests/test_notebook.py -p no:cacheprovider \
  --durations=5 2>&1 | tail -25
echo "=== time to the first round, cold and warm cache $(elapsed) ==="
timeout 60 $PY scripts/start_time.py --tries 1 -- --population 32 --interval 250 \
  2>&1 | tail -10
echo "=== a step's profile: MLP-1024, 256 members $(elapsed) ==="
timeout 30 $PY scripts/profile_step.py --model mlp1024 --population 256 --steps 50 --repeats 2 \
  2>&1 | tail -8
echo "=== benchmark, float32 and bfloat16 $(elapsed) ==="
timeout 45 $PY scripts/bench.py --models mlp256 mlp1024 --populations 32 256 1024 --repeats 2 \
  --max-seconds 10 --out "$OUT/bench_f32.json" 2>&1 | tail -12
timeout 30 $PY scripts/bench.py --models mlp1024 cnn --populations 256 1024 --dtype bfloat16 \
  --repeats 2 --max-seconds 10 --out "$OUT/bench_bf16.json" 2>&1 | tail -10
echo "=== PPO and SAC agents, discrete and continuous actions $(elapsed) ==="
timeout 90 $PY scripts/bench_rl.py --populations 1 8 32 128 \
  --repeats 2 --out "$OUT/bench_rl.json" 2>&1 | tail -10
echo "=== done $(elapsed) ==="
