#!/usr/bin/env bash
# Copies a finished run's outputs, unchanged, into a folder meant for git
# (e.g. results/paper/lenet_mnist_cpu) with a SHA256SUMS manifest, so that a
# recorded run can be checked against what the run wrote.
# Usage: tools/record_run.sh RUN_DIR NETWORK DEST
#   RUN_DIR  the folder holding the run's _results/, _figs/ and _models/
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: $0 RUN_DIR NETWORK DEST" >&2; exit 2; }
run="$1"; net="$2"; dest="$3"
for d in _results _figs _models; do
  [ -d "$run/$d" ] || { echo "error: $run/$d does not exist (not a finished run?)" >&2; exit 2; }
done
[ -f "$run/_results/${net}_results.json" ] || {
  echo "error: $run/_results/${net}_results.json missing: the run did not finish" >&2; exit 2; }
mkdir -p "$dest"
shopt -s nullglob
files=("$run/_results/${net}".log "$run/_results/${net}"_*.{md,csv,json} "$run/_results/table1".{md,csv}
       "$run/_figs/${net}"_*.{png,pdf} "$run/_models/${net}.npz")
for f in "${files[@]}"; do
  cp -p "$f" "$dest/"
done
(cd "$dest" && sha256sum -- * | grep -v ' SHA256SUMS$' > SHA256SUMS)
echo "recorded ${#files[@]} files in $dest"
