#!/usr/bin/env bash
# Distributed training with torchrun (torch.distributed.launch is deprecated).
#   bash tools/dist_train.sh CONFIG NPROC [train.py args...]
# NPROC processes on this machine: one per GPU, or, without GPUs, CPU ranks on the config's
# dist_cfg backend (gloo in the offline configs).
# Multi-node: run the same command on every node with NNODES, NODE_RANK (0 .. NNODES-1), and the
# address and port of node 0, e.g. on two nodes of 8 GPUs:
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 PORT=29500 bash tools/dist_train.sh CONFIG 8 ...  # node0
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=node0 PORT=29500 bash tools/dist_train.sh CONFIG 8 ...  # node1
# (on Slurm, tools/slurm_train.sh starts every rank from one command).
# PYTHON selects the interpreter (default: python on PATH).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: [NNODES=N NODE_RANK=I MASTER_ADDR=HOST PORT=P] $0 CONFIG NPROC [train.py args...]" >&2
  exit 2
fi
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHONPATH="$(cd "$(dirname "$0")/.." && pwd)${PYTHONPATH:+:$PYTHONPATH}" \
exec "${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" --master_port="$PORT" \
    "$(dirname "$0")/train.py" "$CONFIG" --launcher pytorch "${@:3}"
