"""Work for the distributed tests, run under mpiexec by tests/training/test_distributed.py.

    mpiexec -n 2 python tests/training/mpi/worker.py ACTION --out DIR [options]

ACTION is train (weights and curves after training), outputs (gathered exit
outputs), shards (the sample indices every rank trained on), fail (one
rank raises) or experiment (the driver, ``--`` then its arguments, with every
write under --out logged to DIR/writes_rank<R>.txt). Rank 0 writes
DIR/result.npz; the data is made from --seed, so a single process can
rebuild it.
"""
import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'tests'))

import numpy  # noqa: E402

import branchynet  # noqa: E402,F401
from branchynet.training import distributed, loop as training  # noqa: E402


def make_data(n, seed):
    """Random 1x28x28 images and labels (the same on every rank)."""
    rng = numpy.random.RandomState(seed)
    return (rng.rand(n, 1, 28, 28).astype(numpy.float32),
            rng.randint(0, 10, n).astype(numpy.int32))


def make_net(seed, opt):
    import networks.lenet_mnist as lenet
    numpy.random.seed(seed)
    return lenet.get_network(opt=opt)


def weights(net):
    return {name: numpy.array(p.array) for name, p in sorted(net.namedparams())}


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument('action', choices=('train', 'outputs', 'shards', 'fail', 'experiment'))
    p.add_argument('--out', required=True)
    p.add_argument('--n', type=int, default=200)
    p.add_argument('--batch', type=int, default=64)
    p.add_argument('--epochs', type=int, default=1)
    p.add_argument('--main', action='store_true')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--opt', default='Adam')
    p.add_argument('--communicator', default=None, help='default: packed')
    p.add_argument('--snapshot')
    p.add_argument('--resume', action='store_true')
    p.add_argument('--recipe', default='{}', help="train_exits' recipe options as JSON")
    p.add_argument('--interrupt-after', type=int, default=0,
                   help='raise SIGINT on rank 1 after this many steps (0: never)')
    argv = sys.argv[1:] if argv is None else argv
    rest = argv[argv.index('--') + 1:] if '--' in argv else []
    args = p.parse_args(argv[:len(argv) - len(rest) - bool(rest)])
    args.rest = rest
    if args.action == 'experiment':
        return run_experiment(args)
    dist = distributed.Distributed.create(args.communicator)
    with distributed.abort_on_error(dist):
        x, y = make_data(args.n, args.seed + 1)
        result = {}
        if args.action == 'fail':
            dist.comm.mpi_comm.Barrier()
            if dist.rank == 1:
                raise RuntimeError('injected failure on rank 1')
            dist.comm.mpi_comm.Barrier()  # rank 0 would wait here forever without the abort
        elif args.action == 'shards':
            seen = []
            order = numpy.random.RandomState(args.seed).permutation(args.n)
            for b in range(0, args.n, args.batch):
                part, count = dist.local_part(order[b:b + args.batch])
                seen.extend(part[:count].tolist())
            every = dist.comm.mpi_comm.gather(seen)
            from branchynet.links import kernelthreads
            threads = dist.comm.mpi_comm.gather(
                (kernelthreads.threads(), kernelthreads._sharers, kernelthreads.usable_cores()))
            if dist.is_root:
                result = {'rank{}'.format(r): numpy.array(s, dtype=numpy.int64)
                          for r, s in enumerate(every)}
                result['kernel_threads'] = numpy.array(threads, dtype=numpy.int64)
        elif args.action == 'outputs':
            net = make_net(args.seed, args.opt)
            result['sm'] = numpy.stack(dist.get_SM(net, x, batchsize=16))
            result['logits'] = numpy.stack(dist.get_logits(net, x, batchsize=16))
            result['labels'] = dist.predict_main(net, x, batchsize=16)
            scores, preds = dist.exit_outputs(net, x)
            result['scores'], result['preds'] = scores, preds
            result['shard_len'] = numpy.array(len(x[dist.shard(len(x))]))
        else:
            net = make_net(args.seed + dist.rank, args.opt)  # rank 0's weights are broadcast
            if args.interrupt_after:
                import signal
                calls = {'n': 0}
                step = net.train_main if args.main else net.train

                def counting(xb, yb):
                    calls['n'] += 1
                    if calls['n'] == args.interrupt_after and dist.rank == 1:
                        os.kill(os.getpid(), signal.SIGINT)
                    return step(xb, yb)
                if args.main:
                    net.train_main = counting
                else:
                    net.train = counting
            from branchynet.training import checkpoint
            try:
                losses, accs, _ = training.train_exits(
                    net, x, y, main=args.main, batchsize=args.batch, num_epoch=args.epochs,
                    seed=args.seed, progress=False, snapshot=args.snapshot,
                    resume=args.resume, distributed=dist, **json.loads(args.recipe))
                result = dict(weights(net), losses=numpy.array(losses),
                              accs=numpy.array(accs))
            except checkpoint.TrainingInterrupted:
                result = {'interrupted': numpy.array(1)}
            result['comm_seconds'] = numpy.array(dist.comm_seconds)
        if dist.is_root:
            os.makedirs(args.out, exist_ok=True)
            numpy.savez(os.path.join(args.out, 'result.npz'), **result)
    return 0


def run_experiment(args):
    """The driver with every write under --out recorded, per rank, in
    DIR/writes_rank<R>.txt as ``ACTION PATH`` lines: write (atomic writes),
    lock (the run lock), clean (stale temporaries removed), makedirs, unlink;
    and, in DIR/tuned_rank<R>.txt, the result of the driver's allocator setting."""
    import contextlib
    from mpi4py import MPI
    from branchynet.io import fileio
    assert 'branchynet.driver.run' not in sys.modules  # so it imports the wrappers below
    os.makedirs(args.out, exist_ok=True)
    out = os.path.abspath(args.out)
    log = os.path.join(out, 'writes_rank{}.txt'.format(MPI.COMM_WORLD.Get_rank()))
    open(log, 'w').close()

    def record(action, path):
        path = os.path.abspath(os.fspath(path))
        if path == out or path.startswith(out + os.sep):
            with open(log, 'a') as f:
                f.write('{} {}\n'.format(action, path))

    def recorded_context(original):
        @contextlib.contextmanager
        def wrapper(path, *a, **k):
            record('write', path)
            with original(path, *a, **k) as target:
                yield target
        return wrapper

    def recorded_call(action, original, path_of=lambda *a, **k: a[0]):
        def wrapper(*a, **k):
            record(action, path_of(*a, **k))
            return original(*a, **k)
        return wrapper
    fileio.atomic_write = recorded_context(fileio.atomic_write)
    fileio.atomic_path = recorded_context(fileio.atomic_path)
    fileio.remove_stale_temporaries = recorded_call('clean', fileio.remove_stale_temporaries)
    fileio.RunLock.acquire = recorded_call('lock', fileio.RunLock.acquire,
                                           lambda lock: lock.folder)
    os.makedirs = recorded_call('makedirs', os.makedirs)
    os.unlink = recorded_call('unlink', os.unlink)
    from branchynet.training import runtime
    tune = runtime.tune_allocator

    def tuned():  # noted in DIR/tuned_rank<R>.txt: the driver tunes every rank
        applied = tune()
        with open(os.path.join(out, 'tuned_rank{}.txt'.format(
                MPI.COMM_WORLD.Get_rank())), 'w') as f:
            f.write(str(applied))
        return applied
    runtime.tune_allocator = tuned
    from branchynet.driver import cli
    return cli.main(args.rest)


if __name__ == '__main__':
    sys.exit(main())
