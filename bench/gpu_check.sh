#!/usr/bin/env bash
# Stage one on an NVIDIA GPU, checked and measured in under six minutes: the CUDA tests, then
# bench/bench_stage_one.py on 256 synthetic VOC-sized images (1-3 classes each) with the real ViT-B/16 and SAM ViT-B
# architectures and random weights, at bf16 and at fp32 (batch size 8), and one table: images/s, ms per image by
# stage, peak GPU memory (also at batch sizes 1, 16 and 32), GPU busy fraction, label and localization-map agreement
# of bf16 with fp32. Every part is guarded: a failing part prints its error and the others still run.
#
# Run it from the repository root, with the machine's own python3 (PyTorch with CUDA, numpy, h5py, scipy,
# opencv-python(-headless), pillow, tqdm); no internet and no virtual environment are needed:
#   WHEELS=DIR bench/gpu_check.sh
# WHEELS holds wheels of the pure-Python packages such a machine may lack (installed into a temporary folder put
# first on PYTHONPATH, the system's site-packages untouched). Make the folder on any machine with internet:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d WHEELS open_clip_torch==3.3.0 segment-anything==1.0 ftfy==6.3.1 wcwidth zlib-ng==1.1.0 timm==1.0.31
# (--python-version: the GPU machine's Python.)
# Settings: OUT=DIR writes the table (gpu_check.txt), results.jsonl and the logs (*.log) there; IMAGES (256), BATCH (8),
# PYTHON (python3). A dry run of the script on a CPU, real architectures, 2 images: DEVICE=cpu IMAGES=2 (add TINY=1
# for tiny test models).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DEVICE="${DEVICE:-cuda}"
IMAGES="${IMAGES:-256}"
BATCH="${BATCH:-8}"
PY="${PYTHON:-python3}"
SLOW="${SLOW:-$([ "$DEVICE" = cuda ] && echo 1 || echo 8)}"  # time limits x SLOW (a CPU dry run is slow)
WORK="$(mktemp -d /tmp/gpu_check.XXXXXX)"
LOGS="${OUT:-$WORK}"
mkdir -p "$LOGS"
export CEP_SYSTEM_PYTHON=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TQDM_MININTERVAL=10 PYTHONDONTWRITEBYTECODE=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
TINY_FLAG=()
[ -n "${TINY:-}" ] && TINY_FLAG=(--tiny)
CHECK_START=$(date +%s)
STATUS=()

# part NAME SECONDS LOG COMMAND...: run a part with a time limit, its output into LOG, its last lines shown
part() {
    local name="$1" limit="$2" log="$3"
    shift 3
    local start rc before
    limit=$((limit * SLOW))
    start=$(date +%s)
    before=$(cat "$LOGS/$log" 2>/dev/null | wc -l)
    echo "=== $name (limit ${limit}s)"
    timeout --kill-after=10 "$limit" "$@" >>"$LOGS/$log" 2>&1
    rc=$?
    tail -n +"$((before + 1))" "$LOGS/$log" | tail -n 4 | cut -c1-240
    STATUS+=("$(printf '%-34s rc=%-4s %4ss' "$name" "$rc" "$(( $(date +%s) - start ))")")
    [ "$rc" = 124 ] && echo "!! $name ran past ${limit}s and was stopped"
    [ "$rc" != 0 ] && echo "!! $name failed (rc $rc); log: $LOGS/$log"
    return 0
}

part "environment" 60 env.log "$PY" -c '
import platform, sys, torch
print("python", platform.python_version(), sys.executable)
print("torch", torch.__version__, "CUDA", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("GPU", p.name, f"{p.total_memory / 2**30:.0f} GiB", "count", torch.cuda.device_count())
'

# pip into a folder of our own; without pip, a wheel is a zip archive that unpacks to the same files
install_wheels() {
    "$PY" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check --target "$SITE" \
        "$WHEELS"/*.whl && return 0
    echo "pip failed; unpacking the wheels instead"
    for wheel in "$WHEELS"/*.whl; do "$PY" -m zipfile -e "$wheel" "$SITE" || return 1; done
}
if [ -n "${WHEELS:-}" ]; then
    export SITE="$WORK/site" PY WHEELS
    export -f install_wheels
    part "install wheels from $WHEELS" 45 install.log bash -c install_wheels
    export PYTHONPATH="$SITE:$PYTHONPATH"
else
    echo "=== no WHEELS=DIR given: using the packages the interpreter already has"
fi
part "imports" 60 env.log "$PY" -c '
import importlib.metadata as m
import pseudolabel.generate, pseudolabel.pipeline, open_clip, segment_anything  # noqa: F401
import sys
missing = [p for p in ("mmengine", "mmcv", "mmseg", "pycocotools") if p in sys.modules]
print("stage one imported; versions:", {p: m.version(p) for p in ("torch", "open_clip_torch", "segment-anything",
      "h5py", "numpy", "ftfy", "timm")}, "| heavy modules loaded:", missing or "none")
'

part "CUDA tests" 90 tests.log "$PY" -m pytest -q -p no:cacheprovider -m cuda -rs \
    tests/test_cuda.py tests/test_sam_decoder.py tests/test_skipcam.py

SWEEP=()
[ "$DEVICE" = cuda ] && SWEEP=(--memory-sweep 1,16,32)
part "stage one, bf16, batch $BATCH" 130 bench-bf16.log "$PY" bench/bench_stage_one.py --device "$DEVICE" \
    --images "$IMAGES" --batch-size "$BATCH" --precision bf16 --mixed-sizes --max-seconds $((45 * SLOW)) --out "$WORK/bf16" \
    --json "$WORK/results.jsonl" ${SWEEP[@]+"${SWEEP[@]}"} ${TINY_FLAG[@]+"${TINY_FLAG[@]}"}
part "stage one, fp32, batch $BATCH" 90 bench-fp32.log "$PY" bench/bench_stage_one.py --device "$DEVICE" \
    --images "$IMAGES" --batch-size "$BATCH" --precision fp32 --mixed-sizes --max-seconds $((40 * SLOW)) --out "$WORK/fp32" \
    --data "$WORK/bf16/data" --agree-with "$WORK/bf16/shards" --json "$WORK/results.jsonl" ${TINY_FLAG[@]+"${TINY_FLAG[@]}"}

[ -f "$WORK/results.jsonl" ] && [ "$LOGS" != "$WORK" ] && cp "$WORK/results.jsonl" "$LOGS/"
{
    echo "bench/gpu_check.sh: $(date -u +%FT%TZ), device $DEVICE, $IMAGES images, batch $BATCH"
    if [ -f "$WORK/results.jsonl" ]; then
        timeout 30 "$PY" bench/bench_stage_one.py --report "$WORK/results.jsonl" 2>&1
    else
        echo "!! no benchmark results"
    fi
    grep -E "passed|failed|error" "$LOGS/tests.log" | tail -n 2
    printf '%s\n' ${STATUS[@]+"${STATUS[@]}"}
    echo "total $(( $(date +%s) - CHECK_START ))s; logs in $LOGS"
} | tee "$LOGS/gpu_check.txt"
