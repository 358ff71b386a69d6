"""(e) Main-network and early-exit throughput (samples/s) and their ratio, the
early-exit gain, at batch sizes 1, 64 and 512, on every inference path, next
to the arithmetic (MAC) limit of the gain and the multiply-add rate each path
reaches against this CPU's measured peak (a large float32 matrix product).

    python benchmarks/throughput.py [--network lenet|alexnet|resnet] [--quick]
        [--model FILE.npz] [--samples N] [--T 0.5 ... | --leave 0.9] [--repeats 5] [--chainer]

Batch 1 is timed per sample end to end as ``utils.measure_main`` and
``measure_branchy`` do (transfer, trunk, heads, decision, answer) on a tenth
of the samples; larger batches through ``predict_main``/``predict`` on a
quarter (at least two batches). Every sample (batch 1) or batch runs
``--repeats`` times on every path in turn and counts with its fastest time. B-AlexNet
and B-ResNet-110 run on MNIST resized to 3x32x32 (``datasets.mnist32``) with
the weights of ``--model`` (e.g. trained briefly with ``branchynet.experiment
--dataset mnist32``) or, without one, their random initial weights.
Thresholds: ``--T`` (one for every early exit, or one each); or ``--leave
q``: the q-quantile of each early exit's entropy among the samples reaching
it (about that fraction leaves there); default 0.5 for B-LeNet (the
driver's knee on a trained model), else ``--leave 0.5``.
"""
import collections
import math
import time

from common import (blas_threads, engines, lenet, load, mnist, parser, peak_gmacs,
                    summary, test_subset)

import chainer  # noqa: E402  (after common: the compatibility shims come first)

import numpy

from branchynet import costs, entropy, fileio

NETWORKS = {'lenet': 'lenet_mnist', 'alexnet': 'alex_cifar10', 'resnet': 'resnet_cifar10'}


def network(args, data):
    if args.network == 'lenet':
        return lenet(args, data)
    import importlib
    numpy.random.seed(0)
    net = importlib.import_module('networks.' + NETWORKS[args.network]).get_network()
    if args.model:
        fileio.load_npz(args.model, net)
    else:
        print('{}: random initial weights (no --model)'.format(args.network))
    return net


def thresholds(args, net, x):
    early = net.numexits() - 1
    if args.T:
        return (args.T * early)[:early] if len(args.T) == 1 else args.T
    if args.network == 'lenet' and args.leave is None:
        return [0.5]
    q = 0.5 if args.leave is None else args.leave
    ents = [entropy(sm) for sm in net.get_SM(x[:256])][:-1]
    ts, alive = [], numpy.ones(len(ents[0]), bool)
    for e in ents:  # the q-quantile among the samples that reach this exit
        ts.append(float(numpy.quantile(e[alive], q)) if alive.any() else 0.0)
        alive &= ~(e < ts[-1])
    return ts


def call(engine, xb, ts, bs):
    """One timed call: the main network (``ts`` None) or early exit on ``xb``.
    Batch 1 as ``utils.measure_*`` times one sample: ``_route`` on the sent
    sample; larger batches through ``predict``."""
    start = time.perf_counter()
    if bs == 1:
        xb = engine.send(xb)
        with chainer.using_config('train', False), chainer.no_backprop_mode():
            engine._main_route(xb) if ts is None else engine._route(xb, ts)
    elif ts is None:
        engine.predict_main(xb, batchsize=bs)
    else:
        engine.predict(xb, ts, batchsize=bs)
    return time.perf_counter() - start


def rates(paths, x, ts, bs, repeats):
    """samples/s per (path, 'main'|'early'): every batch of ``x`` is timed
    ``repeats`` times on every path in turn and counts with its fastest time,
    so a time slice lost to another process does not count."""
    total = collections.defaultdict(float)
    for i in range(0, len(x) - bs + 1, bs):
        xb = x[i:i + bs]
        best = collections.defaultdict(lambda: math.inf)
        for _ in range(repeats):
            for name, engine in paths:
                for kind, t in (('main', None), ('early', ts)):
                    best[name, kind] = min(best[name, kind], call(engine, xb, t, bs))
        for key, v in best.items():
            total[key] += v
    n = (len(x) // bs) * bs
    return {key: n / v for key, v in total.items()}


def main():
    p = parser(__doc__.splitlines()[0])
    p.add_argument('--network', choices=sorted(NETWORKS), default='lenet')
    p.add_argument('--T', type=float, nargs='*', default=None,
                   help='entropy thresholds of the early exits (one for all, or one each)')
    p.add_argument('--leave', type=float, default=None,
                   help='instead of --T: thresholds at which about this fraction of the '
                        'samples reaching each early exit leave there')
    p.add_argument('--batches', default='1,64,512')
    p.add_argument('--repeats', type=int, default=5,
                   help='times each batch (or sample) runs on each path, interleaved; '
                        'the fastest counts (a loaded machine then still shows what a '
                        'path can do)')
    p.add_argument('--batch1-samples', type=int, default=None,
                   help='samples timed one by one at batch 1 per round (default: a tenth)')
    p.add_argument('--chainer', action='store_true', help='time plain Chainer too (slow)')
    p.add_argument('--threads', type=int, default=None,
                   help='threads of every path (BLAS, ONNX Runtime, numba); default: '
                        'ONNX Runtime 1 (its engine\'s default), the others one per core')
    args = p.parse_args()
    data = mnist()
    if args.network != 'lenet':
        from datasets import mnist32
        data = (mnist32.to_cifar_shape(data[0][:1]), data[1][:1],
                mnist32.to_cifar_shape(data[2]), data[3])
    net = network(args, data)
    full = {'lenet': 10000, 'alexnet': 2048, 'resnet': 128}[args.network]
    quick = {'lenet': 1024, 'alexnet': 256, 'resnet': 32}[args.network]
    x, _ = test_subset(args, data, quick, full)
    x1 = x[:args.batch1_samples or max(16, len(x) // 10)]
    ts = thresholds(args, net, x)
    _, exits = net.predict(x, ts, batchsize=256)
    counts = numpy.bincount(exits, minlength=net.numexits())
    c = costs.exit_costs(net)
    limit = costs.arithmetic_limit_gain(c, counts)
    expected_macs = costs.expected_cost(c['path_macs'], counts / counts.sum())
    print('{}: T={} exits={} ({:.1f} % at exit 1); MACs/sample main {:.3g}, early exit '
          '{:.3g}; arithmetic limit of the gain {:.2f}x'.format(
              args.network, [round(t, 4) for t in ts], counts.tolist(),
              100. * counts[0] / counts.sum(), c['main_macs'], expected_macs, limit))
    paths = engines(net, chainer=args.chainer, threads=args.threads)
    batches = [int(b) for b in args.batches.split(',')]
    loads = [load()]
    best = {}
    with blas_threads(args.threads):
        peak = [peak_gmacs()]
        for bs in batches:
            xs = x1 if bs == 1 else x[:max(2 * bs, len(x) // 4)]
            for (name, kind), r in rates(paths, xs, ts, bs, args.repeats).items():
                best[name, bs, kind] = r
        peak.append(peak_gmacs())
    loads.append(load())
    peak = max(peak)
    print('CPU peak {:.1f} G multiply-adds/s (float32 matmul, {} threads); load average '
          '{:.1f} -> {:.1f}; every batch the best of {} interleaved repeats'.format(
              peak, args.threads or 'all', loads[0], loads[1], args.repeats))
    head = '{:>7s} {:>6s} {:>11s} {:>11s} {:>7s} {:>9s} {:>10s} {:>10s} {:>9s}'
    print(head.format('path', 'batch', 'main /s', 'early /s', 'gain', '% limit',
                      'GMAC/s m', 'GMAC/s e', 'knee ms'))
    out = {'limit': limit, 'peak_gmacs': peak, 'exit1_pct': 100. * counts[0] / counts.sum()}
    for bs in batches:
        for name, _ in paths:
            m, e = best[name, bs, 'main'], best[name, bs, 'early']
            gain = e / m
            print('{:>7s} {:6d} {:11.0f} {:11.0f} {:6.2f}x {:8.0f}% {:10.2f} {:10.2f} {:>9s}'.format(
                name, bs, m, e, gain, 100. * gain / limit, m * c['main_macs'] / 1e9,
                e * expected_macs / 1e9, '{:.4f}'.format(1000. / e) if bs == 1 else ''))
            out['{}_bs{}_main'.format(name, bs)] = m
            out['{}_bs{}_early'.format(name, bs)] = e
            out['{}_bs{}_gain'.format(name, bs)] = gain
    for name, _ in paths:
        if name != 'onnx' and ('onnx', 1, 'early') in best:
            out['{}_vs_onnx_latency'.format(name)] = best['onnx', 1, 'early'] / \
                best[name, 1, 'early']
    summary(**{k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else v)
               for k, v in out.items()})


if __name__ == '__main__':
    main()
