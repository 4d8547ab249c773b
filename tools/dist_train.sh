#!/usr/bin/env bash
# Distributed training with torchrun: GPUS processes on each of NNODES nodes.
#
#   bash tools/dist_train.sh CONFIG GPUS [train.py args...]
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 bash tools/dist_train.sh CONFIG 8
set -euo pipefail

CONFIG=$1
GPUS=$2
exec bash "$(dirname "$0")/dist_run.sh" "$GPUS" train.py "$CONFIG" --launcher pytorch "${@:3}"
