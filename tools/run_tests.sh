#!/usr/bin/env bash
# Run the whole test suite (creates the virtual environment on first run). Extra arguments go to pytest.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$REPO_ROOT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
exec python -m pytest "$@"
