#!/usr/bin/env bash
# The demo, from a fresh checkout: set up .venv, then generate the synthetic
# shapes data, train Conditional DETR, evaluate (COCO AP) and draw detections.
#
#   bash tools/run_demo.sh                 # ~10 min of training on 2 CPU cores
#   bash tools/run_demo.sh --quick         # a tiny smoke run
#   bash tools/run_demo.sh --work-dir DIR --data-root DIR --max-epochs N
#
# Arguments go to tools/demo.py (see --help). Outputs: work_dirs/demo/.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO_ROOT/tools/setup_env.sh"

cd "$REPO_ROOT"
exec "$REPO_ROOT/.venv/bin/python" tools/demo.py "$@"
