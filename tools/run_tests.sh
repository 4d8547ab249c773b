#!/usr/bin/env bash
# Set up .venv if needed (tools/setup_env.sh), then run the test suite.
#
#   bash tools/run_tests.sh            # default suite: tests not marked slow
#   bash tools/run_tests.sh -m slow    # only the slow tests
#   bash tools/run_tests.sh -k matcher # any other pytest arguments
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO_ROOT/tools/setup_env.sh"

cd "$REPO_ROOT"
# As if activated: tests that start torchrun or python find the venv's.
export VIRTUAL_ENV="$REPO_ROOT/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
# The kernels this run computes with (set ONEDNN_MAX_CPU_ISA=AVX2 and
# ATEN_CPU_CAPABILITY=avx2 on an AMX machine to compute like an AVX2 one).
"$VIRTUAL_ENV/bin/python" -c 'import torch; print("[run_tests] torch", torch.__version__, "CPU capability:", torch.backends.cpu.get_cpu_capability())'
echo "[run_tests] ONEDNN_MAX_CPU_ISA=${ONEDNN_MAX_CPU_ISA:-(unset)} ATEN_CPU_CAPABILITY=${ATEN_CPU_CAPABILITY:-(unset)}"
echo "[run_tests] python -m pytest tests -q $*"
exec "$VIRTUAL_ENV/bin/python" -m pytest tests -q "$@"
