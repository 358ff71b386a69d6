"""Which kernel each convolution and linear layer runs: the generated loop,
an im2col and BLAS product or (convolutions) register tiles (``tile``),
whichever is measured fastest for the layer's shape on this machine
(``time_kernels``), with the BLAS held to one thread (``blas_limit``) as the
engine runs it.
"""
import contextlib
import math
import time

import numpy

from branchynet.progress import Progress
from branchynet.engines.numba.layout import VECTOR
from branchynet.engines.numba.builder import Op
from branchynet.engines.numba.codegen import gemm_size, narrowed_input, symbolic, function_lines
from branchynet.engines.numba.tile import tile_scratch, transposed_weights
from branchynet.jit import prefer_vector_bits, slp_vectorize, vector_bits


#: Kernel settings of ``NumbaBranchyNet(kernels=...)``: measured choice, or forced.
KERNELS = ('auto', 'loop', 'gemm', 'tile')

#: Kernels of each layer kind that has a choice (the others have one).
KIND_KERNELS = {'conv': ('loop', 'gemm', 'tile'), 'linear': ('loop', 'gemm')}
CHOOSABLE = tuple(KIND_KERNELS)


@contextlib.contextmanager
def tile_compile_settings():
    """How the tiled convolutions compile (and only they: the rest of the
    engine compiles with numba's defaults): the SLP vectoriser on, LLVM asked
    for the processor's widest vectors."""
    with slp_vectorize(), prefer_vector_bits(vector_bits()):
        yield


def kernel_for(op, kernels):
    """The kernel a forced setting ``kernels`` gives ``op``: that one where
    its kind has it, else the generated loop."""
    return kernels if kernels in KIND_KERNELS[op.kind] else 'loop'


def scratch_size(op):
    """Floats of the slab's transient area ``op``'s kernel uses (the GEMM's
    im2col matrix, a tile's sums); for a narrowed convolution, the floats of
    its input's copy (``Program`` gives that an area of its own)."""
    kernel = op.params.get('kernel')
    if op.kind == 'conv' and op.params.get('narrow'):
        return narrowed_input(op).size
    if op.kind == 'conv' and kernel == 'gemm':
        k, n = gemm_size(op)
        return k * n
    if op.kind == 'conv' and kernel == 'tile':
        return tile_scratch(op)
    return 0


def kernels_of(op):
    """The kernels ``op`` can run (None: its kind's only one); a convolution
    that took over the op after it (``tile.fuse_tiled``) only its tile."""
    if op.params.get('fused'):
        return ('tile',)
    if op.params.get('narrow'):  # its output's rows fit the loop's copy of the input
        return ('loop',)
    return KIND_KERNELS.get(op.kind, (None,))


def layer_key(op):
    """What a layer's speed depends on: its kind and generated loop code (every
    size a literal, offsets symbolic; a fused convolution's tile code), as a string."""
    params = dict(op.params, kernel='tile' if op.params.get('fused') else 'loop')
    body, _ = symbolic(Op(op.kind, op.inputs, op.output, **params))
    return op.kind + '\n' + '\n'.join(body)


def time_kernels(op, weights, kernels, rounds=5, seconds=2e-3):
    """Microseconds per call of ``op`` with each of ``kernels`` (None: the
    kind's only one) on a private slab, each compiled alone (in memory), the
    best of ``rounds`` interleaved rounds of about ``seconds`` each (the BLAS on
    one thread, as the engine runs it)."""
    values = list(op.inputs) + [op.output]
    saved = [v.off for v in values]
    end = 0
    for v in values:
        v.off, end = end, end + v.size
    wt = len(weights)
    if 'tile' in kernels:  # the tile kernel reads its weights transposed, after the others
        weights = numpy.concatenate([weights, transposed_weights(op, weights)])
    lines, calls, scratch = ['import math', 'import numba', 'import numpy'], [], 0
    try:
        for i, kernel in enumerate(kernels):
            params = dict(op.params, kernel=kernel, col=end)
            if kernel == 'tile':
                params['wt'] = wt
            one = Op(op.kind, op.inputs, op.output, **params)
            scratch = max(scratch, scratch_size(one))
            body, args = symbolic(one)
            lines += [''] + function_lines(op.kind, 'k{}'.format(i), body, args, cache=False)
            calls.append([v for _, v in args])
    finally:
        for v, off in zip(values, saved):
            v.off = off
    module = {}
    exec(compile('\n'.join(lines), '<kernel timing>', 'exec'), module)
    S = numpy.random.RandomState(0).rand(end + scratch + VECTOR).astype(numpy.float32)
    fns = [(module['k{}'.format(i)], calls[i]) for i in range(len(kernels))]
    best = [math.inf] * len(fns)
    # compiling the candidates is most of a network's first compile: a bar on a terminal
    bar = Progress.auto(len(fns), 'numba: compiling the {} kernels of a {} layer ({} -> {})'
                        .format(len(fns), op.kind, values[0].shape(), op.output.shape()),
                        'kernel')
    with blas_limit(1), bar:
        reps = []
        for kernel, (fn, args) in zip(kernels, fns):  # compile, then a first time for the reps
            # compiled as the engine compiles it, so each is timed as it will run
            with tile_compile_settings() if kernel == 'tile' else contextlib.nullcontext():
                fn(weights, S, *args)
            bar.update(1, compiled=kernel or op.kind)
            start = time.perf_counter()
            fn(weights, S, *args)
            reps.append(max(1, int(seconds / max(time.perf_counter() - start, 1e-7))))
        for _ in range(rounds):
            for j, ((fn, args), r) in enumerate(zip(fns, reps)):
                start = time.perf_counter()
                for _ in range(r):
                    fn(weights, S, *args)
                best[j] = min(best[j], (time.perf_counter() - start) / r)
    return {kernel: round(t * 1e6, 3) for kernel, t in zip(kernels, best)}

_CONTROLLER = []


def blas_limit(threads):
    """A context running the BLAS (scipy's, which numba calls) on ``threads``:
    the engine's own threads already split a batch, and a multithreaded BLAS
    called from two threads at once waits on itself (measured: several times
    slower); without threadpoolctl, the BLAS as it is."""
    import contextlib
    if not _CONTROLLER:
        try:
            from threadpoolctl import ThreadpoolController
            _CONTROLLER.append(ThreadpoolController())
        except ImportError:
            _CONTROLLER.append(None)
    if _CONTROLLER[0] is None:
        return contextlib.nullcontext()
    return _CONTROLLER[0].limit(limits=threads, user_api='blas')


def processor():
    """(model name, vector extensions) of this machine's processor, from
    /proc/cpuinfo (the platform's name and no extensions where there is none)."""
    import platform
    model, flags = None, []
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                key, _, value = line.partition(':')
                key = key.strip()
                if key == 'model name' and model is None:
                    model = value.strip()
                elif key in ('flags', 'Features') and not flags:
                    flags = value.split()
    except OSError:
        pass
    vector = [f for f in flags if f.startswith(('sse', 'ssse', 'avx', 'fma', 'amx', 'neon',
                                                'asimd', 'sve'))]
    return model or platform.processor() or 'unknown', vector
