"""Generated kernel source: compiling it with numba's disk cache, and lines
the generated convolution kernels share.

``compile_source`` compiles the function ``kernel`` of a generated module
text (every size a literal) for a preferred vector width; the module file is
written under ``cache_root()/training`` so numba's cache serves later
processes. ``stored_value`` is the expression a kernel stores for a sum:
itself, ReLU of it, or an earlier array's value plus it; ``bias_sum_lines``
sum a sample's output gradient per channel (a bias's gradient).
"""
import os

import numpy

from branchynet.jit import cache_root, prefer_vector_bits, private_folder, slp_vectorize


def stored_value(name, relu, accumulate=False, index=None):
    """The expression stored for the sum ``name``: itself, ReLU of it, or
    (``accumulate``) ``earlier[index]`` plus it."""
    if accumulate:
        return 'earlier[{}] + {}'.format(index, name)
    return '{0} if not {0} <= 0 else numpy.float32(0)'.format(name) if relu else name


#: Lanes of the bias gradient's sums (independent chains, one vector's worth).
BIAS_LANES = 16


def bias_sum_lines(o_all, pixels):
    """Lines adding sample ``n``'s channel sums of ``g`` to ``gb``: per channel
    ``BIAS_LANES`` partial sums (pixel ``p`` of the whole blocks into lane
    ``p % BIAS_LANES``, the pixels after them into lane 0), added in lane order."""
    lanes = BIAS_LANES
    full = pixels - pixels % lanes
    lines = ['for o in range({}):'.format(o_all),
             '    gs = g[n * {} + o * {}:]'.format(o_all * pixels, pixels)]
    lines += ['    s{} = numpy.float32(0)'.format(i) for i in range(lanes)]
    lines += ['    for p in range(0, {}, {}):'.format(full, lanes)]
    lines += ['        s{0} += gs[p + {0}]'.format(i) for i in range(lanes)]
    if full < pixels:
        lines += ['    for p in range({}, {}):'.format(full, pixels),
                  '        s0 += gs[p]']
    lines += ['    gb[o] += ' + ' + '.join('s{}'.format(i) for i in range(lanes))]
    return lines


#: multiply-adds contracted to FMAs; no reassociation (the sums keep their order)
_FASTMATH = {'contract', 'nnan', 'ninf', 'nsz', 'arcp'}


def _module_text(source, bits, fastmath):
    flags = '{' + ', '.join(map(repr, sorted(fastmath))) + '}' if fastmath else 'False'
    return ('# compiled with LLVM vectors of {} bits preferred\n'.format(bits) +
            'import numba\nimport numpy\n\n\n'
            '@numba.njit(fastmath={}, boundscheck=False, nogil=True, error_model="numpy", '
            'cache=True)\n{}\n').format(flags, source)


def _module_file(text, key):
    """The generated kernel's module file under ``cache_root()/training``,
    written atomically unless it already holds exactly ``text``."""
    import tempfile
    folder = os.path.join(cache_root(), 'training')
    private_folder(os.path.dirname(folder))
    private_folder(folder)
    path = os.path.join(folder, 'k{}.py'.format(key))
    data = text.encode()
    try:
        with open(path, 'rb') as f:
            if f.read(len(data) + 1) == data:
                return path
    except OSError:
        pass
    fd, tmp = tempfile.mkstemp(dir=folder, suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def compile_source(source, bits, signature=None, fastmath=_FASTMATH):
    """The function ``kernel`` of generated ``source`` compiled for
    ``signature`` (default: every argument a 1-d float32 array but the
    trailing ``start, stop``) with ``bits``-wide vectors preferred. Its module
    is run from the text generated here (never from a .pyc) and registered by
    name, so numba's cache beside the file serves later processes; without a
    usable cache folder it is compiled in memory."""
    import hashlib
    import sys
    import types
    import warnings
    import numba
    text = _module_text(source, bits, fastmath)
    key = hashlib.sha256((numba.__version__ + text).encode()).hexdigest()[:20]
    name = 'branchynet_training_' + key
    if signature is None:
        names = source.split('(', 1)[1].split(')', 1)[0].split(', ')
        arrays = sum(1 for n in names if n not in ('start', 'stop'))
        signature = tuple([numba.float32[::1]] * arrays + [numba.intp, numba.intp])
    try:
        module = sys.modules.get(name)
        if module is None:
            path = _module_file(text, key)
            module = types.ModuleType(name)
            module.__file__ = path
            exec(compile(text, path, 'exec'), module.__dict__)
            sys.modules[name] = module  # numba's cache finds the module by name
        with slp_vectorize(), prefer_vector_bits(bits):
            module.kernel.compile(signature)
        return module.kernel
    except Exception as e:  # no usable cache: the same code, compiled in memory
        sys.modules.pop(name, None)
        warnings.warn('training kernel compiled without a disk cache ({}: {})'.format(
            type(e).__name__, e))
        namespace = {'numpy': numpy}
        exec(compile(source, '<branchynet training kernel>', 'exec'), namespace)
        fn = numba.njit(fastmath=fastmath or False, boundscheck=False, nogil=True,
                        error_model='numpy')(namespace['kernel'])
        with slp_vectorize(), prefer_vector_bits(bits):
            fn.compile(signature)
        return fn
