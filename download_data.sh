#!/usr/bin/env bash
# Puts the data the experiments read in place, as the original's download_data.sh
# did for datasets/data/pcifar10/data.npz. The original fetched that file from a
# Dropbox link that no longer answers; here it is built from the official
# CIFAR-10 tarball (downloaded, md5-checked) with the recipe described in
# datasets/pcifar10.py. MNIST (the IDX files) is fetched too. Files already in
# place are kept. Runs in the project's .venv (tools/ensure_env.sh).
set -euo pipefail
cd "$(dirname "$0")"
if [ "$#" -gt 0 ]; then
  echo "download_data.sh takes no arguments, got: $*" >&2
  exit 2
fi
PY="$(tools/ensure_env.sh)"
"$PY" - <<'PYEOF'
from datasets import mnist, pcifar10

pcifar10.get_data()
mnist.get_data()
print('data in place: datasets/data/pcifar10/data.npz and MNIST')
PYEOF
