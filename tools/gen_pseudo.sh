#!/usr/bin/env bash
# Stage one: pseudo labels -> HDF5 shards. `tools/gen_pseudo.sh --help` lists every option.
# Multi-GPU / multi-node: NPROC=<GPUs per node> [NNODES=.. NODE_RANK=.. MASTER_ADDR=.. MASTER_PORT=..] runs torchrun.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
if [ "${NPROC:-1}" -gt 1 ] || [ "${NNODES:-1}" -gt 1 ]; then
    exec python -m pseudolabel.launcher --nproc_per_node "${NPROC:-1}" --nnodes "${NNODES:-1}" --node_rank "${NODE_RANK:-0}" \
        --master_addr "${MASTER_ADDR:-127.0.0.1}" --master_port "${MASTER_PORT:-29511}" -m pseudolabel.generate "$@"
fi
exec python -m pseudolabel.generate "$@"
