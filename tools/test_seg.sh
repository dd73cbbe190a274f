#!/usr/bin/env bash
# Stage two: predict with a trained segmenter, write palette PNGs, score them with the evaluation tool.
# Usage: tools/test_seg.sh CHECKPOINT [--config CONFIG] [--tta] [--scales 1.0 0.75] [--crf] [--out DIR]
#                          [--gt voc:val] [--data-root DIR] [--cfg-options KEY=VALUE ...]
# Relative paths given (CHECKPOINT, first, --config, --out, --data-root, a --gt folder, --cfg-options ...data_root=) mean the
# caller's working directory; the defaults of the shipped configs (data/) mean the checkout.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
export PYTHONUNBUFFERED=1
ARGS=()
if [ $# -gt 0 ] && [[ "$1" != -* ]]; then ARGS+=("$(caller_path "$1")"); shift; fi   # CHECKPOINT
while [ $# -gt 0 ]; do
    case "$1" in
        --config|--out|--data-root) ARGS+=("$1" "$(caller_path "${2-}")"); shift $(( $# > 1 ? 2 : 1 )) ;;
        --config=*|--out=*|--data-root=*) ARGS+=("${1%%=*}=$(caller_path "${1#*=}")"); shift ;;
        --gt) if [ -e "${2-}" ]; then ARGS+=("$1" "$(caller_path "$2")"); else ARGS+=("$1" "${2-}"); fi
              shift $(( $# > 1 ? 2 : 1 )) ;;
        *data_root=*) ARGS+=("${1%%=*}=$(caller_path "${1#*=}")"); shift ;;
        *) ARGS+=("$1"); shift ;;
    esac
done
cd "$REPO_ROOT"  # the shipped configs name their default data paths relative to the repository root
exec python -m segtrain.test "${ARGS[@]}"
