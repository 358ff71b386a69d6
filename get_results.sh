#!/usr/bin/env bash
# Reproduces Table I: trains, times and screens every network, writing
# _results/ (tables, JSON), _figs/ (figures) and _models/ (dill .bn, .npz).
set -euo pipefail
cd "$(dirname "$0")"

usage() {
  cat <<'USAGE'
Usage: ./get_results.sh [--paper] [--preset NAME] [--networks LIST] [--device DEV] [--seed N]
                        [--dataset D] [--resume] [--mpi N [--hostfile FILE]]

  --paper           the original's schedules (LeNet 50+100 epochs: about 2.6 h on a 2-core CPU)
  --preset NAME     fast (default: minutes on a 2-core CPU), paper, or tiny (seconds, a data subset)
  --networks LIST   comma-separated networks to run (default: all):
                    lenet_mnist, alex_cifar10, resnet_cifar10. A network whose data cannot
                    be had is skipped with a line saying how to provide it.
  --dataset D       run the networks on D instead of their own data: an npz file
                    (train_x, train_y, test_x, test_y) or mnist, cifar10, pcifar10, mnist32
  --device DEV      training device: auto (default: GPU when CuPy sees one, else CPU), cpu, gpu.
                    Timings are taken on the CPU, and on the GPU too when it is used.
  --seed N          random seed (default 0)
  --resume          continue an interrupted run from its training snapshots in _models/
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
resume=
mpi=
hostfile=
while [ $# -gt 0 ]; do
  case "$1" in
    --paper) preset=paper ;;
    --preset) preset="${2:?--preset needs a name}"; shift ;;
    --networks) networks="${2:?--networks needs a list}"; shift ;;
    --device) device="${2:?--device needs cpu, gpu or auto}"; shift ;;
    --seed) seed="${2:?--seed needs a number}"; shift ;;
    --resume) resume=1 ;;
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

known=" lenet_mnist alex_cifar10 resnet_cifar10 "
IFS=, read -r -a selected <<< "$networks"
list=()
for net in "${selected[@]}"; do
  [ -z "$net" ] && continue
  case "$known" in
    *" $net "*) list+=("$net") ;;
    *) echo "error: unknown network '$net' in --networks; expected a comma-separated list of:$known" >&2
       exit 2 ;;
  esac
done
if [ ${#list[@]} -eq 0 ]; then
  echo "error: --networks '$networks' names no network; expected a comma-separated list of:$known" >&2
  exit 2
fi

if [ -n "$mpi" ]; then
  case "$mpi" in
    *[!0-9]*|0*) echo "error: --mpi needs a positive number of ranks, got '$mpi'" >&2; exit 2 ;;
  esac
  [ -z "$hostfile" ] || [ -f "$hostfile" ] || {
    echo "error: --hostfile '$hostfile' is not a file; expected an MPI hostfile (one host:slots per line)" >&2
    exit 2; }
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
marker="$(mktemp _results/.run-start.XXXXXX)"
trap 'rm -f "$marker"' EXIT
failed=()
done_nets=()
for net in "${list[@]}"; do
  echo "=== $net ($preset preset, device $device${mpi:+, $mpi MPI ranks})"
  args=(--network "$net" --preset "$preset" --device "$device" --seed "$seed" --out .)
  [ -n "$time_devices" ] && args+=(--time-devices "$time_devices")
  [ -n "$dataset" ] && args+=(--dataset "$dataset")
  [ -n "$resume" ] && args+=(--resume)
  if ! PYTHONUNBUFFERED=1 "${launch[@]}" "${args[@]}" 2>&1 | tee ${resume:+-a} "_results/$net.log"; then
    failed+=("$net")
  elif [ "_results/${net}_results.json" -nt "$marker" ]; then
    done_nets+=("$net")  # results of this invocation (a skipped network writes none)
  fi
done
echo "=== finished in $(( $(date +%s) - start )) s"
if [ ${#done_nets[@]} -gt 0 ]; then
  # Table I of this invocation's networks only, never older runs' results
  "$PY" -m branchynet.report --results _results --networks "$(IFS=,; echo "${done_nets[*]}")"
else
  echo "no network produced results: _results/table1.md left as it was" >&2
fi
if [ ${#failed[@]} -gt 0 ]; then
  echo "error: failed: ${failed[*]} (see _results/<network>.log)" >&2
  exit 1
fi
