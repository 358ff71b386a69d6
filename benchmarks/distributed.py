"""Data-parallel training speed: one process (1 or 2 BLAS threads) vs N MPI ranks.

    python benchmarks/distributed.py [--quick] [--networks lenet,resnet110] [--rounds R]
                                     [--ranks N] [--steps S]

Times joint-training steps (``training.train_exits``, global batch: B-LeNet 512 on
MNIST, B-ResNet-110 64 on mnist32) in three configurations, run as separate
processes in interleaved rounds (so drifting machine load hits all alike)
and reports the best round of each:

- ``1 proc x 1 thread``: one process, OpenBLAS/OpenMP and the training kernels
  limited to one thread;
- ``1 proc x N threads``: one process with N threads (BLAS and kernels);
- ``N ranks x 1 thread``: ``mpiexec -n N`` with ``--distributed`` training
  (ChainerMN; the default packed communicator), one thread per rank.

Epoch times are extrapolated from the timed steps (B-LeNet: 60,000 images;
B-ResNet-110: 50,000). ``comm`` is rank 0's share of the step time spent in
the gradient all-reduce, waiting for the slower rank included; ``CPU s/step``
is the processor time of all processes (threads, ranks) per step, which
other load on the machine changes less than wall time. The load average
before and after each run is printed: on a shared machine, compare only
numbers taken under similar load.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

NETWORKS = {  # name: (module, dataset, global batch, epoch size, default steps, quick steps)
    'lenet': ('lenet_mnist', 'mnist', 512, 60000, 20, 6),
    'resnet110': ('resnet_cifar10', 'mnist32', 64, 50000, 4, 2),
}
THREAD_VARS = ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS',
               'BRANCHYNET_TRAIN_THREADS')


# ------------------------------------------------------------------ worker
def worker(args):
    import importlib

    import branchynet  # noqa: F401
    import numpy

    from branchynet.training import loop as training
    from branchynet.training.runtime import tune_allocator
    tune_allocator()  # in every process and rank, as the driver does
    module, dataset, batch, _, _, _ = NETWORKS[args.network]
    dist = None
    if args.distributed:
        from branchynet.training import distributed
        dist = distributed.Distributed.create()
    from datasets import mnist, mnist32
    x, y, _, _ = mnist.get_data()
    n_warm, n_timed = batch * args.warmup, batch * args.steps
    order = numpy.random.RandomState(0).permutation(len(x))[:n_warm + n_timed]
    x, y = x[order], y[order]
    if dataset == 'mnist32':  # padded after the cut: the full set would take 740 MB
        x = mnist32.to_cifar_shape(x)
    numpy.random.seed(0)
    net = importlib.import_module('networks.' + module).get_network()
    training.train_exits(net, x[:n_warm], y[:n_warm], batchsize=batch, num_epoch=1, seed=0,
                         progress=False, distributed=dist)  # warm-up: allocations, first steps
    comm0 = dist.comm_seconds if dist else 0.0
    if dist:
        dist.comm.mpi_comm.Barrier()
    start = time.perf_counter()
    cpu0 = os.times()
    training.train_exits(net, x[n_warm:], y[n_warm:], batchsize=batch, num_epoch=1, seed=1,
                         progress=False, distributed=dist)
    seconds = time.perf_counter() - start
    cpu1 = os.times()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    if dist is not None:  # CPU time of all ranks
        cpu = sum(dist.comm.mpi_comm.allgather(cpu))
    if dist is None or dist.is_root:
        print('RESULT ' + json.dumps({
            'seconds': seconds, 'steps': args.steps, 'batch': batch,
            'comm_seconds': (dist.comm_seconds - comm0) if dist else 0.0,
            'cpu_seconds': cpu}), flush=True)


# ------------------------------------------------------------------ driver
def loadavg():
    try:
        return os.getloadavg()[0]
    except OSError:
        return float('nan')


def run_config(network, kind, ranks, steps, warmup):
    threads = ranks if kind == 'threads' else 1
    env = dict(os.environ, **{v: str(threads) for v in THREAD_VARS})
    cmd = [sys.executable, os.path.abspath(__file__), '--worker', '--network', network,
           '--steps', str(steps), '--warmup', str(warmup)]
    if kind == 'ranks':
        mpiexec = os.path.join(os.path.dirname(sys.executable), 'mpiexec')
        cmd = [mpiexec if os.path.exists(mpiexec) else 'mpiexec', '-n', str(ranks)] + cmd + \
            ['--distributed']
    before = loadavg()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    after = loadavg()
    lines = [line for line in proc.stdout.splitlines() if line.startswith('RESULT ')]
    if proc.returncode != 0 or not lines:
        raise RuntimeError('{} failed:\n{}\n{}'.format(' '.join(cmd), proc.stdout[-2000:],
                                                       proc.stderr[-2000:]))
    result = json.loads(lines[-1][len('RESULT '):])
    result.update(load_before=before, load_after=after)
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    p.add_argument('--distributed', action='store_true', help=argparse.SUPPRESS)
    p.add_argument('--network', default='lenet', choices=sorted(NETWORKS),
                   help=argparse.SUPPRESS)
    p.add_argument('--warmup', type=int, default=2, help='untimed steps first (default 2)')
    p.add_argument('--networks', default='lenet,resnet110',
                   help='comma-separated: lenet, resnet110 (default both)')
    p.add_argument('--ranks', type=int, default=2, help='ranks and threads compared (2)')
    p.add_argument('--rounds', type=int, default=None, help='interleaved rounds (3; quick 1)')
    p.add_argument('--steps', type=int, default=None,
                   help='timed steps (default: LeNet 20, ResNet 4; quick 6 and 2)')
    p.add_argument('--quick', action='store_true', help='fewer steps and one round')
    args = p.parse_args()
    if args.worker:
        return worker(args)
    rounds = args.rounds or (1 if args.quick else 3)
    configs = [('1 proc x 1 thread', 'threads', 1),
               ('1 proc x {} threads'.format(args.ranks), 'threads', args.ranks),
               ('{} ranks x 1 thread'.format(args.ranks), 'ranks', args.ranks)]
    print('{} CPU cores; load average at start {:.2f}; {} interleaved round(s), best kept'
          .format(os.cpu_count(), loadavg(), rounds))
    summary = {}
    for network in args.networks.split(','):
        if network not in NETWORKS:
            sys.exit('unknown network {!r}; expected one of: {}'.format(
                network, ', '.join(NETWORKS)))
        _, dataset, batch, epoch_size, steps, quick_steps = NETWORKS[network]
        steps = args.steps or (quick_steps if args.quick else steps)
        best = {}
        for r in range(rounds):
            for label, kind, n in configs:
                res = run_config(network, kind, n, steps, args.warmup)
                per_step = res['seconds'] / res['steps']
                print('  {} round {} {}: {:.3f} s/step, comm {:.1%}, cpu {:.1f} s for {:.1f} s '
                      'wall, load {:.1f} -> {:.1f}'.format(
                          network, r + 1, label, per_step, res['comm_seconds'] / res['seconds'],
                          res['cpu_seconds'], res['seconds'], res['load_before'],
                          res['load_after']), flush=True)
                if label not in best or res['seconds'] < best[label]['seconds']:
                    best[label] = res
        base = best[configs[0][0]]['seconds']
        print('\n{} joint training, global batch {} on {}, {} timed steps (best of {}):'.format(
            network, batch, dataset, steps, rounds))
        print('| configuration | s/step | samples/s | epoch (s, extrapolated) | speed-up vs '
              '1x1 | efficiency | comm share | CPU s/step | load before/after |')
        print('|---|---|---|---|---|---|---|---|---|')
        for label, kind, n in configs:
            res = best[label]
            per_step = res['seconds'] / res['steps']
            speedup = base / res['seconds']
            print('| {} | {:.3f} | {:.0f} | {:.0f} | {:.2f}x | {:.0%} | {} | {:.3f} | {:.1f} / '
                  '{:.1f} |'.format(label, per_step, batch / per_step,
                                    epoch_size / batch * per_step, speedup, speedup / n,
                                    '{:.1%}'.format(res['comm_seconds'] / res['seconds'])
                                    if kind == 'ranks' else '-',
                                    res['cpu_seconds'] / res['steps'], res['load_before'],
                                    res['load_after']))
        ranks_label, threads_label = configs[2][0], configs[1][0]
        summary[network + '_speedup_ranks'] = base / best[ranks_label]['seconds']
        summary[network + '_speedup_threads'] = base / best[threads_label]['seconds']
        summary[network + '_ranks_over_threads'] = (best[threads_label]['seconds'] /
                                                   best[ranks_label]['seconds'])
        print()
    print(' '.join('{}={:.3f}'.format(k, v) for k, v in summary.items()))


if __name__ == '__main__':
    sys.exit(main())
