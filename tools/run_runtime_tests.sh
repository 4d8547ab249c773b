#!/usr/bin/env bash
# The torch-free runtime's tests (tests_runtime/) in an environment with only
# its own packages: numpy, OpenCV (headless), ONNX Runtime, OpenVINO, pytest.
#
#   bash tools/run_runtime_tests.sh            # venv in .venv-runtime/
#   RUNTIME_VENV=/tmp/rt bash tools/run_runtime_tests.sh
#
# `pip install '.[runtime-openvino]'` is the documented torch-free install
# (setup.py's base requirements are numpy only; torch, mmcv, mmengine and
# mmdet come with the `train` extra); the script then checks that none of
# those can be imported before running the tests.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${RUNTIME_VENV:-$REPO_ROOT/.venv-runtime}"
PY="${PYTHON:-python3}"

if [[ ! -x "$VENV/bin/python" ]]; then
    "$PY" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip -q --disable-pip-version-check)
# pip rebuilds and reinstalls a local project on every call: the tests see
# this checkout's cdetr_runtime.
"${pip[@]}" install "$REPO_ROOT[runtime-openvino]" pytest

for module in torch mmcv mmengine mmdet; do
    if "$VENV/bin/python" -c "import $module" 2>/dev/null; then
        echo "[runtime-tests] $module is importable in $VENV: not a torch-free env" >&2
        exit 1
    fi
done
echo "[runtime-tests] torch, mmcv, mmengine, mmdet: not importable (as intended)"

# From outside the checkout, so the tests import the installed cdetr_runtime.
cd "$REPO_ROOT/tests_runtime"
exec "$VENV/bin/python" -m pytest "$REPO_ROOT/tests_runtime" -q \
    -p no:cacheprovider -c /dev/null --rootdir "$REPO_ROOT/tests_runtime" "$@"
