#!/usr/bin/env bash
# Reproduces Table I: trains, times and screens every network, writing
# _results/ (tables, JSON), _figs/ (figures) and _models/ (dill .bn, .npz).
set -euo pipefail
cd "$(dirname "$0")"

usage() {
  cat <<'USAGE'
Usage: ./get_results.sh [--paper] [--preset NAME] [--networks LIST] [--device DEV] [--seed N]
                        [--dataset D] [--mpi N [--hostfile FILE]]

  --paper           the original's schedules (LeNet 50+100 epochs: about 4 h on a 2-core CPU)
  --preset NAME     fast (default: minutes on a 2-core CPU), paper, or tiny (seconds, a data subset)
  --networks LIST   comma-separated networks to run (default: all):
                    lenet_mnist, alex_cifar10, resnet_cifar10. A network whose data cannot
                    be had is skipped with a line saying how to provide it.
  --dataset D       run the networks on D instead of their own data: an npz file
                    (train_x, train_y, test_x, test_y) or mnist, cifar10, pcifar10, mnist32
  --device DEV      training device: auto (default: GPU when CuPy sees one, else CPU), cpu, gpu.
                    Timings are taken on the CPU, and on the GPU too when it is used.
  --seed N          random seed (default 0)
  --mpi N           train data-parallel on N MPI ranks (mpiexec -n N ... --distributed;
                    installs requirements/mpi.txt). The batch size stays the global batch;
                    batch-1 timing runs on rank 0 alone. MPIEXEC overrides the launcher.
  --hostfile FILE   with --mpi: the MPI hostfile listing the nodes (several machines)
  -h, --help        this help

The first run creates .venv with the pinned dependencies (a few minutes).
Logs: _results/<network>.log.
USAGE
}

preset=fast
networks=lenet_mnist,alex_cifar10,resnet_cifar10
dataset=
device=auto
seed=0
mpi=
hostfile=
while [ $# -gt 0 ]; do
  case "$1" in
    --paper) preset=paper ;;
    --preset) preset="${2:?--preset needs a name}"; shift ;;
    --networks) networks="${2:?--networks needs a list}"; shift ;;
    --device) device="${2:?--device needs cpu, gpu or auto}"; shift ;;
    --seed) seed="${2:?--seed needs a number}"; shift ;;
    --dataset) dataset="${2:?--dataset needs a file or name}"; shift ;;
    --mpi) mpi="${2:?--mpi needs a number of ranks}"; shift ;;
    --hostfile) hostfile="${2:?--hostfile needs a file}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
case "$device" in
  cpu) time_devices=cpu ;;
  gpu) time_devices=cpu,gpu ;;
  auto) time_devices="" ;;
  *) echo "error: --device must be cpu, gpu or auto, got '$device'" >&2; exit 2 ;;
esac

if [ -n "$mpi" ]; then
  case "$mpi" in ''|*[!0-9]*|0) echo "error: --mpi needs a positive number of ranks, got '$mpi'" >&2; exit 2 ;; esac
  [ -z "$hostfile" ] || [ -f "$hostfile" ] || { echo "error: no hostfile '$hostfile'" >&2; exit 2; }
  PY="$(tools/ensure_env.sh mpi)"
  mpiexec="${MPIEXEC:-$(dirname "$PY")/mpiexec}"
  [ -x "$mpiexec" ] || mpiexec=mpiexec
  launch=("$mpiexec" -n "$mpi")
  [ -n "$hostfile" ] && launch+=(-hostfile "$hostfile")  # MPICH and Open MPI both take -hostfile
  launch+=("$PY" -m branchynet.experiment --distributed)
else
  [ -z "$hostfile" ] || { echo "error: --hostfile needs --mpi N" >&2; exit 2; }
  PY="$(tools/ensure_env.sh)"
  launch=("$PY" -m branchynet.experiment)
fi
mkdir -p _models _figs _results
start=$(date +%s)
failed=()
for net in ${networks//,/ }; do
  echo "=== $net ($preset preset, device $device${mpi:+, $mpi MPI ranks})"
  args=(--network "$net" --preset "$preset" --device "$device" --seed "$seed" --out .)
  [ -n "$time_devices" ] && args+=(--time-devices "$time_devices")
  [ -n "$dataset" ] && args+=(--dataset "$dataset")
  if ! PYTHONUNBUFFERED=1 "${launch[@]}" "${args[@]}" 2>&1 | tee "_results/$net.log"; then
    failed+=("$net")
  fi
done
echo "=== finished in $(( $(date +%s) - start )) s"
"$PY" -m branchynet.report --results _results
if [ ${#failed[@]} -gt 0 ]; then
  echo "error: failed: ${failed[*]} (see _results/<network>.log)" >&2
  exit 1
fi
