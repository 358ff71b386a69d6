"""Training epoch time of B-LeNet: main-only and joint, and what the CPU
speed-ups (branchynet.links.cpukernels, branchynet.training.runtime.tune_allocator) bring.

    python benchmarks/joint_epoch.py [--quick] [--samples N] [--full] [--repeats R]

Each setting runs in a fresh process (allocator options are per process),
the settings interleaved round by round, the best of the rounds kept:

    chainer        Chainer's convolution and pooling, glibc's default allocator
    chainer+alloc  the same with the allocator tuned
    kernels        our convolution/pooling kernels, default allocator
    kernels+alloc  both (what the driver and get_results.sh use)

Every setting starts from the same seeded weights and data order; the
final weights of each are compared with the first setting's.
"""
import json
import os
import subprocess
import sys

from common import parser, summary

SETTINGS = {'chainer': (False, False), 'chainer+alloc': (False, True),
            'kernels': (True, False), 'kernels+alloc': (True, True)}

CHILD = r'''
import json, sys, time
sys.path.insert(0, {root!r})
import branchynet, numpy
from branchynet.links import cpukernels
from branchynet.training import loop as training, runtime
from datasets import mnist
from networks import lenet_mnist
if {alloc}:
    runtime.tune_allocator()
x, y = mnist.get_data()[:2]
x, y = x[:{n}], y[:{n}]
numpy.random.seed(0)
net = lenet_mnist.get_network()
times = {{}}
import contextlib
with (contextlib.nullcontext() if {kernels} else cpukernels.disabled()):
    for phase, main in (('main', True), ('joint', False)):
        t = time.perf_counter()
        training.train_exits(net, x, y, main=main, batchsize=512, num_epoch=1, seed=0,
                             progress=False)
        times[phase] = time.perf_counter() - t
weights = numpy.concatenate([p.array.ravel() for _, p in sorted(net.namedparams())])
numpy.save({weights_path!r}, weights)
print(json.dumps(times))
'''


def run_setting(name, n, weights_path):
    kernels, alloc = SETTINGS[name]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = CHILD.format(root=root, alloc=alloc, kernels=kernels, n=n, weights_path=weights_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith('MALLOC_')}
    out = subprocess.run([sys.executable, '-c', code], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    import tempfile

    import numpy
    p = parser(__doc__.splitlines()[0])
    p.add_argument('--full', action='store_true', help='all 60,000 training images')
    p.add_argument('--repeats', type=int, default=None, help='rounds (best kept)')
    p.add_argument('--settings', default=','.join(SETTINGS),
                   help='comma-separated subset of: ' + ', '.join(SETTINGS))
    args = p.parse_args()
    n = 60000 if args.full else (args.samples or (5120 if args.quick else 15360))
    repeats = args.repeats or 2
    names = [s for s in args.settings.split(',') if s]
    unknown = [s for s in names if s not in SETTINGS]
    if unknown:
        p.error('unknown settings {}; expected some of: {}'.format(unknown, ', '.join(SETTINGS)))
    best = {name: {'main': float('inf'), 'joint': float('inf')} for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            for name in names:
                times = run_setting(name, n, os.path.join(tmp, name + '.npy'))
                for phase in times:
                    best[name][phase] = min(best[name][phase], times[phase])
                print('round {} {:14s} main {:6.2f} s  joint {:6.2f} s'.format(
                    r + 1, name, times['main'], times['joint']), flush=True)
        reference = numpy.load(os.path.join(tmp, names[0] + '.npy'))
        diffs = {name: float(numpy.abs(numpy.load(os.path.join(tmp, name + '.npy'))
                                       - reference).max()) for name in names}
    base = best[names[0]]
    print('\n{} training images, batch 512, best of {} rounds (per 60,000 images in '
          'brackets):'.format(n, repeats))
    print('{:14s} {:>10s} {:>10s} {:>8s} {:>8s} {:>8s} {:>22s}'.format(
        'setting', 'main s', 'joint s', 'joint/main', 'main x', 'joint x',
        'max |w - w_' + names[0] + '|'))
    for name in names:
        b = best[name]
        print('{:14s} {:10.2f} {:10.2f} {:8.3f} {:8.2f} {:8.2f} {:22.3g}   [{:.1f} / {:.1f} s]'
              .format(name, b['main'], b['joint'], b['joint'] / b['main'],
                      base['main'] / b['main'], base['joint'] / b['joint'], diffs[name],
                      b['main'] * 60000 / n, b['joint'] * 60000 / n))
    last = best[names[-1]]
    summary(samples=n, main_epoch_s=last['main'], joint_epoch_s=last['joint'],
            joint_over_main=last['joint'] / last['main'],
            joint_speedup=base['joint'] / last['joint'])


if __name__ == '__main__':
    main()
