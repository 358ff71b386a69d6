#!/usr/bin/env bash
# Runs a command on an offline GPU machine after installing, from the wheel
# folder that tools/gpu_wheelhouse.sh built, what its Python lacks.
#
#   tools/gpu_run.sh [options] [--] COMMAND [ARGS...]
#
# The image's Python stays untouched: the missing distributions (chainer and
# dill; filelock, six, typing_extensions, protobuf or setuptools only where
# the image has none) are installed with
# `pip install --no-index --find-links WHEELS --no-deps --target SITE`, and
# COMMAND runs with the checkout and SITE on PYTHONPATH, `python`/`python3` on PATH meaning
# the image's interpreter, BRANCHYNET_PYTHON set (so ./run_tests.sh and
# ./get_results.sh use it instead of building .venv) and, where .gpu_data/
# was carried, BRANCHYNET_DATA_DIR pointing at a copy of it in SITE/data
# (MNIST without a network).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
  cat <<'USAGE'
Usage: tools/gpu_run.sh [--wheelhouse DIR] [--site DIR] [--python PY] [--] COMMAND [ARGS...]

  --wheelhouse DIR  wheels from tools/gpu_wheelhouse.sh (default: .whl)
  --site DIR        where the missing packages are installed (default: .gpu_site)
  --python PY       the interpreter to install for and run with (default: $PYTHON or python3)
  -h, --help        this help

Example (device tool, carry [".whl", ".gpu_data"]):
  tools/gpu_run.sh python -m pytest -q -m gpu tests
USAGE
}

wheelhouse="$root/.whl"
site="$root/.gpu_site"
py="${PYTHON:-python3}"
while [ $# -gt 0 ]; do
  case "$1" in
    --wheelhouse) wheelhouse="${2:?--wheelhouse needs a folder}"; shift ;;
    --site) site="${2:?--site needs a folder}"; shift ;;
    --python) py="${2:?--python needs an interpreter}"; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    -*) echo "gpu_run: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    *) break ;;
  esac
  shift
done
[ $# -gt 0 ] || { echo "gpu_run: no command given" >&2; usage >&2; exit 2; }
command -v "$py" >/dev/null 2>&1 || { echo "gpu_run: no interpreter '$py'" >&2; exit 2; }
py="$(command -v "$py")"
ls "$wheelhouse"/chainer-7.8.1-*.whl >/dev/null 2>&1 || {
  echo "gpu_run: no chainer wheel in '$wheelhouse': run tools/gpu_wheelhouse.sh on a" \
       "machine with PyPI access and carry the folder (device tool: carry [\".whl\"])" >&2
  exit 2; }
"$py" -m pip --version >/dev/null 2>&1 || {
  echo "gpu_run: '$py' has no pip; it is needed to install the wheels" >&2; exit 2; }

# Which wheels the image lacks: chainer and dill unless that very version is
# there, the others only if the image has no version at all.
mapfile -t missing < <(PYTHONPATH= "$py" - "$wheelhouse" <<'PY'
import glob, os, sys
import importlib.metadata as md
always = {'chainer', 'dill'}
for whl in sorted(glob.glob(os.path.join(sys.argv[1], '*.whl'))):
    name, version = os.path.basename(whl).split('-')[:2]
    key = name.lower().replace('_', '-')
    try:
        have = md.version(key)
    except md.PackageNotFoundError:
        have = None
    if have is None or (key.replace('-', '_') in always and have != version):
        print(whl)
PY
)
mkdir -p "$site"
stamp="$(printf '%s\n' "${missing[@]}" | sha256sum | cut -c1-16)"
pip_offline=("$py" -m pip install --disable-pip-version-check --no-index
             --find-links "$wheelhouse" --no-deps --target "$site" --upgrade -q)
if [ "$(cat "$site/.gpu_run_stamp" 2>/dev/null)" != "$stamp" ]; then
  if [ ${#missing[@]} -gt 0 ]; then
    echo "gpu_run: installing offline into $site: $(printf '%s ' "${missing[@]##*/}")" >&2
    PYTHONPATH= "${pip_offline[@]}" "${missing[@]}"
  fi
  echo "$stamp" > "$site/.gpu_run_stamp"
fi
# the project itself from the checkout, first: an installed copy would hold
# the data and network code as branchynet.datasets/.networks only, apart from
# the checkout's top-level datasets/networks that tests and scripts import
rm -rf "$site/branchynet" "$site"/branchynet-*.dist-info "$site/datasets" "$site/networks"
export PYTHONPATH="$root:$site${PYTHONPATH:+:$PYTHONPATH}"

mkdir -p "$site/bin"
for name in python python3; do
  printf '#!/bin/sh\nexec "%s" "$@"\n' "$py" > "$site/bin/$name"
  chmod +x "$site/bin/$name"
done
export PATH="$site/bin:$PATH"
export BRANCHYNET_PYTHON="$py"
if [ -z "${BRANCHYNET_DATA_DIR:-}" ] && [ -d "$root/.gpu_data/mnist" ]; then
  # a copy: the loader unpacks the .gz files beside them, and the carried
  # folder must stay small (the device tool carries 64 MiB at most)
  mkdir -p "$site/data/mnist"
  cp -n "$root"/.gpu_data/mnist/*.gz "$site/data/mnist/" 2>/dev/null || true
  export BRANCHYNET_DATA_DIR="$site/data"
fi
exec "$@"
