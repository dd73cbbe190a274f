#!/usr/bin/env bash
# Stop-and-resume soak of stage one: N stops at random moments per label mode (--no-refine, and with SAM) and per stop
# mode (SIGKILL, SIGTERM, SIGKILL of one of two torchrun ranks), each followed by a resume; every image compared byte
# for byte with an uninterrupted run; prints a table and N/N identical per mode.
# Usage: bench/soak_resume.sh N [--stops SIGKILL SIGTERM rank-kill] [--labels no-refine sam]
source "$(dirname "${BASH_SOURCE[0]}")/../tools/_env.sh"
cd "$REPO_ROOT"
exec python bench/soak_resume.py "$@"
