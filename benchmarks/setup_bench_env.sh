#!/usr/bin/env bash
# Separate environment for the reference implementations compared in benchmarks/speed.py.
# benchmark-mi (the "Beyond Normal" package, module `bmi`) imports only with jax==0.4.30,
# so it is kept out of ibscope's own dependencies. ibscope itself comes from src/ via
# PYTHONPATH. Usage:
#   bash benchmarks/setup_bench_env.sh            # creates .bench-env/ (gitignored)
#   PYTHONPATH=src .bench-env/bin/python benchmarks/speed.py
#   OMP_NUM_THREADS=1 BN_THREADS=1 PYTHONPATH=src .bench-env/bin/python benchmarks/beyond_normal.py --suite bmi-hard
#   PYTHONPATH=src .bench-env/bin/python -m pytest -q --noconftest tests/test_beyond_normal_bmi.py  # bmi checks
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
CONSTRAINTS=${CONSTRAINTS:-constraints.txt}
"$PY" -m venv .bench-env
.bench-env/bin/pip install -q --upgrade pip
.bench-env/bin/pip install -q -c "$CONSTRAINTS" torch==2.13.0 numpy scipy scikit-learn numba pandas pyarrow pyyaml tqdm pytest \
    "jax==0.4.30" "jaxlib==0.4.30" benchmark-mi
.bench-env/bin/python -c "import bmi, sklearn, torch; print('bench env ok: bmi', getattr(bmi, '__version__', '?'))"
