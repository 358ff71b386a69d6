"""Where a training step's time goes: per layer kind and pass (forward,
backward-data, backward-weight), for the paper's networks with the CPU
training kernels on (or off, ``--chainer``).

    python benchmarks/train_profile.py [--networks resnet,alexnet,lenet]
        [--steps S] [--threads T] [--chainer] [--clock wall|cpu]

Each function node's forward and backward are clocked by a Chainer function
hook, exclusive of the nodes it calls itself; nodes applied inside a backward
pass (Chainer's ReLU backward, for one, is a node of its own) count as that
backward pass. A convolution's backward is split into its input
gradient (backward-data) and the rest (backward-weight, with the bias sum);
to clock them apart, the direct kernels' two gradients run one after the
other over the batch here, where training runs both on each range of samples
(``links.directconv.backward``).
"rest of the step" is the step's time outside every node: Adam's update,
the loss bookkeeping and Python. Steps are Adam's whole update on random data
at the paper's batch sizes (as ``train_speed.py``), after two warm-up steps;
printed: ms per step and share of the step, per kind and pass, largest first.
``--clock cpu`` counts the process's CPU time (all threads) instead of wall
time: steadier on a loaded machine, but idle waits between threads are not
counted.
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

NETWORKS = {'lenet': ('lenet_mnist', 512), 'alexnet': ('alex_cifar10', 512),
            'resnet': ('resnet_cifar10', 64)}

#: function node labels by layer kind (anything else is shown by its label)
KINDS = {
    'convolution': ('DirectConvolution2D', 'Convolution2DCPU', 'Convolution2DFunction',
                    'Convolution2DGradW', 'Deconvolution2DFunction'),
    'batch normalisation': ('BatchNormalizationCPU', 'BatchNormalization',
                            'BatchNormalizationGrad', 'FixedBatchNormalization'),
    'max pooling': ('MaxPooling2DCPU', 'MaxPooling2D', 'MaxPooling2DGrad',
                    'MaxPooling2DWithIndexes', 'MaxPoolingND', 'MaxPoolingNDGrad'),
    'average pooling': ('AveragePooling2D', 'AveragePooling2DGrad', 'AveragePooling2DCPU'),
    'relu': ('ReLU', 'ReLUGrad2', 'ReLUGrad3'),
    'LRN': ('LocalResponseNormalization', 'LocalResponseNormalizationGrad',
            'LocalResponseNormalizationCPU'),
    'linear': ('LinearFunction', 'LinearGradData', 'LinearGradWeight'),
    'shortcut (subsample, zero channels)': ('ShortcutCPU', 'Concat', 'SplitAxis'),
    'addition': ('_ + _', 'Add', 'AddConstant'),
    'loss (softmax cross entropy)': ('SoftmaxCrossEntropy',
                                     '_SoftmaxCrossEntropyGrad_NoDoubleBackprop'),
    'dropout': ('Dropout',),
}
#: the nodes of Chainer's convolution backward, by pass
CONVOLUTION_GRADIENTS = {'Deconvolution2DFunction': 'backward-data',
                         'Convolution2DGradW': 'backward-weight'}
_KIND_OF = {label: kind for kind, labels in KINDS.items() for label in labels}


def kind_of(label):
    return _KIND_OF.get(label, label)


def clock(kind):
    return time.process_time if kind == 'cpu' else time.perf_counter


class PassTimer:
    """Exclusive time per (layer kind, pass), nested calls subtracted."""

    def __init__(self, now):
        self.now, self.totals, self.stack = now, {}, []

    def enter(self, key):
        self.stack.append([key, self.now(), 0.0])

    def inside_backward(self):
        """The key of the backward pass being clocked, if any."""
        for key, _, _ in reversed(self.stack):
            if key[1] != 'forward':
                return key
        return None

    def leave(self):
        key, start, inner = self.stack.pop()
        elapsed = self.now() - start
        self.totals[key] = self.totals.get(key, 0.0) + elapsed - inner
        if self.stack:
            self.stack[-1][2] += elapsed
        return elapsed


def hook_class():
    import chainer

    class Hook(chainer.FunctionHook):
        name = 'PassTimer'

        def __init__(self, timer):
            self.timer = timer

        def forward_preprocess(self, function, in_data):
            # a node applied inside a backward pass (ReLUGrad2, ...) is that
            # backward's; Chainer's convolution backward runs its two gradients
            # as nodes of their own
            outer = self.timer.inside_backward()
            if outer and outer[0] == 'convolution' and function.label in CONVOLUTION_GRADIENTS:
                outer = ('convolution', CONVOLUTION_GRADIENTS[function.label])
            self.timer.enter(outer or (kind_of(function.label), 'forward'))

        def forward_postprocess(self, function, in_data):
            self.timer.leave()

        def backward_preprocess(self, function, in_data, out_grad):
            kind = kind_of(function.label)
            # a convolution's backward: what its input gradient does not take
            self.timer.enter((kind, 'backward-weight' if kind == 'convolution' else 'backward'))

        def backward_postprocess(self, function, in_data, out_grad):
            self.timer.leave()
    return Hook


def time_convolution_parts(timer):
    """Clock the convolutions' input gradients as backward-data (patched in)."""
    from branchynet.links import cpukernels, directconv

    def clocked(fn, key):
        def wrapper(*args, **kwargs):
            timer.enter(key)
            try:
                return fn(*args, **kwargs)
            finally:
                timer.leave()
        return wrapper
    data = ('convolution', 'backward-data')
    directconv.backward_data = clocked(directconv.backward_data, data)
    cpukernels.Convolution2DCPU._input_gradient = clocked(
        cpukernels.Convolution2DCPU._input_gradient, data)

    def apart(x, gy, W, ph, pw, earlier=None):
        # directconv.backward runs both kernels on each range of samples; here
        # one after the other over the batch, so that each pass can be clocked
        gx = directconv.backward_data(gy, W, ph, pw, earlier)
        return (gx,) + directconv.backward_weight(x, gy, W.shape[2], W.shape[3], ph, pw,
                                                  with_bias=True)
    directconv.backward = apart


def profile(module_name, batch, steps, now, kernels=True):
    """{(kind, pass): seconds per step} and the step's own time, per step kind."""
    import chainer
    import numpy
    from branchynet.links import cpukernels
    module = __import__('networks.' + module_name, fromlist=['get_network'])
    numpy.random.seed(0)
    net = module.get_network()
    rng = numpy.random.RandomState(0)
    x = rng.rand(batch, *net.input_shape).astype(numpy.float32)
    t = rng.randint(0, 10, batch).astype(numpy.int32)
    net.training()
    out = {}
    context = chainer.using_config('train', True)
    with context, (cpukernels.disabled() if not kernels else _nothing()):
        for name, step in (('main', net.train_main), ('joint', net.train)):
            step(x, t)
            step(x, t)
            timer = PassTimer(now)
            _patched_timer[0] = timer
            start = now()
            with hook_class()(timer):
                for _ in range(steps):
                    step(x, t)
            total = (now() - start) / steps
            _patched_timer[0] = None
            parts = {k: v / steps for k, v in timer.totals.items()}
            parts[('rest of the step', '')] = total - sum(parts.values())
            out[name] = (parts, total)
    return out


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_patched_timer = [None]


class Forwarding:
    """What the patched input gradients report to: the timer of the step
    being profiled, if any."""

    def enter(self, key):
        if _patched_timer[0] is not None:
            _patched_timer[0].enter(key)

    def leave(self):
        if _patched_timer[0] is not None:
            _patched_timer[0].leave()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--networks', default='resnet,alexnet,lenet')
    p.add_argument('--steps', type=int, default=3)
    p.add_argument('--threads', type=int, default=None,
                   help='threads of the kernels and BLAS (default: one per core)')
    p.add_argument('--chainer', action='store_true', help="Chainer's functions (kernels off)")
    p.add_argument('--clock', choices=('wall', 'cpu'), default='wall')
    args = p.parse_args()
    names = [n for n in args.networks.split(',') if n]
    bad = [n for n in names if n not in NETWORKS]
    if bad or args.steps < 1:
        p.error('unknown network {} (expected any of {}); --steps >= 1'.format(
            ', '.join(bad) or '-', ', '.join(NETWORKS)))
    if args.threads:
        for var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS',
                    'BRANCHYNET_TRAIN_THREADS'):
            os.environ[var] = str(args.threads)
    sys.path.insert(0, HERE)
    sys.path.insert(0, ROOT)
    from common import load  # noqa: E402  (after the thread settings)
    from branchynet.engines.numba import processor
    from branchynet.training import runtime
    runtime.tune_allocator()
    now = clock(args.clock)

    time_convolution_parts(Forwarding())
    model, vector = processor()
    print('processor: {}; vector extensions: {}; OPENBLAS_CORETYPE={}'.format(
        model, ' '.join(vector) or 'none found', os.environ.get('OPENBLAS_CORETYPE', 'unset')))
    print('threads: {}; clock: {}; kernels {}; load average {:.1f}'.format(
        args.threads or 'one per core', args.clock, 'off' if args.chainer else 'on', load()))
    for name in names:
        module_name, batch = NETWORKS[name]
        for step, (parts, total) in profile(module_name, batch, args.steps, now,
                                            kernels=not args.chainer).items():
            print('\n{} {} step (batch {}): {:.1f} ms per step, {:.2f} ms per sample'.format(
                name, step, batch, total * 1e3, total * 1e3 / batch))
            print('  {:<36s} {:<16s} {:>10s} {:>7s}'.format('layer kind', 'pass', 'ms/step',
                                                            'share'))
            for (kind, pass_), seconds in sorted(parts.items(), key=lambda kv: -kv[1]):
                print('  {:<36s} {:<16s} {:>10.2f} {:>6.1f}%'.format(
                    kind, pass_, seconds * 1e3, 100 * seconds / total))
    print('\nload average at the end {:.1f}'.format(load()))


if __name__ == '__main__':
    main()
