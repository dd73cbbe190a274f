# Sourced by the entry scripts: create (first run) and activate the project's virtual environment.
# It does not change the working directory, so relative paths given by the user keep their meaning.
# The venv lives in .venv at the repository root; it is reinstalled when requirements.txt changes.
# Override the interpreter with PYTHON=/path/to/python3 (3.10 or 3.11).
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CEP_VENV:-$REPO_ROOT/.venv}"
STAMP="$VENV/.requirements.sha256"
# The stamp hashes the files' contents only (no paths), so a moved checkout or a shared CEP_VENV is not reinstalled.
WANT="$(cat "$REPO_ROOT/requirements.txt" "$REPO_ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
    echo "[cep] setting up the virtual environment in $VENV (first run takes a few minutes)..." >&2
    "${PYTHON:-python3}" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip >&2 || true
    # sam2 is an sdist: built against the torch just installed (not a second one in an isolated build
    # environment) and without its optional CUDA extension
    "$VENV/bin/python" -m pip install -q -r <(grep -v '^sam2==' "$REPO_ROOT/requirements.txt") >&2
    SAM2_BUILD_CUDA=0 "$VENV/bin/python" -m pip install -q --no-build-isolation \
        -r <(grep '^sam2==' "$REPO_ROOT/requirements.txt") >&2
    "$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$REPO_ROOT" >&2
    echo "$WANT" > "$STAMP"
    echo "[cep] environment ready." >&2
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
# A path given relative to the caller's working directory, as an absolute one (unchanged: absolute paths, URLs, '').
# Scripts that change to the repository root pass the paths the user gave through it first.
caller_path() { case "$1" in /*|*://*|'') printf '%s' "$1" ;; *) printf '%s' "$PWD/$1" ;; esac; }
# CPU speed. By default glibc hands large freed blocks back to the kernel and PyTorch's big tensors are faulted in
# 4 KB pages, so SAM's image encoder spends about 40% of its time in page faults on a CPU. Keeping freed memory in
# the process and asking for transparent huge pages took the ViT-B encoder from 16 s to 6.5-8 s per image on 2 cores,
# at the cost of holding the peak memory (docs/stage_one.md). Values already set are kept; an empty
# GLIBC_TUNABLES= and THP_MEM_ALLOC_ENABLE=0 turn this off.
export GLIBC_TUNABLES="${GLIBC_TUNABLES-glibc.malloc.mmap_threshold=4294967295:glibc.malloc.trim_threshold=17179869184}"
export THP_MEM_ALLOC_ENABLE="${THP_MEM_ALLOC_ENABLE:-1}"
