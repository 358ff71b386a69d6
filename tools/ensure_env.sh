#!/usr/bin/env bash
# Creates (once) the project's virtual environment with the pinned set and
# prints its python. Usage: PY=$(tools/ensure_env.sh [test] [gpu])
# (extras: requirements/test.txt, requirements/gpu.txt, requirements/onnx.txt,
# requirements/mpi.txt; `test` also installs onnx.txt and mpi.txt: the ONNX
# path and distributed training over 2 MPI ranks are tested too). The base set
# holds numba (the numba path).
# Rebuilt automatically when a requirements file changes. With
# BRANCHYNET_PYTHON set, prints it and installs nothing.
set -euo pipefail
# An interpreter that already has everything (e.g. a GPU machine's image set up
# by tools/gpu_run.sh, which sets this): used as it is, nothing installed.
if [ -n "${BRANCHYNET_PYTHON:-}" ]; then
  command -v "$BRANCHYNET_PYTHON" >/dev/null 2>&1 || {
    echo "ensure_env: BRANCHYNET_PYTHON='$BRANCHYNET_PYTHON' is not an interpreter" >&2; exit 2; }
  echo "$BRANCHYNET_PYTHON"
  exit 0
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${BRANCHYNET_VENV:-$root/.venv}"
python="${PYTHON:-python3}"
reqs=("$root/requirements/base.txt")
for extra in "$@"; do
  [ -f "$root/requirements/$extra.txt" ] || { echo "ensure_env: no requirements/$extra.txt" >&2; exit 2; }
  reqs+=("$root/requirements/$extra.txt")
  [ "$extra" = test ] && reqs+=("$root/requirements/onnx.txt" "$root/requirements/mpi.txt")
done
stamp="$(cat "${reqs[@]}" "$root"/requirements/*.txt "$root/pyproject.toml" | sha256sum | cut -c1-16)"
if [ ! -x "$venv/bin/python" ] || ! grep -qx "$stamp" "$venv/.branchynet-stamps" 2>/dev/null; then
  echo "setting up $venv (first run only; a few minutes)" >&2
  "$python" -m venv "$venv" >&2
  # chainer 7.8.1 builds from source and its setup imports pkg_resources:
  # setuptools must be < 74 and present before chainer is built.
  "$venv/bin/python" -m pip install -q --disable-pip-version-check setuptools==73.0.1 wheel >&2
  args=()
  for r in "${reqs[@]}"; do args+=(-r "$r"); done
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-build-isolation "${args[@]}" >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps -e "$root" >&2
  echo "$stamp" >> "$venv/.branchynet-stamps"
fi
echo "$venv/bin/python"
