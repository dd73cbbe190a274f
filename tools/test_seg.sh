#!/usr/bin/env bash
# Stage two: predict with a trained segmenter, write palette PNGs, score them with the evaluation tool.
# Usage: tools/test_seg.sh CHECKPOINT [--config CONFIG] [--tta] [--scales 1.0 0.75] [--crf] [--out DIR]
#                          [--gt voc:val] [--data-root DIR] [--cfg-options KEY=VALUE ...]
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$REPO_ROOT"  # configs name their data and shard paths relative to the repository root
export PYTHONUNBUFFERED=1
exec python -m segtrain.test "$@"
