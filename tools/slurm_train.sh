#!/usr/bin/env bash
# Train on a Slurm cluster: srun starts the ranks, mmengine's slurm launcher reads rank, world
# size and master address from the SLURM_* variables (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID,
# first host of SLURM_NODELIST through scontrol).
#
#   [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS="..."] \
#   bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args...]
#
# GPU partitions: one rank per GPU, GPUS ranks in all, GPUS_PER_NODE (default min(GPUS, 8)) per
# node, requested with --gres=gpu:GPUS_PER_NODE. GPUS > GPUS_PER_NODE spans several nodes, e.g.
# 16 ranks on 2 nodes of 8 GPUs: GPUS=16 bash tools/slurm_train.sh PARTITION JOB CONFIG WORK_DIR
# CPU partitions: GPUS=0 requests no GPU; TASKS ranks (default 1), CPUS_PER_TASK cores each
# (default 1 without GPUs), TASKS_PER_NODE per node if given (else Slurm places them), and the
# config's dist_cfg backend should be gloo (the offline configs say so):
#   GPUS=0 TASKS=4 TASKS_PER_NODE=2 CPUS_PER_TASK=8 bash tools/slurm_train.sh cpu JOB CONFIG WD
# Inside an sbatch / salloc allocation the same command runs as a step of that allocation.
# Multi-node runs need the checkout and WORK_DIR on a file system all nodes share; ranks meet at
# the first node of the job on PORT (MASTER_ADDR, if set in the environment, overrides the host).
# PYTHON selects the interpreter (default: python on PATH); PORT the master port (default 29500,
# or MASTER_PORT); OMP_NUM_THREADS defaults to CPUS_PER_TASK.
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: [GPUS=N | GPUS=0 TASKS=N] $0 PARTITION JOB_NAME CONFIG WORK_DIR [train.py args...]" >&2
  exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4

is_count() {  # a non-negative decimal integer
  [[ $1 =~ ^(0|[1-9][0-9]*)$ ]]
}
die() {
  echo "$0: $*" >&2
  exit 2
}

GPUS=${GPUS:-8}
is_count "$GPUS" || die "GPUS must be a non-negative integer, got '$GPUS'"
if (( GPUS > 0 )); then
  GPUS_PER_NODE=${GPUS_PER_NODE:-$(( GPUS < 8 ? GPUS : 8 ))}
  is_count "$GPUS_PER_NODE" && (( GPUS_PER_NODE > 0 )) \
    || die "GPUS_PER_NODE must be a positive integer, got '$GPUS_PER_NODE'"
  TASKS=${TASKS:-$GPUS}
  [ "$TASKS" = "$GPUS" ] || die "one rank per GPU: TASKS ($TASKS) must equal GPUS ($GPUS); GPUS=0 runs TASKS CPU ranks"
  CPUS_PER_TASK=${CPUS_PER_TASK:-5}
  RESOURCES=(--gres=gpu:"$GPUS_PER_NODE" --ntasks="$GPUS" --ntasks-per-node="$GPUS_PER_NODE")
else
  TASKS=${TASKS:-1}
  is_count "$TASKS" && (( TASKS > 0 )) || die "TASKS must be a positive integer, got '$TASKS'"
  CPUS_PER_TASK=${CPUS_PER_TASK:-1}
  RESOURCES=(--ntasks="$TASKS")
  if [ -n "${TASKS_PER_NODE:-}" ]; then
    is_count "$TASKS_PER_NODE" && (( TASKS_PER_NODE > 0 )) \
      || die "TASKS_PER_NODE must be a positive integer, got '$TASKS_PER_NODE'"
    RESOURCES+=(--ntasks-per-node="$TASKS_PER_NODE")
  fi
fi
is_count "$CPUS_PER_TASK" && (( CPUS_PER_TASK > 0 )) \
  || die "CPUS_PER_TASK must be a positive integer, got '$CPUS_PER_TASK'"
SRUN_ARGS=${SRUN_ARGS:-""}
export MASTER_PORT=${PORT:-${MASTER_PORT:-29500}}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$CPUS_PER_TASK}
ROOT=$(cd "$(dirname "$0")/.." && pwd)  # absolute: the ranks may start on other nodes
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# SRUN_ARGS is split on spaces on purpose (several srun options in one variable).
# shellcheck disable=SC2086
exec srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    "${RESOURCES[@]}" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    $SRUN_ARGS \
    "${PYTHON:-python}" -u "$ROOT/tools/train.py" "$CONFIG" --work-dir="$WORK_DIR" \
    --launcher=slurm "${@:5}"
