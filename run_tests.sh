#!/usr/bin/env bash
# Runs the test suite, creating the environment on first use.
# Extra arguments go to pytest (e.g. ./run_tests.sh -k entropy).
set -euo pipefail
cd "$(dirname "$0")"
PY="$(tools/ensure_env.sh test)"
exec "$PY" -m pytest -q "$@" tests
