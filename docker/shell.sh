#!/usr/bin/env bash
# A shell in the image with the project mounted at /branchynet; then run
# ./get_results.sh or ./run_tests.sh. --gpu uses branchynet:gpu with every GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --gpu ]; then
  exec docker run --rm -it --gpus all -v "$PWD":/branchynet branchynet:gpu bash
fi
exec docker run --rm -it -v "$PWD":/branchynet branchynet:cpu bash
