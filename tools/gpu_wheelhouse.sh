#!/usr/bin/env bash
# Builds, on a machine with PyPI access, what the offline GPU machines lack:
# a folder of wheels (default .whl/) that tools/gpu_run.sh installs there with
# `pip install --no-index --find-links`, and (unless --no-data) MNIST's four
# IDX files gzipped into .gpu_data/mnist/ (about 11 MB).
#
# The GPU image (Python 3.12, numpy 2.5, cupy-cuda13x 14.2, scipy, matplotlib,
# scikit-image, scikit-learn, onnx, pytest, hypothesis) has no chainer and no
# dill. Every wheel here is pure Python (py3-none-any), so the build
# interpreter's version does not matter; the script checks that.
#
# Both folders are git-ignored; give them to the device tool as `carry`
# (together well under its 64 MiB limit).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
  cat <<'USAGE'
Usage: tools/gpu_wheelhouse.sh [--out DIR] [--data-out DIR] [--no-data]

  --out DIR        wheel folder to (re)create (default: .whl)
  --data-out DIR   MNIST copy for the offline machine (default: .gpu_data)
  --no-data        wheels only
  -h, --help       this help

Needs PyPI (and, for MNIST, the files in datasets/data/mnist or a network the
MNIST loader can use). PYTHON picks the build interpreter (default python3).
USAGE
}

out="$root/.whl"
data_out="$root/.gpu_data"
data=1
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="${2:?--out needs a folder}"; shift ;;
    --data-out) data_out="${2:?--data-out needs a folder}"; shift ;;
    --no-data) data=0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_wheelhouse: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

# The pinned set: chainer 7.8.1 (a source release, built here), its own
# requirements that the image may lack, and dill. Versions as in the
# project's tested environment.
chainer=chainer==7.8.1
pure=(dill==0.4.1 filelock==4.2.12 six==1.17.0 typing_extensions==4.16.0 setuptools==73.0.1)
# protobuf ships compiled wheels: fetched for the image's CPython 3.12 (abi3).
binary=(protobuf==7.36.2)

python="${PYTHON:-python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "gpu_wheelhouse: build environment in $tmp" >&2
"$python" -m venv "$tmp/venv"
pip=("$tmp/venv/bin/python" -m pip --disable-pip-version-check -q)
# chainer's setup.py imports pkg_resources: setuptools < 74, no build isolation.
"${pip[@]}" install setuptools==73.0.1 wheel
rm -rf "$out"
mkdir -p "$out"
"${pip[@]}" wheel --no-deps --no-build-isolation -w "$out" "$chainer"
"${pip[@]}" download --no-deps -d "$out" --only-binary=:all: "${pure[@]}"
"${pip[@]}" download --no-deps -d "$out" --only-binary=:all: --python-version 3.12 \
  --implementation cp --abi abi3 --abi cp312 --platform manylinux2014_x86_64 \
  --platform manylinux_2_17_x86_64 "${binary[@]}"

for whl in "$out"/*.whl; do
  case "$(basename "$whl")" in
    protobuf-*) ;;
    *-py3-none-any.whl|*-py2.py3-none-any.whl) ;;
    *) echo "gpu_wheelhouse: $(basename "$whl") is not a pure-Python wheel" >&2; exit 1 ;;
  esac
done
[ -n "$(ls "$out"/chainer-7.8.1-*.whl 2>/dev/null)" ] || {
  echo "gpu_wheelhouse: no chainer wheel was built" >&2; exit 1; }

if [ "$data" = 1 ]; then
  src="${BRANCHYNET_DATA_DIR:-$root/datasets/data}/mnist"
  names=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)
  if ! (for n in "${names[@]}"; do [ -f "$src/$n" ] || [ -f "$src/$n.gz" ] || exit 1; done); then
    # let the project's loader fetch them (it checks every file's md5)
    loader_py="${BRANCHYNET_PYTHON:-$root/.venv/bin/python}"
    [ -x "$loader_py" ] || { echo "gpu_wheelhouse: MNIST is not in $src; fetch it first" \
      "(e.g. ./run_tests.sh or ./get_results.sh) or pass --no-data" >&2; exit 1; }
    (cd "$root" && "$loader_py" -c 'from datasets import mnist; mnist.get_data()')
  fi
  rm -rf "$data_out/mnist"
  mkdir -p "$data_out/mnist"
  for n in "${names[@]}"; do
    if [ -f "$src/$n" ]; then gzip -c "$src/$n" > "$data_out/mnist/$n.gz"
    else cp "$src/$n.gz" "$data_out/mnist/$n.gz"; fi
  done
  echo "gpu_wheelhouse: MNIST copied (gzipped) into $data_out/mnist" >&2
fi

echo "gpu_wheelhouse: wrote $out:" >&2
ls -l "$out" >&2
du -sh "$out" >&2
[ "$data" = 1 ] && du -sh "$data_out" >&2
exit 0
