#!/usr/bin/env bash
# torchrun a tool of this folder: GPUS processes on each of NNODES nodes.
# Used by dist_train.sh and dist_test.sh.
#
#   bash tools/dist_run.sh GPUS SCRIPT [SCRIPT args...]
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 PORT=29500 bash tools/dist_run.sh 8 train.py CONFIG
set -euo pipefail

GPUS=$1
SCRIPT=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
TOOLS_DIR="$(cd "$(dirname "$0")" && pwd)"

torchrun \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --master_port="$PORT" \
    --nproc_per_node="$GPUS" \
    "$TOOLS_DIR/$SCRIPT" \
    "${@:3}"
