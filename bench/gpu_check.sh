#!/usr/bin/env bash
# Stage one on an NVIDIA GPU, checked and measured in about six minutes: the CUDA tests, then bench/bench_stage_one.py
# on 256 synthetic VOC-sized images (1-3 classes each) with the real ViT-B/16 and SAM ViT-B architectures and random
# weights, and one table with a column per run: fp32, bf16 and tf32 at batch size 8, fp32 at batch size 16 (the GPU's
# own rounding noise, the floor every agreement is read against), fp32 with the encoders compiled (--compile), the SAM
# 2.1 Hiera-B+ refiner, SAM 3 from the tags (random weights), and with BASELINE another tree of this repository (fp32) side by side. Rows: images/s, ms per
# image by stage, peak GPU memory (also at batch sizes 1, 16 and 32, with images/s, for fp32 and bf16), GPU busy
# fraction, label, Y0 and localization-map agreement with the fp32 run, and where the GPU time goes (the profiler's
# top kernels, kernel launches per image, GPU time per stage, host waits per batch). Every part is guarded: a failing
# part prints its error and the others still run; each part has a time limit, and all of them together at most TOTAL
# seconds.
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
# The SAM 2.1 run needs sam2 and its pure-Python dependencies in WHEELS too: hydra-core==1.3.8 omegaconf==2.3.1
# antlr4-python3-runtime==4.9.3 iopath==0.1.10 portalocker PyYAML, and a wheel of the sam2 1.1.0 sdist built without
# its CUDA extension: SAM2_BUILD_CUDA=0 python3 -m pip wheel --no-deps --no-build-isolation sam2==1.1.0 -w WHEELS.
# The SAM 3 run needs the sam3 wheel and its dependencies (pyproject.toml's [sam3] extra); without them it fails alone.
# Settings: OUT=DIR writes the table (gpu_check.txt), results.jsonl and the logs (*.log) there; IMAGES (256), BATCH (8),
# TOTAL (360), PYTHON (python3); BASELINE=REV (a git revision, exported with git archive) or BASELINE=DIR (a copy of
# another tree of this repository, for a machine without the git history: git archive REV | tar -x -C DIR). A dry run of the script on a CPU, real architectures, 2 images: DEVICE=cpu IMAGES=2
# (add TINY=1 for tiny test models); it runs every part, its time limits x8, the sweep at batch size 1 only and a
# one-image timing pass. In a virtual environment that has only what the GPU machine has (PyTorch, numpy, h5py,
# scipy, OpenCV, Pillow, tqdm, pytest...), it shows that the GPU run cannot fail on a missing package or a Python error:
#   python3 -m venv --system-site-packages ENV   # or a plain venv with those packages
#   DEVICE=cpu IMAGES=2 PYTHON=ENV/bin/python WHEELS=DIR bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DEVICE="${DEVICE:-cuda}"
IMAGES="${IMAGES:-256}"
BATCH="${BATCH:-8}"
PY="${PYTHON:-python3}"
SLOW="${SLOW:-$([ "$DEVICE" = cuda ] && echo 1 || echo 8)}"  # time limits x SLOW (a CPU dry run is slow)
TOTAL="$(( ${TOTAL:-360} * SLOW ))"                            # all parts together, seconds
WORK="$(mktemp -d /tmp/gpu_check.XXXXXX)"
LOGS="${OUT:-$WORK}"
mkdir -p "$LOGS"
export CEP_SYSTEM_PYTHON=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TQDM_MININTERVAL=10 PYTHONDONTWRITEBYTECODE=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
TINY_FLAG=()
[ -n "${TINY:-}" ] && TINY_FLAG=(--tiny)
CHECK_START=$(date +%s)
STATUS=()

# part NAME SECONDS LOG COMMAND...: run a part with a time limit (at most what is left of TOTAL, less 10 s for the
# report), its output into LOG, its last lines shown
part() {
    local name="$1" limit="$2" log="$3"
    shift 3
    local start rc before left
    start=$(date +%s)
    left=$((TOTAL - 10 - (start - CHECK_START)))
    limit=$((limit * SLOW < left ? limit * SLOW : left))
    if [ "$limit" -lt 5 ]; then
        echo "!! $name skipped: the check's TOTAL of ${TOTAL}s is spent"
        STATUS+=("$(printf '%-34s skipped (TOTAL spent)' "$name")")
        return 0
    fi
    before=$(cat "$LOGS/$log" 2>/dev/null | wc -l)
    echo "=== $name (limit ${limit}s)"
    BENCH_STOP_BY=$((start + limit)) timeout --kill-after=10 "$limit" "$@" >>"$LOGS/$log" 2>&1  # a bench keeps it
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
    tests/test_cuda.py tests/test_sam_decoder.py tests/test_skipcam.py tests/test_precision.py

# The runs, each a part with its own limit, all shortened where needed to write their results within it
# (BENCH_STOP_BY), in this order so that what matters most runs first: fp32 (the reference every agreement is read
# against), bf16, the baseline tree, tf32, fp32 at twice the batch size (the GPU's own rounding noise: the floor the
# other agreements are read against), the SAM 2.1 Hiera-B+ refiner, SAM 3 from the tags (random weights; needs sam3 in
# WHEELS) and fp32 with --compile (its whole-run rate includes the compile time). fp32 and bf16 also time each stage
# and sweep the batch sizes.
SWEEP=(--memory-sweep 1,16,32)
SHORT=(--timed-images 0)
[ "$DEVICE" = cuda ] || { SWEEP=(--memory-sweep 1 --timed-images 1); SHORT=(--timed-images 0); }
bench() {  # bench NAME LIMIT LOG SECONDS ARGS...: bench/bench_stage_one.py of this tree on the shared images
    local name="$1" limit="$2" log="$3" seconds="$4"
    shift 4
    part "$name" "$limit" "$log" "$PY" bench/bench_stage_one.py --device "$DEVICE" --images "$IMAGES" --mixed-sizes \
        --max-seconds $((seconds * SLOW)) --part-seconds $((12 * SLOW)) --json "$WORK/results.jsonl" \
        ${TINY_FLAG[@]+"${TINY_FLAG[@]}"} "$@"
}
bench "stage one, fp32, batch $BATCH" 120 bench-fp32.log 35 --label "fp32 b$BATCH" --precision fp32 \
    --batch-size "$BATCH" --out "$WORK/fp32" "${SWEEP[@]}"
DATA=(--data "$WORK/fp32/data")
bench "stage one, bf16, batch $BATCH" 100 bench-bf16.log 30 --label "bf16 b$BATCH" --precision bf16 \
    --batch-size "$BATCH" --out "$WORK/bf16" "${DATA[@]}" --agree-with "$WORK/fp32/shards" "${SWEEP[@]}"
if [ -n "${BASELINE:-}" ]; then
    # BASELINE: a git revision (exported with git archive) or a folder holding another tree of this repository
    base_tree() {
        if [ -d "$BASELINE" ]; then cp -r "$BASELINE" "$WORK/baseline"
        else mkdir -p "$WORK/baseline" && git archive "$BASELINE" | tar -x -C "$WORK/baseline"; fi
        cd "$WORK/baseline" && PYTHONPATH="$WORK/baseline:$PYTHONPATH" "$PY" bench/bench_stage_one.py \
            --device "$DEVICE" --images "$IMAGES" --mixed-sizes --batch-size "$BATCH" --precision fp32 \
            --max-seconds $((25 * SLOW)) --part-seconds $((12 * SLOW)) --timed-images 0 --out "$WORK/base" \
            --data "$WORK/fp32/data" --agree-with "$WORK/fp32/shards" --json "$WORK/baseline.jsonl" \
            ${TINY_FLAG[@]+"${TINY_FLAG[@]}"} && "$PY" -c '
import json, sys
rows = [dict(json.loads(line), label="baseline " + sys.argv[2]) for line in open(sys.argv[1]) if line.strip()]
open(sys.argv[3], "a").write("".join(json.dumps(r) + "\n" for r in rows))' \
            "$WORK/baseline.jsonl" "$(basename "$BASELINE")" "$WORK/results.jsonl"
    }
    export -f base_tree
    export BASELINE WORK DEVICE IMAGES BATCH SLOW PY
    export TINY_FLAG_TEXT="${TINY_FLAG[*]:-}"
    part "baseline $BASELINE, fp32, batch $BATCH" 70 bench-baseline.log bash -c \
        'TINY_FLAG=($TINY_FLAG_TEXT); base_tree'
fi
bench "stage one, tf32, batch $BATCH" 60 bench-tf32.log 20 --label "tf32 b$BATCH" --precision tf32 \
    --batch-size "$BATCH" --out "$WORK/tf32" "${DATA[@]}" --agree-with "$WORK/fp32/shards" "${SHORT[@]}"
bench "noise floor, fp32, batch $((2 * BATCH))" 50 bench-noise.log 15 --label "fp32 b$((2 * BATCH)) (noise)" \
    --precision fp32 --batch-size $((2 * BATCH)) --out "$WORK/noise" "${DATA[@]}" --agree-with "$WORK/fp32/shards" \
    "${SHORT[@]}"
bench "refiner SAM 2.1 Hiera-B+, fp32" 60 bench-sam2.log 20 --label "SAM 2.1 B+ fp32 b$BATCH" --precision fp32 \
    --batch-size "$BATCH" --sam-model sam2.1_hiera_b+ --out "$WORK/sam2" "${DATA[@]}" "${SHORT[@]}"
bench "SAM 3 from tags, fp32" 60 bench-sam3.log 20 --label "SAM 3 tags fp32 b$BATCH" --precision fp32 \
    --batch-size "$BATCH" --labeller sam3-text --out "$WORK/sam3" "${DATA[@]}" "${SHORT[@]}"
bench "compiled encoders, fp32, batch $BATCH" 120 bench-compiled.log 60 --label "fp32 b$BATCH compiled" \
    --precision fp32 --batch-size "$BATCH" --compile --out "$WORK/compiled" "${DATA[@]}" \
    --agree-with "$WORK/fp32/shards" "${SHORT[@]}"

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
