#!/usr/bin/env bash
# Builds the CPU image (branchynet:cpu), or with --gpu the CUDA image (branchynet:gpu).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --gpu ]; then
  docker build -f docker/Dockerfile.cuda -t branchynet:gpu .
else
  docker build -f docker/Dockerfile -t branchynet:cpu .
fi
