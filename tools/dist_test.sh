#!/usr/bin/env bash
# Distributed testing with torchrun: GPUS processes on each of NNODES nodes.
#
#   bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args...]
set -euo pipefail

CONFIG=$1
CHECKPOINT=$2
GPUS=$3
exec bash "$(dirname "$0")/dist_run.sh" "$GPUS" test.py "$CONFIG" "$CHECKPOINT" \
    --launcher pytorch "${@:4}"
