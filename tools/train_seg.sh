#!/usr/bin/env bash
# Stage two: train an MMSegmentation model on stage-one shards (mmengine Runner).
# Usage: tools/train_seg.sh [CONFIG] [--shards DIR] [--gpus N] [--resume] [--work-dir DIR] [--no-pretrained]
#                           [--cfg-options KEY=VALUE ...]
# CONFIG defaults to segtrain/configs/deeplabv3plus_r101-d8_4xb4-20k_voc12aug-pseudo-512x512.py. --gpus 0 (or no
# GPU) trains on the CPU, 1 on one GPU, N > 1 with torchrun on N GPUs (mmengine's 'pytorch' launcher, SyncBN).
# Relative paths given (CONFIG, --shards, --work-dir, --cfg-options ...data_root/shards_dir/work_dir/load_from=)
# mean the caller's working directory; the defaults of the shipped configs (data/, outputs/, work_dirs/) mean the
# checkout, where stage one's defaults write.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
export PYTHONUNBUFFERED=1
CONFIG=segtrain/configs/deeplabv3plus_r101-d8_4xb4-20k_voc12aug-pseudo-512x512.py
if [ $# -gt 0 ] && [[ "$1" != --* ]]; then CONFIG="$(caller_path "$1")"; shift; fi
GPUS=1
ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --gpus) GPUS="${2-}"; shift $(( $# > 1 ? 2 : 1 )) ;;
        --gpus=*) GPUS="${1#*=}"; shift ;;
        --shards|--work-dir) ARGS+=("$1" "$(caller_path "${2-}")"); shift $(( $# > 1 ? 2 : 1 )) ;;
        --shards=*|--work-dir=*) ARGS+=("${1%%=*}=$(caller_path "${1#*=}")"); shift ;;
        *data_root=*|*shards_dir=*|*work_dir=*|*load_from=*) ARGS+=("${1%%=*}=$(caller_path "${1#*=}")"); shift ;;
        *) ARGS+=("$1"); shift ;;
    esac
done
if ! [[ "$GPUS" =~ ^[0-9]+$ ]]; then
    echo "train_seg.sh: error: --gpus $GPUS: must be an integer >= 0 (0: CPU)" >&2
    exit 2
fi
cd "$REPO_ROOT"  # the shipped configs name their default data and shard paths relative to the repository root
if [ "$GPUS" -gt 1 ]; then
    exec python -m pseudolabel.launcher --nproc_per_node="$GPUS" --master_port="${PORT:-29500}" -m segtrain.train "$CONFIG" \
        --launcher pytorch "${ARGS[@]}"
fi
[ "$GPUS" -eq 0 ] && export CUDA_VISIBLE_DEVICES=""
exec python -m segtrain.train "$CONFIG" "${ARGS[@]}"
