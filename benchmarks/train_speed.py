"""Training-step speed of B-LeNet, B-AlexNet and B-ResNet-110 on the CPU: this
project with its CPU training kernels, with them off (Chainer's functions),
and PyTorch eager and ``torch.compile`` on the same layers, in one run.

    python benchmarks/train_speed.py [--networks lenet,alexnet,resnet] [--rounds R]
        [--threads T] [--torch-python PYTHON] [--settings kernels,chainer,torch,compile]
        (also: kernels-256bit, the kernels held to 256-bit vectors; kernels-direct,
        the kernels without the Winograd convolution)
        [--baseline ROOT] (adds kernels-baseline: the kernels of the checkout at
        ROOT, such as a git worktree of an earlier commit, in the same rounds)

Each setting runs in a process of its own, started once and warmed up (kernels
compiled, ``torch.compile`` traced); the parent then asks each process in turn
for a few main-network steps and a few joint steps (every exit's loss), round
by round, so every setting sees the same machine load. A step is Adam's whole
update on random data at the paper's batch size (B-LeNet and B-AlexNet 512,
B-ResNet-110 64). Every setting gets the same threads. Printed per step:
ms per sample (median of the rounds, with their range), minutes per training
epoch (60,000 images for B-LeNet, 50,000 for the CIFAR networks), the G
multiply-adds/s achieved (3 x the forward multiply-adds of the step's exits
per sample, over the step time) and its share of the float32 matmul peak
measured in the same run, each time over PyTorch eager's (ratio of the
medians), and each setting's time over ``torch.compile``'s round by round
(median, with the fastest and slowest round's ratio: on a host whose speed
drifts, these ratios are steadier than the times).

PyTorch: ``--torch-python`` names an interpreter with torch (requirements/bench.txt)
and numpy; without one that imports torch, those settings are left out, said once.
"""
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

from common import blas_threads, load, parser, path_threads, peak_gmacs, summary  # noqa: E402

NETWORKS = {'lenet': ('lenet_mnist', 512, 60000), 'alexnet': ('alex_cifar10', 512, 50000),
            'resnet': ('resnet_cifar10', 64, 50000)}
SETTINGS = ('kernels', 'chainer', 'torch', 'compile', 'kernels-256bit', 'kernels-direct',
            'kernels-baseline')
#: settings run by default ('kernels-256bit': the kernels held to 256-bit
#: vectors, as on a processor without AVX-512 or as before the 512-bit forms;
#: 'kernels-direct': every stride-1 convolution on the direct kernel, as
#: before the Winograd kernel; 'kernels-baseline': another checkout's code,
#: with --baseline)
DEFAULT_SETTINGS = SETTINGS[:4]

CHAINER_CHILD = r'''
import contextlib, json, sys, time
sys.path.insert(0, {root!r})
import branchynet, numpy
from branchynet.links import cpukernels
from branchynet.training import runtime
runtime.tune_allocator()
module = __import__('networks.' + {module!r}, fromlist=['get_network'])
numpy.random.seed(0)
net = module.get_network()
rng = numpy.random.RandomState(0)
x = rng.rand({batch}, *net.input_shape).astype(numpy.float32)
t = rng.randint(0, 10, {batch}).astype(numpy.int32)
net.training()
context = contextlib.nullcontext() if {kernels} else cpukernels.disabled()
steps = {{'main': net.train_main, 'joint': net.train}}
with context:
    for step in steps.values():
        step(x, t)
    print('ready', flush=True)
    for line in sys.stdin:
        name, count = line.split()
        start = time.perf_counter()
        for _ in range(int(count)):
            steps[name](x, t)
        print(json.dumps((time.perf_counter() - start) / int(count)), flush=True)
'''

TORCH_CHILD = r'''
import json, sys, time
import numpy, torch
from torch import nn
import torch.nn.functional as F
torch.set_num_threads({threads})
torch.manual_seed(0)
spec = json.loads({spec!r})


class ResBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1)
        self.bn1 = nn.BatchNorm2d(cout, eps=2e-5)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(cout, eps=2e-5)
        self.cin, self.cout, self.stride = cin, cout, stride

    def forward(self, x):
        h = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        s = x[:, :, ::self.stride, ::self.stride] if self.stride != 1 else x
        if self.cout != self.cin:
            s = F.pad(s, (0, 0, 0, 0, 0, self.cout - self.cin))
        return F.relu(h + s)


def layer(kind, *a):
    if kind == 'conv':
        cin, cout, k, stride, pad, bias = a
        return nn.Conv2d(cin, cout, k, stride, pad, bias=bias)
    if kind == 'bn':
        return nn.BatchNorm2d(a[0], eps=2e-5)
    if kind == 'linear':
        return nn.Sequential(nn.Flatten(), nn.Linear(*a))
    if kind == 'relu':
        return nn.ReLU()
    if kind == 'maxpool':  # Chainer's cover_all is ceil_mode
        k, s, p = a
        return nn.MaxPool2d(k, s, p, ceil_mode=True)
    if kind == 'avgpool':
        return nn.AvgPool2d(a[0], a[1])
    if kind == 'lrn':  # Chainer sums alpha * x^2; PyTorch alpha / n * x^2
        n, alpha, beta, k = a
        return nn.LocalResponseNorm(n, alpha * n, beta, k)
    if kind == 'dropout':
        return nn.Dropout(a[0])
    if kind == 'resblock':
        return ResBlock(*a)
    raise ValueError(kind)


segments = nn.ModuleList(nn.Sequential(*[layer(*l) for l in s]) for s in spec['segments'])
heads = nn.ModuleList(nn.Sequential(*[layer(*l) for l in h]) for h in spec['heads'])
model = nn.ModuleList([segments, heads]).train()
opt = torch.optim.Adam(model.parameters(), lr=1e-3)


def main_loss(x, t):
    h = x
    for s in segments:
        h = s(h)
    return F.cross_entropy(heads[-1](h), t)


def joint_loss(x, t):
    h, loss = x, 0
    for s, head in zip(segments, heads):
        h = s(h)
        loss = loss + F.cross_entropy(head(h), t)
    return loss


losses = {{'main': main_loss, 'joint': joint_loss}}
if {compiled}:
    losses = {{k: torch.compile(v) for k, v in losses.items()}}
rng = numpy.random.RandomState(0)
x = torch.from_numpy(rng.rand({batch}, *spec['input_shape']).astype(numpy.float32))
t = torch.from_numpy(rng.randint(0, 10, {batch}).astype(numpy.int64))


def step(name):
    opt.zero_grad(set_to_none=True)
    losses[name](x, t).backward()
    opt.step()


for name in losses:
    step(name)
    step(name)
print('ready', flush=True)
for line in sys.stdin:
    name, count = line.split()
    start = time.perf_counter()
    for _ in range(int(count)):
        step(name)
    print(json.dumps((time.perf_counter() - start) / int(count)), flush=True)
'''


def layer_spec(link):
    """One layer of the network as the PyTorch child builds it."""
    import chainer.functions as F
    import chainer.links as L
    from branchynet import FL
    from networks.resnet_cifar10 import ResBlock
    if type(link) is L.Convolution2D:
        o, c, k, _ = link.W.shape
        return ['conv', c, o, k, link.stride[0], link.pad[0], link.b is not None]
    if type(link) is L.BatchNormalization:
        return ['bn', link.gamma.shape[0]]
    if type(link) is L.Linear:
        return ['linear', link.W.shape[1], link.W.shape[0]]
    if isinstance(link, ResBlock):
        return ['resblock', link.in_channels, link.out_channels, link.stride]
    if isinstance(link, FL):
        a = link.bound_arguments()
        if link.fn is F.relu:
            return ['relu']
        if link.fn is F.max_pooling_2d:
            return ['maxpool', a['ksize'], a['stride'] or a['ksize'], a['pad']]
        if link.fn is F.average_pooling_2d:
            return ['avgpool', a['ksize'], a['stride'] or a['ksize']]
        if link.fn is F.local_response_normalization:
            return ['lrn', a['n'], a['alpha'], a['beta'], a['k']]
        if link.fn is F.dropout:
            return ['dropout', a['ratio']]
    raise ValueError('train_speed: no PyTorch layer for {!r}'.format(link))


def network_facts(module_name):
    """(layer spec for PyTorch, forward multiply-adds per sample of the main
    network and of every exit together)."""
    import branchynet  # noqa: F401
    from branchynet.measures import costs
    module = __import__('networks.' + module_name, fromlist=['get_network'])
    net = module.get_network()
    segments = [[layer_spec(link) for link in net.trunk[slice(*net.segment_bounds(n))]]
                for n in range(net.numexits())]
    heads = [[layer_spec(link) for link in net.head_links(n)] for n in range(net.numexits())]
    c = costs.exit_costs(net)
    spec = {'input_shape': list(net.input_shape), 'segments': segments, 'heads': heads}
    return spec, {'main': c['main_macs'],
                  'joint': sum(c['segment_macs']) + sum(c['head_macs'])}


def start(setting, module_name, batch, threads, spec, torch_python, baseline=None):
    # the same threads, allocator setting (what runtime.tune_allocator does) and
    # idle-thread policy for every setting; the kernels explicitly on or off
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), BRANCHYNET_TRAIN_THREADS=str(threads),
               MALLOC_MMAP_THRESHOLD_=str(2 ** 30), MALLOC_TRIM_THRESHOLD_=str(2 ** 30),
               OMP_WAIT_POLICY='PASSIVE', OPENBLAS_THREAD_TIMEOUT='4',
               BRANCHYNET_CPU_KERNELS='1' if setting.startswith('kernels') else '0')
    if setting == 'kernels-256bit':
        env['BRANCHYNET_VECTOR_BITS'] = '256'
    env['BRANCHYNET_WINOGRAD'] = '0' if setting == 'kernels-direct' else '1'
    if setting in ('kernels', 'chainer', 'kernels-256bit', 'kernels-direct', 'kernels-baseline'):
        root = baseline if setting == 'kernels-baseline' else ROOT
        code = CHAINER_CHILD.format(root=root, module=module_name, batch=batch,
                                    kernels=setting != 'chainer')
        python = sys.executable
    else:
        code = TORCH_CHILD.format(threads=threads, spec=json.dumps(spec), batch=batch,
                                  compiled=setting == 'compile')
        python = torch_python
    child = subprocess.Popen([python, '-c', code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, env=env, text=True)
    line = child.stdout.readline()
    if line.strip() != 'ready':
        child.kill()
        raise RuntimeError('{} did not start (exit status {})'.format(setting, child.wait()))
    return child


def round_ratios(times, reference):
    """Median, fastest and slowest of ``times[r] / reference[r]`` over the rounds
    ``r``: each round's settings ran one after the other, so a host that
    slows down for a while slows both sides of a ratio alike."""
    import numpy
    ratios = numpy.asarray(times, float) / numpy.asarray(reference, float)
    return float(numpy.median(ratios)), float(ratios.min()), float(ratios.max())


def ask(child, step, count):
    child.stdin.write('{} {}\n'.format(step, count))
    child.stdin.flush()
    return json.loads(child.stdout.readline())


def torch_available(python):
    return subprocess.run([python, '-c', 'import torch'], capture_output=True).returncode == 0


def main():
    import numpy
    from branchynet.engines.numba import processor
    p = parser(__doc__.splitlines()[0])
    p.add_argument('--networks', default='lenet,alexnet,resnet')
    p.add_argument('--rounds', type=int, default=3)
    p.add_argument('--steps', type=int, default=None,
                   help='steps per round and setting (default: 2, B-ResNet-110 1)')
    p.add_argument('--threads', type=int, default=None, help='threads of every setting '
                   '(default: one per core)')
    p.add_argument('--torch-python', default=sys.executable,
                   help='an interpreter with torch (default: this one)')
    p.add_argument('--settings', default=','.join(DEFAULT_SETTINGS),
                   help='any of ' + ', '.join(SETTINGS))
    p.add_argument('--baseline', default=None, metavar='ROOT',
                   help='a checkout of this project (an earlier commit) whose kernels run '
                   'as the setting kernels-baseline')
    args = p.parse_args()
    names = [n for n in args.networks.split(',') if n]
    settings = list(dict.fromkeys(s for s in args.settings.split(',') if s))  # each once
    if args.steps is not None and args.steps < 1:
        p.error('--steps must be >= 1')
    if args.baseline:
        if not os.path.isfile(os.path.join(args.baseline, 'branchynet', 'net.py')):
            p.error('--baseline {}: not a checkout of this project (no branchynet/net.py '
                    'there)'.format(args.baseline))
        args.baseline = os.path.abspath(args.baseline)
        settings = [s for s in settings if s != 'kernels-baseline'] + ['kernels-baseline']
    elif 'kernels-baseline' in settings:
        p.error('the setting kernels-baseline needs --baseline ROOT')
    bad = [n for n in names if n not in NETWORKS] + [s for s in settings if s not in SETTINGS]
    if bad or args.rounds < 1:
        p.error('unknown {} (networks: {}; settings: {}); --rounds >= 1'.format(
            ', '.join(bad) or 'nothing', ', '.join(NETWORKS), ', '.join(SETTINGS)))
    if ({'torch', 'compile'} & set(settings)) and not torch_available(args.torch_python):
        print('PyTorch settings left out: {} cannot import torch (pip install -r '
              'requirements/bench.txt)'.format(args.torch_python))
        settings = [s for s in settings if s not in ('torch', 'compile')]
    threads = path_threads(args.threads)
    model, vector = processor()
    print('processor: {}; vector extensions: {}; OPENBLAS_CORETYPE={}'.format(
        model, ' '.join(vector) or 'none found', os.environ.get('OPENBLAS_CORETYPE', 'unset')))
    print('threads of every setting: {}; load average {:.1f}'.format(threads, load()))
    with blas_threads(threads):
        peak = peak_gmacs()
    print('float32 matmul peak: {:.1f} G multiply-adds/s ({} threads)'.format(peak, threads))
    out = {'peak_gmacs': round(peak, 1)}
    for name in names:
        module_name, batch, epoch = NETWORKS[name]
        spec, macs = network_facts(module_name)
        count = args.steps or (1 if name == 'resnet' else 2)
        print('\n{} (batch {}, forward {:.1f} M multiply-adds per sample main, {:.1f} joint); '
              'starting and warming up: {}'.format(name, batch, macs['main'] / 1e6,
                                                   macs['joint'] / 1e6, ', '.join(settings)))
        children, times = {}, {}
        try:
            for s in settings:
                t0 = time.perf_counter()
                children[s] = start(s, module_name, batch, threads, spec, args.torch_python,
                                    args.baseline)
                print('  {} ready in {:.0f} s'.format(s, time.perf_counter() - t0), flush=True)
            for r in range(args.rounds):
                for step in ('main', 'joint'):
                    for s in settings:
                        times.setdefault((s, step), []).append(ask(children[s], step, count))
                print('  round {} of {} done'.format(r + 1, args.rounds), flush=True)
        finally:
            for child in children.values():
                child.kill()
        print('{:>8s} {:>6s} {:>9s} {:>22s} {:>9s} {:>8s} {:>7s} {:>9s} {:>24s}'.format(
            'network', 'step', 'setting', 'ms/sample (range)', 'min/epoch', 'GMAC/s',
            '% peak', '/ torch', '/ compile, by round'))
        for step in ('main', 'joint'):
            for s in settings:
                per = numpy.array(times[(s, step)]) / batch * 1e3
                med = float(numpy.median(per))
                gmacs = 3 * macs[step] / (med / 1e3) / 1e9
                base = times.get(('torch', step))
                ratio = med / (numpy.median(base) / batch * 1e3) if base else float('nan')
                compiled = times.get(('compile', step))
                by_round = '{:>10.2f} ({:.2f}-{:.2f})'.format(
                    *round_ratios(times[(s, step)], compiled)) if compiled else ''
                print('{:>8s} {:>6s} {:>9s} {:>8.2f} ({:>5.2f}-{:>5.2f}) {:>9.1f} {:>8.1f} '
                      '{:>6.1f}% {:>9.2f} {:>24s}'.format(
                          name, step, s, med, per.min(), per.max(), med * epoch / 6e4, gmacs,
                          100 * gmacs / peak, ratio, by_round))
                out['{}_{}_{}_ms'.format(name, step, s)] = round(med, 3)
    print('load average at the end {:.1f}'.format(load()))
    summary(**out)


if __name__ == '__main__':
    main()
