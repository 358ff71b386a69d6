#!/usr/bin/env bash
# Checks, on a machine without a GPU, that tools/gpu_run.sh installs the
# wheelhouse offline into a Python like the GPU machines' image and that the
# project then trains and predicts (tools/gpu_smoke.py).
#
#   tools/gpu_offline_check.sh [--mimic PY] [-- COMMAND ...]
#
# The stand-in image is .gpu_mimic/: a Python 3.12 virtual environment with
# numpy 2.5.2, scipy, matplotlib, scikit-image, scikit-learn, pytest,
# hypothesis, onnx, onnxruntime and cupy-cuda13x 14.2 from PyPI, and no chainer, dill or
# setuptools (created on first use; PYTHON312 names the interpreter). The
# install then runs with pip's configuration ignored, --no-index, and proxies
# pointing at a closed local port, so nothing can come from a network. The
# wheelhouse (.whl/) and MNIST copy (.gpu_data/) are built first if absent.
# COMMAND defaults to `python tools/gpu_smoke.py --device auto`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

mimic=""
while [ $# -gt 0 ]; do
  case "$1" in
    --mimic) mimic="${2:?--mimic needs an interpreter}"; shift ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; break ;;
    *) echo "gpu_offline_check: unknown option '$1'" >&2; exit 2 ;;
  esac
  shift
done
[ $# -gt 0 ] || set -- python tools/gpu_smoke.py --device auto

if [ -z "$mimic" ]; then
  mimic="$root/.gpu_mimic/bin/python"
  if [ ! -x "$mimic" ]; then
    py312="${PYTHON312:-$(command -v python3.12 || echo /root/.pyenv/versions/3.12.1/bin/python3.12)}"
    [ -x "$py312" ] || { echo "gpu_offline_check: no Python 3.12 (set PYTHON312)" >&2; exit 2; }
    echo "gpu_offline_check: creating the stand-in image .gpu_mimic (Python 3.12, numpy 2)" >&2
    "$py312" -m venv "$root/.gpu_mimic"
    "$mimic" -m pip install -q --disable-pip-version-check numpy==2.5.2 scipy matplotlib \
      scikit-image scikit-learn pytest hypothesis onnx==1.23.2 onnxruntime \
      "cupy-cuda13x==14.2.*"
    "$mimic" -m pip uninstall -q -y setuptools 2>/dev/null || true
  fi
fi
[ -f .whl/chainer-7.8.1-py3-none-any.whl ] && [ -d .gpu_data/mnist ] || tools/gpu_wheelhouse.sh

"$mimic" - <<'PY'
import importlib.util, sys, numpy
print('stand-in image: python {}, numpy {}'.format(sys.version.split()[0], numpy.__version__))
for name in ('chainer', 'dill'):
    if importlib.util.find_spec(name):
        sys.exit('the stand-in image already has {}: not a fair test'.format(name))
PY

site="$(mktemp -d)"
trap 'rm -rf "$site"' EXIT
env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL -u BRANCHYNET_PYTHON \
  -u BRANCHYNET_DATA_DIR PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 \
  http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9 \
  HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 \
  tools/gpu_run.sh --python "$mimic" --site "$site" "$@"
