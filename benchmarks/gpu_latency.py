"""(d) B-LeNet batch-1 latency on a GPU: the Chainer path, the fast path on
CuPy, and the fast path with each exit's step captured as a CUDA graph.

    python benchmarks/gpu_latency.py [--quick] [--model FILE.npz] [--samples N]
                                     [--rounds R] [--device gpu|cpu]

At batch size 1 a GPU is launch-bound: every layer costs a kernel launch and
Python dispatch, so the layers an early exit skips save little time unless
that per-layer cost goes. The graph path captures, per exit, the trunk
segment, the head and the logits as one CUDA graph (CuPy's stream capture),
so a sample costs one graph launch per exit it reaches plus the host-side
decision; the decision (entropy of the logits, read back) stays on the host
as in every other path. Main-network ms, exit-1 ms and knee ms are measured
end to end per sample (host-to-device copy to the label on the host,
synchronised) in interleaved rounds, best of ``--rounds``, beside the paper's
GPU gain for B-LeNet and the arithmetic (MAC) limit.

CuPy refuses cuBLAS calls while a stream is capturing, so inside graphs the
matrix products run as a plain CUDA kernel (one thread per output element;
the products of B-LeNet at batch 1 are at most 1,020 x 126 by 126 x 10).

``--device cpu`` runs the same table on the CPU, for checking the script
where there is no GPU: the third path then replays each step on the same
static buffers, with no CUDA graph (a stand-in that tests the wiring, not a
speed-up). Without a usable GPU, ``--device gpu`` (the default) refuses.
"""
import sys

from common import best_latencies, knee_point, lenet, mnist, parser, summary, test_subset

import numpy  # noqa: E402

from branchynet.measures import costs  # noqa: E402
from branchynet.devices import gpu_usable  # noqa: E402
from branchynet.engines.base import InferenceEngine  # noqa: E402
from branchynet.engines.fast import Compiler, FastBranchyNet  # noqa: E402

#: one thread per output element: c[i, j] = sum_p a[i, p] * b[p, j] (element strides)
_GEMM_SOURCE = r'''
extern "C" __global__ void small_gemm(const float* a, long long sa0, long long sa1,
                                      const float* b, long long sb0, long long sb1,
                                      float* c, long long m, long long n, long long k) {
    long long idx = (long long)blockDim.x * blockIdx.x + threadIdx.x;
    if (idx >= m * n) return;
    long long i = idx / n, j = idx % n;
    const float* ai = a + i * sa0;
    const float* bj = b + j * sb1;
    float acc = 0.f;
    for (long long p = 0; p < k; ++p) acc += ai[p * sa1] * bj[p * sb0];
    c[idx] = acc;
}
'''


class CaptureSafeArrays:
    """The array module ``xp`` for the fast-path compiler, except ``matmul``:
    on CuPy it runs ``_GEMM_SOURCE`` (capturable, unlike CuPy's cuBLAS calls)."""

    def __init__(self, xp):
        self._xp = xp
        self._kernel = None

    def __getattr__(self, name):
        return getattr(self._xp, name)

    def matmul(self, a, b, out=None):
        xp = self._xp
        if xp is numpy:
            return numpy.matmul(a, b, out=out)
        if a.ndim != 2 or b.ndim != 2 or a.dtype != numpy.float32 or b.dtype != numpy.float32:
            raise TypeError('capture-safe matmul takes 2-D float32 arrays, got {} {} and {} {}'
                            .format(a.shape, a.dtype, b.shape, b.dtype))
        m, k = a.shape
        n = b.shape[1]
        if b.shape[0] != k:
            raise ValueError('matmul shapes {} and {} do not match'.format(a.shape, b.shape))
        if out is None:
            out = xp.empty((m, n), numpy.float32)
        if out.shape != (m, n) or not out.flags.c_contiguous:
            raise ValueError('out must be C-contiguous with shape {}'.format((m, n)))
        if self._kernel is None:
            self._kernel = xp.RawKernel(_GEMM_SOURCE, 'small_gemm')
        item = a.itemsize
        threads = 128
        self._kernel(((m * n + threads - 1) // threads,), (threads,),
                     (a, numpy.int64(a.strides[0] // item), numpy.int64(a.strides[1] // item),
                      b, numpy.int64(b.strides[0] // item), numpy.int64(b.strides[1] // item),
                      out, numpy.int64(m), numpy.int64(n), numpy.int64(k)))
        return out


class GraphBranchyNet(InferenceEngine):
    """Batch-1 early-exit inference with each exit's step (trunk segment and
    head) and the baseline network replayed as CUDA graphs.

    Inputs go through ``send`` into one static device buffer (an input sent
    elsewhere is copied there); the graph of exit n reads the activation
    buffer that exit n - 1's graph writes. On the
    CPU the steps are replayed into static buffers instead (no graphs).
    Same answers as ``predict`` (up to float rounding of the products).
    """

    stage_timing = False

    def __init__(self, net):
        self.net = net
        self.xp = net.xp
        self.on_gpu = self.xp is not numpy
        compiler = Compiler(CaptureSafeArrays(self.xp))
        n_exits = net.numexits()
        segments = [compiler.sequence(net.trunk[slice(*net.segment_bounds(n))])
                    for n in range(n_exits)]
        heads = [compiler.sequence(net.head_links(n)) for n in range(n_exits)]
        main_trunk = compiler.sequence(list(net.trunk))
        self._x = self.xp.zeros((1,) + tuple(net.input_shape), numpy.float32)
        if self.on_gpu:
            import cupy
            self._pool = cupy.cuda.MemoryPool()  # graphs' memory: nothing else allocates here
            self._stream = cupy.cuda.Stream(non_blocking=True)
        self.steps, h = [], self._x
        for segment, head in zip(segments, heads):
            launch, (h_out, z) = self._record(
                lambda h=h, s=segment, f=head: self._pair(s(h), f))
            self.steps.append(self._step(launch, h, h_out, z))
            h = h_out
        self._main_launch, (self._main_z,) = self._record(
            lambda: (heads[-1](main_trunk(self._x)),))

    @staticmethod
    def _pair(h, head):
        return h, head(h)

    def _record(self, fn):
        """``(launch, outputs)``: a call replaying ``fn`` and the arrays it fills."""
        if not self.on_gpu:
            fn()
            static = [o.copy() for o in fn()]

            def replay():
                for s, o in zip(static, fn()):
                    s[...] = o
            return replay, static
        import cupy
        with cupy.cuda.using_allocator(self._pool.malloc), self._stream:
            fn()  # compiles the kernels, makes the layers' buffers, fills the pool
            fn()
            self._stream.synchronize()
            self._stream.begin_capture()
            try:
                outputs = fn()
            finally:
                graph = self._stream.end_capture()
        graph.upload()

        def launch():
            graph.launch(stream=cupy.cuda.get_current_stream())
        return launch, outputs

    @staticmethod
    def _step(launch, h_in, h_out, z):
        def run(h, timer):
            if h is not h_in:  # sent by net.send (predict), not by self.send
                h_in[...] = h
            launch()
            return h_out, z
        return run

    def send(self, x):
        if tuple(x.shape) != self._x.shape:
            raise ValueError('GraphBranchyNet takes one sample of shape {} at a time, got {}'
                             .format(self._x.shape, tuple(x.shape)))
        if self.on_gpu and isinstance(x, numpy.ndarray):
            self._x.set(numpy.ascontiguousarray(x, dtype=numpy.float32))
        else:
            self._x[...] = x
        return self._x

    def route(self, x, thresholds, timer=None):
        if len(x) != 1:
            raise ValueError('GraphBranchyNet routes batch size 1 only, got {}'.format(len(x)))
        from branchynet.measures.timing import NULL_TIMER
        return super().route(x, thresholds, timer or NULL_TIMER)

    def main_logits(self, x, timer):
        if x is not self._x:
            self._x[...] = x
        self._main_launch()
        return self._main_z


def main():
    p = parser(__doc__.splitlines()[0])
    p.add_argument('--rounds', type=int, default=3,
                   help='interleaved repetitions; each time is the fastest round')
    p.add_argument('--device', choices=('gpu', 'cpu'), default='gpu',
                   help='gpu (default; refused where CuPy sees no GPU) or cpu (checks the '
                        'script: the graph path becomes a static-buffer replay)')
    args = p.parse_args()
    if args.rounds < 1:
        p.error('--rounds must be at least 1, got {}'.format(args.rounds))
    if args.samples is not None and args.samples < 1:
        p.error('--samples must be at least 1, got {}'.format(args.samples))
    if args.device == 'gpu' and not gpu_usable():
        p.exit(2, 'gpu_latency: no CUDA GPU is usable through CuPy here; run it on a GPU '
                  'machine (tools/gpu_run.sh python benchmarks/gpu_latency.py) or pass '
                  '--device cpu to check the script on the CPU\n')
    data = mnist()
    net = lenet(args, data)
    c = costs.exit_costs(net)
    x, y = test_subset(args, data, 300, 2000)
    if args.device == 'gpu':
        import cupy
        net.to_device('@cupy:0')
        print('GPU: {} | cupy {}'.format(
            cupy.cuda.runtime.getDeviceProperties(0)['name'].decode(), cupy.__version__))
    graph_name = 'graph' if args.device == 'gpu' else 'replay'
    paths = [('chainer', net), ('fast', FastBranchyNet(net)), (graph_name, GraphBranchyNet(net))]
    knee = knee_point(net, x, y)
    ts = knee['thresholds']

    # the graph path must decide as predict does before its times mean anything
    labels, exits = paths[2][1].predict(x, ts, batchsize=1)
    exp_labels, exp_exits = net.predict(x, ts, batchsize=1)
    agree = float(numpy.mean((labels == exp_labels) & (exits == exp_exits)))
    print('{} path vs predict at the knee: {:.2%} of {} samples identical'.format(
        graph_name, agree, len(x)))

    settings = {'main': None, 'exit1': [float('inf')], 'knee': ts}
    ms = best_latencies(net, x, y, paths, settings, args.rounds)

    from networks.lenet_mnist import EXPERIMENT
    paper_main, paper_branchy = EXPERIMENT['published']['gpu_ms']
    paper_gain = paper_main / paper_branchy
    limit_knee = costs.arithmetic_limit_gain(c, knee['exit_counts'])
    limit_exit1 = costs.arithmetic_limit_gain(c, [1] + [0] * (net.numexits() - 1))
    out = {'device': args.device, 'samples': len(x), 'agree_' + graph_name: agree}
    print('{} batch 1, {} samples, best of {} rounds; knee T={} ({:.1f} % at exit 1)'.format(
        args.device.upper(), len(x), args.rounds, ts,
        100. * knee['exit_counts'][0] / sum(knee['exit_counts'])))
    print('{:8s} {:>9s} {:>10s} {:>10s} {:>9s} {:>10s} {:>12s}'.format(
        'path', 'main ms', 'exit-1 ms', 'gain@100%', 'knee ms', 'gain@knee', 'of MAC limit'))
    for name, _ in paths:
        b, e1, k = (ms[name, s] for s in settings)
        print('{:8s} {:9.4f} {:10.4f} {:9.2f}x {:9.4f} {:9.2f}x {:11.0f} %'.format(
            name, b, e1, b / e1, k, b / k, 100. * (b / k) / limit_knee))
        out.update({'ms_{}_main'.format(name): b, 'ms_{}_exit1'.format(name): e1,
                    'ms_{}_knee'.format(name): k, 'gain_{}_knee'.format(name): b / k})
    print('MAC limit: {:.2f}x at 100 % exit 1, {:.2f}x at the knee; the paper\'s GPU gain '
          'for B-LeNet: {:.2f}x ({} -> {} ms, trunk-only timer, GTX TITAN X)'.format(
              limit_exit1, limit_knee, paper_gain, paper_main, paper_branchy))
    out.update(limit_knee=limit_knee, limit_exit1=limit_exit1, paper_gpu_gain=paper_gain)
    summary(**out)
    if agree < 0.99:
        sys.exit('the {} path disagrees with predict on {:.1%} of the samples'.format(
            graph_name, 1 - agree))


if __name__ == '__main__':
    main()
