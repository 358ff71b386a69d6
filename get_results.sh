#!/usr/bin/env bash
# Reproduces Table I: trains, times and screens every network, writing
# _results/ (tables, JSON, logs), _figs/ (figures) and _models/ (dill .bn, .npz).
#
# This script only sets up the environment (.venv with the pinned set; with
# --mpi also requirements/mpi.txt) and hands every option to the driver,
# with the defaults of a full run: all networks, device auto, output here.
# The options: ./get_results.sh --help (the driver's), e.g. --paper,
# --preset fast|paper|tiny, --networks LIST, --device cpu|gpu|auto, --seed N,
# --dataset D, --resume, --mpi N [--hostfile FILE].
set -euo pipefail
cd "$(dirname "$0")"
extras=()
for arg in "$@"; do
  case "$arg" in --mpi|--mpi=*) extras=(mpi) ;; esac
done
PY="$(tools/ensure_env.sh "${extras[@]}")"
PYTHONUNBUFFERED=1 exec "$PY" -m branchynet.experiment --networks all --device auto --out . "$@"
