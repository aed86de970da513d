#!/usr/bin/env bash
# Fills ./wheelhouse with what the GPU check needs beyond the GPU machine's own packages (it has
# jax, flax, optax, chex, orbax-checkpoint, scikit-learn, tqdm, matplotlib and pytest, no network,
# and Python 3.12): mnist1d, tomli-w, gymnax and what they import. Run here, with network:
#
#   bash scripts/gpu_wheels.sh            # then scripts/gpu_check.sh on the GPU machine
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
mkdir -p wheelhouse
# Pure-Python wheels, the versions this project is tested with; --no-deps: the list is whole.
$PY -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux2014_x86_64 -d wheelhouse \
  mnist1d==0.0.2.post1 tomli-w==1.2.0 six==1.17.0 gymnax==1.0.1 gymnasium==1.3.0 \
  cloudpickle==3.1.3 farama-notifications==0.0.6 seaborn==0.13.2 \
  requests==2.34.2 urllib3==2.8.0 idna==3.20 certifi==2026.10.19.post1 charset-normalizer==3.5.3
ls wheelhouse
du -sh wheelhouse
