#!/usr/bin/env bash
# Runs one stage of `make test` and prints how long it took:
#   scripts/stage.sh NAME COMMAND [ARGS...]
set -uo pipefail
name="$1"; shift
start=$(date +%s)
echo "== stage ${name}: $*"
"$@"
rc=$?
echo "== stage ${name}: $(( $(date +%s) - start ))s (exit ${rc})"
exit "${rc}"
