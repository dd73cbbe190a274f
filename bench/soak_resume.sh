#!/usr/bin/env bash
# Kill-and-resume soak of stage one: N SIGKILLs at random moments per mode (--no-refine, and with SAM), each followed
# by a resume; every image compared byte for byte with an uninterrupted run; prints a table. Usage: bench/soak_resume.sh N
source "$(dirname "${BASH_SOURCE[0]}")/../tools/_env.sh"
cd "$REPO_ROOT"
exec python bench/soak_resume.py "$@"
