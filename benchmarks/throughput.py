"""(e) Main-network and early-exit throughput (samples/s) and their ratio, the
early-exit gain, of B-LeNet, B-AlexNet and B-ResNet-110 at batch sizes 1, 64
and 512, on every inference path, next to the arithmetic (MAC) limit of the
gain and the multiply-add rate each path reaches against this CPU's measured
peak (a large float32 matrix product), all from one run.

    python benchmarks/throughput.py [--networks lenet,alexnet,resnet] [--quick]
        [--model FILE.npz] [--alexnet-model FILE.npz] [--resnet-model FILE.npz]
        [--samples N] [--T 0.5 | --leave 0.9] [--batches 1,64,512] [--repeats 5]
        [--threads N] [--chainer] [--numba-kernels loop,gemm,tile] [--explain]
        [--onnx-forms sessions,graph] [--clock wall|cpu]

Batch 1 is timed per sample end to end as ``measurement.measure_main`` and
``measure_branchy`` do (transfer, trunk, heads, decision, answer) on a tenth
of the samples; larger batches through ``predict_main``/``predict`` on a
quarter (at least two batches; a batch larger than the samples is left out).
ONNX Runtime runs in two forms, each a path: ``onnx-sessions``, one session
per exit with the decisions in Python between them
(``OnnxBranchyNet(form='sessions')``, the default), and ``onnx-graph``, one
early-exit graph per network (one ``session.run`` a batch, decisions inside
the graph; ``form='graph'``); ``--onnx-forms`` picks them. The output ends with
numba's samples/s over each ONNX Runtime form's, per network, batch and
main/early (also in the summary line). ``--clock cpu`` (with ``--threads
1`` only: every path then runs in the calling thread) times the calling
thread's CPU time instead of the wall clock, so that time slices lost to
other processes on a loaded machine do not count (caches shared with them
still do).
Every sample (batch 1) or batch runs ``--repeats`` times on every path in
turn and counts with its fastest time. B-AlexNet and B-ResNet-110 run on
MNIST resized to 3x32x32 (``datasets.mnist32``) with the weights of
``--alexnet-model``/``--resnet-model`` (e.g. trained briefly with
``branchynet.driver.run --dataset mnist32``) or, without one, their random
initial weights. The numba path chooses each convolution's and linear
layer's kernel by measuring its kernels (generated loop, im2col + BLAS,
register tiles for convolutions: ``NumbaBranchyNet(kernels='auto')``);
``--numba-kernels loop`` times a numba path with every layer forced to that
kernel beside it (path ``numba-loop``), and ``--explain`` prints the numba
path's layers: kernel chosen and µs per call of each layer and kernel. The
processor model and its vector extensions (from /proc/cpuinfo) head the
output and end its summary line. Thresholds: B-LeNet ``--T`` (default 0.5, the driver's knee
on a trained model); the others (and B-LeNet when ``--leave`` is given
without ``--T``) the q-quantile of each early exit's entropy among the
samples reaching it, q = ``--leave`` (default 0.5): about that fraction
leaves there.
"""
import collections
import math
import os
import sys
import time

from quiet_blas import OPENBLAS_THREAD_TIMEOUT  # first: before numpy loads
from common import (ONNX_PATHS, blas_threads, engines, lenet, load, mnist, parser,
                    peak_gmacs, summary, test_subset)

import chainer  # noqa: E402  (after common: the compatibility shims come first)

import numpy

from branchynet import entropy
from branchynet.io import fileio
from branchynet.measures import costs
from branchynet.engines.base import as_engine
from branchynet.engines.numba import processor
from branchynet.validation import InputError

NETWORKS = {'lenet': 'lenet_mnist', 'alexnet': 'alex_cifar10', 'resnet': 'resnet_cifar10'}
#: test samples timed per network (``--quick``, full run)
SAMPLES = {'lenet': (1024, 10000), 'alexnet': (256, 2048), 'resnet': (64, 1024)}


def network(name, args, data):
    if name == 'lenet':
        return lenet(args, data)
    import importlib
    numpy.random.seed(0)
    net = importlib.import_module('networks.' + NETWORKS[name]).get_network()
    path = getattr(args, name + '_model')
    if path:
        if not os.path.exists(path):
            sys.exit('no model at {} (--{}-model)'.format(path, name))
        try:
            fileio.load_npz(path, net)
        except InputError as e:
            sys.exit('error: {}'.format(e))
    else:
        print('{}: random initial weights (no --{}-model)'.format(name, name))
    return net


def thresholds(name, args, net, x):
    early = net.numexits() - 1
    if name == 'lenet' and (args.T or args.leave is None):
        return args.T or [0.5]
    q = 0.5 if args.leave is None else args.leave
    ents = [entropy(sm) for sm in net.get_SM(x[:256])][:-1]
    ts, alive = [], numpy.ones(len(ents[0]), bool)
    for e in ents[:early]:  # the q-quantile among the samples that reach this exit
        ts.append(float(numpy.quantile(e[alive], q)) if alive.any() else 0.0)
        alive &= ~(e < ts[-1])
    return ts


#: the clock ``call`` reads: the wall clock, or (``--clock cpu``) the calling thread's CPU time
CLOCK = time.perf_counter


def call(engine, xb, ts, bs):
    """One timed call: the main network (``ts`` None) or early exit on ``xb``.
    Batch 1 as ``measurement.per_sample_loop`` times one sample: ``route``
    on the sent sample, in the test-mode context ``rates`` entered once (as
    that loop does, not per sample); larger batches through ``predict``."""
    start = CLOCK()
    if bs == 1:
        xb = engine.send(xb)
        engine.main_route(xb) if ts is None else engine.route(xb, ts)
    elif ts is None:
        engine.predict_main(xb, batchsize=bs)
    else:
        engine.predict(xb, ts, batchsize=bs)
    return CLOCK() - start


def rates(paths, x, ts, bs, repeats):
    """samples/s per (path, 'main'|'early'): every batch of ``x`` is timed
    ``repeats`` times on every path in turn and counts with its fastest time,
    so a time slice lost to another process does not count. The order of
    the paths turns by one each repeat and batch, so that no path always
    runs right after the same other one (the one after the fast path finds
    the caches full of its buffers: a few µs at batch 1)."""
    total = collections.defaultdict(float)
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        for i in range(0, len(x) - bs + 1, bs):
            xb = x[i:i + bs]
            best = collections.defaultdict(lambda: math.inf)
            for r in range(repeats):
                turn = (i // bs + r) % len(paths)
                for name, engine in paths[turn:] + paths[:turn]:
                    for kind, t in (('main', None), ('early', ts)):
                        best[name, kind] = min(best[name, kind], call(engine, xb, t, bs))
            for key, v in best.items():
                total[key] += v
    n = (len(x) // bs) * bs
    return {key: n / v for key, v in total.items()}


def forced_numba(net, args):
    """``[('numba-KERNEL', engine)]`` for every ``--numba-kernels`` kernel."""
    kernels = [k.strip() for k in (args.numba_kernels or '').split(',') if k.strip()]
    if not kernels:
        return []
    from branchynet.engines.numba import NumbaBranchyNet
    return [('numba-' + k, NumbaBranchyNet(net, threads=args.threads, kernels=k))
            for k in kernels]


def measure(name, args, data, batches):
    """One network's rows: ``(paths, rates, limit, macs)``, ``rates[path, bs,
    kind]`` in samples/s; ``macs``: (main network, early exit) per sample."""
    net = network(name, args, data)
    x, _ = test_subset(args, data, *SAMPLES[name])
    x1 = x[:args.batch1_samples or max(16, len(x) // 10)]
    ts = thresholds(name, args, net, x)
    _, exits = net.predict(x, ts, batchsize=256)
    counts = numpy.bincount(exits, minlength=net.numexits())
    c = costs.exit_costs(net)
    limit = costs.arithmetic_limit_gain(c, counts)
    expected_macs = costs.expected_cost(c['path_macs'], counts / counts.sum())
    print('{}: T={} exits={} ({:.1f} % at exit 1); MACs/sample main {:.3g}, early exit '
          '{:.3g}; arithmetic limit of the gain {:.2f}x'.format(
              name, [round(t, 4) for t in ts], counts.tolist(),
              100. * counts[0] / counts.sum(), c['main_macs'], expected_macs, limit))
    paths = [(path, as_engine(net, engine))  # Chainer's: the model's own engine
             for path, engine in engines(net, chainer=args.chainer, threads=args.threads,
                                         onnx_forms=args.onnx_forms)]
    paths += forced_numba(net, args)
    if args.explain:
        for path, engine in paths:
            if hasattr(engine, 'explain'):
                print('{} path on {}, every layer timed alone:'.format(path, name))
                print(engine.explain(measure=True))
    for path, engine in paths:  # every path answers as predict (tested; checked here too)
        same = (engine.predict(x[:256], ts)[1] == exits[:256]).mean()
        if same < 0.999:
            sys.exit('{} path: {:.1%} of the exits of predict on {}'.format(path, same, name))
    found = {}
    with blas_threads(args.threads):
        for bs in batches:
            xs = x1 if bs == 1 else x[:max(2 * bs, len(x) // 4)]
            if len(xs) < bs:
                print('{}: batch {} left out ({} samples)'.format(name, bs, len(xs)))
                continue
            for (path, kind), r in rates(paths, xs, ts, bs, args.repeats).items():
                found[path, bs, kind] = r
    return [path for path, _ in paths], found, limit, (c['main_macs'], expected_macs), \
        100. * counts[0] / counts.sum()


def main():
    p = parser(__doc__.splitlines()[0])
    p.add_argument('--networks', default='lenet,alexnet,resnet',
                   help='comma-separated, of: ' + ', '.join(NETWORKS))
    p.add_argument('--alexnet-model', default=None, help='B-AlexNet weights (npz, mnist32)')
    p.add_argument('--resnet-model', default=None, help='B-ResNet-110 weights (npz, mnist32)')
    p.add_argument('--T', type=float, nargs=1, default=None,
                   help='B-LeNet\'s entropy threshold (default 0.5)')
    p.add_argument('--leave', type=float, default=None,
                   help='thresholds at which about this fraction of the samples reaching '
                        'each early exit leave there (default 0.5; B-LeNet: --T)')
    p.add_argument('--batches', default='1,64,512')
    p.add_argument('--repeats', type=int, default=5,
                   help='times each batch (or sample) runs on each path, interleaved; '
                        'the fastest counts (a loaded machine then still shows what a '
                        'path can do)')
    p.add_argument('--batch1-samples', type=int, default=None,
                   help='samples timed one by one at batch 1 per round (default: a tenth)')
    p.add_argument('--chainer', action='store_true', help='time plain Chainer too (slow)')
    p.add_argument('--numba-kernels', default=None,
                   help='also time the numba path with every layer forced to these kernels '
                        '(comma-separated, of: loop, gemm, tile)')
    p.add_argument('--explain', action='store_true',
                   help='print the numba path\'s layers: kernel chosen, µs per call')
    p.add_argument('--threads', type=int, default=None,
                   help='threads of every path (BLAS, ONNX Runtime, numba); default: one '
                        'per core on every path (benchmarks/common.py path_threads)')
    p.add_argument('--onnx-forms', default='sessions,graph',
                   help='OnnxBranchyNet forms timed, comma-separated, of: sessions (path '
                        'onnx-sessions), graph (path onnx-graph)')
    p.add_argument('--clock', choices=('wall', 'cpu'), default='wall',
                   help='wall clock, or the calling thread\'s CPU time (needs --threads 1)')
    args = p.parse_args()
    if args.clock == 'cpu':
        if args.threads != 1:
            p.error('--clock cpu times the calling thread only: it needs --threads 1')
        global CLOCK
        CLOCK = time.thread_time
    args.onnx_forms = [f.strip() for f in args.onnx_forms.split(',') if f.strip()]
    if not args.onnx_forms or any(f not in ONNX_PATHS for f in args.onnx_forms):
        p.error('--onnx-forms: some of sessions, graph, got {!r}'.format(
            ','.join(args.onnx_forms)))
    names = [n.strip() for n in args.networks.split(',') if n.strip()]
    unknown = [n for n in names if n not in NETWORKS]
    if unknown or not names:
        p.error('--networks: unknown {} (expected some of {})'.format(
            ', '.join(unknown) or 'nothing', ', '.join(NETWORKS)))
    try:
        batches = [int(b) for b in args.batches.split(',')]
    except ValueError:
        batches = []
    if not batches or min(batches) < 1:
        p.error('--batches: positive integers separated by commas, got {!r}'.format(
            args.batches))
    if args.repeats < 1:
        p.error('--repeats must be at least 1, got {}'.format(args.repeats))
    bad = [k for k in (args.numba_kernels or '').split(',')
           if k.strip() not in ('', 'loop', 'gemm', 'tile')]
    if bad:
        p.error('--numba-kernels: unknown {} (expected some of loop, gemm, tile)'.format(
            ', '.join(bad)))
    model, vector = processor()
    print('processor: {}; vector extensions: {}'.format(model, ' '.join(vector) or 'none found'))
    print('OpenBLAS idle threads spin 2**{} cycles (OPENBLAS_THREAD_TIMEOUT)'.format(
        OPENBLAS_THREAD_TIMEOUT))
    digits = mnist()
    loads = [load()]
    with blas_threads(args.threads):
        peak = [peak_gmacs()]
    results = {}
    for name in names:
        data = digits
        if name != 'lenet':  # only the test images it times, resized
            from datasets import mnist32
            n = args.samples or SAMPLES[name][1]
            data = (mnist32.to_cifar_shape(digits[0][:1]), digits[1][:1],
                    mnist32.to_cifar_shape(digits[2][:n]), digits[3][:n])
        results[name] = measure(name, args, data, batches)
    with blas_threads(args.threads):
        peak.append(peak_gmacs())
    loads.append(load())
    peak = max(peak)
    print()
    print('CPU peak {:.1f} G multiply-adds/s (float32 matmul, {} threads); load average '
          '{:.1f} -> {:.1f}; every batch the best of {} interleaved repeats; clock: {}'.format(
              peak, args.threads or 'all', loads[0], loads[1], args.repeats,
              'the calling thread\'s CPU time' if args.clock == 'cpu' else 'wall'))
    row = '{:>8s} {:>13s} {:>6s} {:>11s} {:>11s} {:>7s} {:>7s} {:>8s} {:>9s} {:>9s} {:>7s} ' \
        '{:>7s} {:>9s}'
    print(row.format('network', 'path', 'batch', 'main /s', 'early /s', 'gain', 'limit',
                     '% limit', 'GMAC/s m', 'GMAC/s e', '%peak m', '%peak e', 'ms/sample'))
    print('processor: {}; vector extensions: {}'.format(model, ' '.join(vector) or 'none found'))
    out = {'peak_gmacs': peak}
    ratios = []
    for name in names:
        paths, found, limit, (main_macs, early_macs), exit1 = results[name]
        out['{}_limit'.format(name)] = limit
        out['{}_exit1_pct'.format(name)] = exit1
        for bs in batches:
            for path in paths:
                if (path, bs, 'main') not in found:
                    continue
                m, e = found[path, bs, 'main'], found[path, bs, 'early']
                gain = e / m
                gm, ge = m * main_macs / 1e9, e * early_macs / 1e9
                print('{:>8s} {:>13s} {:6d} {:11.0f} {:11.0f} {:6.2f}x {:6.2f}x {:7.0f}% '
                      '{:9.2f} {:9.2f} {:6.1f}% {:6.1f}% {:>9s}'.format(
                          name, path, bs, m, e, gain, limit, 100. * gain / limit, gm, ge,
                          100. * gm / peak, 100. * ge / peak,
                          '{:.4f}'.format(1000. / e) if bs == 1 else ''))
                key = '{}_{}_bs{}'.format(name, path, bs)
                out[key + '_main'] = m
                out[key + '_early'] = e
                out[key + '_gain'] = gain
                out[key + '_gmacs_main'] = gm
                out[key + '_gmacs_early'] = ge
        for onnx in (p for p in paths if p in ONNX_PATHS.values()):
            for path in paths:
                if path != onnx and (onnx, 1, 'early') in found and \
                        (path, 1, 'early') in found:
                    out['{}_{}_vs_{}_latency'.format(name, path, onnx)] = \
                        found[onnx, 1, 'early'] / found[path, 1, 'early']
            for bs in batches:
                for kind in ('main', 'early'):
                    if ('numba', bs, kind) in found and (onnx, bs, kind) in found:
                        ratio = found['numba', bs, kind] / found[onnx, bs, kind]
                        ratios.append((name, onnx, bs, kind, ratio))
                        out['{}_numba_vs_{}_bs{}_{}'.format(name, onnx, bs, kind)] = ratio
    if ratios:
        print('numba samples/s over ONNX Runtime\'s (the same threads on both):')
        for name, onnx, bs, kind, ratio in ratios:
            print('{:>8s} {:>13s} {:6d} {:>5s} {:6.2f}x'.format(name, onnx, bs, kind, ratio))
    out['processor'] = '"{}"'.format(model)
    out['vector_extensions'] = ','.join(vector) or 'none'
    summary(**{k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else v)
               for k, v in out.items()})


if __name__ == '__main__':
    main()
