#!/usr/bin/env bash
# The paper's ablations in one run: stage one under every row of a sweep, then the report. `tools/ablate.sh --help`.
# Multi-GPU / multi-node: NPROC=<GPUs per node> [NNODES=.. NODE_RANK=.. MASTER_ADDR=.. MASTER_PORT=..] runs torchrun.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
if [ "${NPROC:-1}" -gt 1 ] || [ "${NNODES:-1}" -gt 1 ]; then
    exec python -m pseudolabel.launcher --nproc_per_node "${NPROC:-1}" --nnodes "${NNODES:-1}" --node_rank "${NODE_RANK:-0}" \
        --master_addr "${MASTER_ADDR:-127.0.0.1}" --master_port "${MASTER_PORT:-29512}" -m pseudolabel.ablation.cli "$@"
fi
exec python -m pseudolabel.ablation.cli "$@"
