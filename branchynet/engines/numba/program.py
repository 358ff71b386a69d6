"""One network's generated module: the layer functions, slab offsets
(``_allocate`` reuses a buffer once its last reader has run) and ``run``,
which takes each sample of a range through trunk segment, exit head,
confidence score and exit decision, exit after exit, going on to the next
sample as soon as one leaves (the main network skips the early heads); a run
of identical blocks (ResNet's) is one loop over a table of their offsets.
"""
import time

import numpy

from branchynet.engines.routing import NOT_FINITE
from branchynet.validation import InvalidValue
from branchynet.engines.numba.layout import NotCompilable, require_numba, Value
from branchynet.engines.numba.builder import Builder
from branchynet.engines.numba.codegen import (call_lines, function_lines, indent,
                                              module_header, narrowed_input, symbolic)
from branchynet.engines.numba.kernels import (KERNELS, KIND_KERNELS, kernel_for, kernels_of,
                                              layer_key, scratch_size, tile_compile_settings,
                                              time_kernels)
from branchynet.engines.numba.tile import fuse_tiled, transposed_weights
from branchynet.engines.numba.cache import (ChoiceCache, suppress_os_error, write_source,
                                            cached_files, untrusted_cache, cache_dir)


def _allocate(ops, inputs, keep):
    """Offsets in the slab for every Value: buffers are reused once their last
    reader has run, but only for values of the same geometry (so zero margins
    stay zero). ``keep`` values are never reused. Returns the slab size."""
    free, size = {}, [0]
    remaining = {}

    def geometry(v):
        return (v.c, v.h, v.w, v.margin, v.ws, v.ps)

    def place(v):
        pool = free.get(geometry(v))
        if pool:
            v.off = pool.pop()
        else:
            v.off = size[0]
            size[0] += v.size
        remaining[id(v)] = v.consumers

    for v in inputs:
        place(v)
    for op in ops:
        place(op.output)
        for v in op.inputs:
            remaining[id(v)] -= 1
            if remaining[id(v)] == 0 and not any(v is k for k in keep):
                free.setdefault(geometry(v), []).append(v.off)
    return size[0]


class Program:
    """The compiled code of one network: ``run(X, W, S, limits, code,
    main_only, labels, exits, taken, hi)`` takes sample ``taken[0]`` of ``X``
    (float32, C-contiguous, (N, C, H, W)), counting ``taken[0]`` up
    atomically, writes its label and exit into ``labels`` and ``exits``
    (int32), and goes on until ``taken[0]`` reaches ``hi``, then returns 0:
    threads calling it at once on one batch with one ``taken`` share the
    samples without a lock. It returns 1 without reading ``X`` when ``X``'s
    samples are not the network's shape or ``hi`` is past its end.
    ``W`` the weight vector, ``S`` one scratch slab of ``slab`` float32
    zeros, ``limits`` the float64 exit limits of the measure ``code``
    (``MEASURE_CODES``); ``main_only`` runs the main network (no early head).
    After the warm-up ``run`` compiles nothing more: other argument types
    raise ``TypeError`` (numba's "no matching definition").
    One entry point: numba compiles every layer function into each function
    that calls it, so each further entry point would cost as much again.

    ``load=False`` only generates the source (``source``; ``functions``: the
    distinct layer functions, name -> (kind, body lines)), without numba.
    """

    def __init__(self, net, load=True, kernels='auto'):
        if kernels not in KERNELS:
            raise InvalidValue('kernels must be one of {}, got {!r}'.format(
                ', '.join(map(repr, KERNELS)), kernels))
        self.numba = require_numba() if load else None
        if net.xp is not numpy:
            raise NotCompilable('the numba path runs on the CPU: call net.to_cpu() first')
        if net.input_shape is None or len(net.input_shape) != 3:
            raise NotCompilable('the numba path needs an image network with input_shape '
                                '(C, H, W), got {}'.format(net.input_shape))
        b = Builder()
        x = Value(*net.input_shape)
        segments, heads, h = [], [], x
        for n in range(net.numexits()):
            start = len(b.ops)
            h = b.links(net.trunk[slice(*net.segment_bounds(n))], h)
            segments.append((start, len(b.ops), h))
            start = len(b.ops)
            z = b.links(net.head_links(n), h)
            if (z.h, z.w) != (1, 1):
                raise NotCompilable('exit {} gives logits of shape {}: the numba path needs '
                                    'one vector of class scores per sample (end the head '
                                    'with a Linear layer)'.format(n + 1, z.shape()))
            z = b.packed(z)  # the decision reads the logits as one vector
            heads.append((start, len(b.ops), z))
        self.nclasses = heads[0][2].c
        self.weights = numpy.concatenate(b.weights) if b.weights else numpy.zeros(1, numpy.float32)
        self._choose(b.ops, kernels if load or kernels != 'auto' else 'loop')
        self._narrow(b.ops)
        self._transpose(b.ops)
        keep = [s[2] for s in segments] + [z for *_, z in heads]
        gone = fuse_tiled(b.ops, keep)
        index = numpy.cumsum([0] + [id(op) not in gone for op in b.ops])  # old -> new op index
        segments = [(index[a], index[e], v) for a, e, v in segments]
        heads = [(index[a], index[e], v) for a, e, v in heads]
        b.ops = [op for op in b.ops if id(op) not in gone]
        # the main program skips the early heads: their outputs are never read there,
        # so one allocation serves both programs
        self.slab = _allocate(b.ops, [x], keep=keep)
        for op in b.ops:  # a narrowed input's copy: an area of its own (zero margin)
            if op.params.get('narrow'):
                op.params['col'], self.slab = self.slab, self.slab + scratch_size(op)
        # the GEMM kernels' im2col matrix, the tiles' sums: one area after the values,
        # shared (transient)
        col = max([scratch_size(op) for op in b.ops if not op.params.get('narrow')] or [0])
        for op in b.ops:
            if op.params.get('kernel') in ('gemm', 'tile'):
                op.params['col'] = self.slab
        self.slab += col
        self.x, self.segments, self.heads, self.ops = x, segments, heads, b.ops
        self.functions, self._tiled = {}, {}  # tiled: name -> number of offset arguments
        self.source = self._source()
        if load:
            start = time.perf_counter()
            self._load()
            #: seconds to import the module and compile (or load from the cache) its code
            self.compile_seconds = time.perf_counter() - start

    def _choose(self, ops, kernels):
        """Set each convolution's and linear layer's ``kernel`` param: the one
        ``kernels`` forces (where the layer has it; else the loop), or
        ('auto') the fastest of its kind's kernels as measured on this
        machine for that layer's shape (kept in ``kernel_choices.json`` in the
        cache folder, so a shape is measured once per processor)."""
        measured = {}
        choices = ChoiceCache() if kernels == 'auto' else None
        for op in ops:
            if op.kind not in KIND_KERNELS:
                continue
            if kernels != 'auto':
                op.params['kernel'] = kernel_for(op, kernels)
                continue
            key, options = layer_key(op), KIND_KERNELS[op.kind]
            if key not in measured:
                measured[key] = choices.get(key, options)
                if measured[key] is None:
                    measured[key] = time_kernels(op, self.weights, options)
                    choices.put(key, measured[key])
            times = measured[key]
            op.params['kernel'] = min(options, key=lambda k: (times[k], k != 'loop'))
            op.params['measured'] = {k: times[k] for k in options}
        if choices is not None:
            choices.save()

    @staticmethod
    def _narrow(ops):
        """A wide loop convolution whose input rows are longer than its padding
        needs (a wider margin another reader of the input asked for, or a wide
        input's extra columns) reads a copy with its own margin (``narrow``,
        ``codegen.narrowed_input``) where the longer rows would cost more
        multiply-adds than the copy costs: B-LeNet's first exit's 3x3
        convolution reads the pooled value the trunk's 5x5 one pads by 3, and
        its wide planes shrink from 320 to 256 floats (1.7 against 2.2 µs a call)."""
        for op in ops:
            if op.kind != 'conv' or op.params.get('kernel') != 'loop' or \
                    op.output.wide_of is None:
                continue
            (x,), y, p = op.inputs, op.output, op.params
            width = x.w + 2 * p['pad']
            kh, kw = p['k']
            if y.c * kh * kw * (x.ws - width) > 2 * width:
                p['narrow'] = True
                y.wide_of = narrowed_input(op)  # the output's rows are the copy's

    def _transpose(self, ops):
        """Append the transposed weights of every tiled convolution (``wt``)."""
        extra, size = [], len(self.weights)
        for op in ops:
            if op.params.get('kernel') == 'tile':
                extra.append(transposed_weights(op, self.weights))
                op.params['wt'], size = size, size + extra[-1].size
        if extra:
            self.weights = numpy.concatenate([self.weights] + extra)

    @property
    def uses_gemm(self):
        """Whether some layer runs the BLAS product (BLAS threads matter then)."""
        return any(op.params.get('kernel') == 'gemm' for op in self.ops)

    def explain(self, measure=False):
        """One row per layer: ``{'layer', 'kind', 'input', 'output', 'kernel',
        'us': {kernel: µs per call}}``; the times are those measured to choose
        the kernel ('auto'), and with ``measure=True`` every layer (each kind,
        each kernel of a convolution or linear layer) is timed now. A tiled
        convolution that also does the copy or residual block after it is
        kind 'conv+copy' or 'conv+residual' (``tile.fuse_tiled``)."""
        rows, timed = [], {}
        for i, op in enumerate(self.ops):
            times = dict(op.params.get('measured') or {})
            if measure:
                key = layer_key(op)
                if key not in timed:
                    timed[key] = time_kernels(op, self.weights, kernels_of(op))
                times = {k or op.kind: v for k, v in timed[key].items()}
            kind = op.kind + ('+' + op.params['fused'] if op.params.get('fused') else '')
            rows.append({'layer': i, 'kind': kind, 'kernel': op.params.get('kernel'),
                         'input': ' + '.join('x'.join(map(str, v.shape())) for v in op.inputs),
                         'output': 'x'.join(map(str, op.output.shape())), 'us': times})
        return rows

    def _source(self):
        """Python source of the module: one function per distinct layer (ResNet's
        identical blocks share one), the score, and ``run``, every size a literal."""
        out = module_header()
        calls, cache = [], {}
        for i, op in enumerate(self.ops):
            body, args = symbolic(op)
            key = (op.kind, tuple(body))
            if key not in cache:  # the same layer shape (ResNet's blocks) shares one function
                cache[key] = 'op{}'.format(i)
                out += [''] + function_lines(op.kind, 'op{}'.format(i), body, args) + ['']
                self.functions[cache[key]] = key
                if op.params.get('kernel') == 'tile':
                    self._tiled[cache[key]] = len(args)
            calls.append((cache[key], [v for _, v in args]))
        tables = []

        def run(start, end):
            return call_lines(calls[start:end], tables, typed=self._tiled)

        x = self.x
        sample = ['for c in range({}):'.format(x.c),
                  '    for y in range({}):'.format(x.h),
                  '        for x in range({}):'.format(x.w),
                  '            S[{}] = X[i, c, y, x]'.format(x.at())]
        last = len(self.segments) - 1
        for n, (seg, head) in enumerate(zip(self.segments, self.heads)):
            sample += run(seg[0], seg[1])
            z = head[2]
            logits = 'S[{}:{}]'.format(z.off, z.off + z.c)
            take = ['labels[i] = numpy.argmax({})'.format(logits), 'exits[i] = {}'.format(n)]
            # logits that are not finite: marked for routing.check_finite to name
            refuse = ['if not finite({}):'.format(logits),
                      '    labels[i] = {0}'.format(NOT_FINITE),
                      '    exits[i] = {0}'.format(NOT_FINITE),
                      '    continue']
            if n == last:
                sample += run(head[0], head[1]) + refuse + take
            else:  # the main network skips the early heads
                sample += ['if not main_only:'] + indent(
                    run(head[0], head[1]) + refuse +
                    ['if score({}, code) < limits[{}]:'.format(logits, n)] +
                    indent(take + ['continue'], 1), 1)
        out += ['', ''] + ['T{} = numpy.array({!r}, numpy.int64)'.format(i, t.tolist())
                           for i, t in enumerate(tables)]
        out += ['', '', '@numba.njit(boundscheck=False, nogil=True, cache=True)',
                'def run(X, W, S, limits, code, main_only, labels, exits, taken, hi):',
                '    if X.shape[1] != {} or X.shape[2] != {} or X.shape[3] != {} or '
                'hi > X.shape[0]:'.format(x.c, x.h, x.w),
                '        return 1',
                '    for _ in range(hi):',  # at most hi samples; a 'continue' takes the next
                '        i = take(taken)',
                '        if i >= hi:',
                '            break'] + indent(sample, 2) + ['    return 0', '']
        return '\n'.join(out)

    @property
    def module_name(self):
        """The generated module's name: a digest of its source (every size and
        offset of the network is a literal there) and of the numba version."""
        import hashlib
        key = '{}\n{}'.format((self.numba or require_numba()).__version__, self.source)
        return 'branchynet_numba_' + hashlib.sha256(key.encode()).hexdigest()[:24]

    def _load(self):
        """Import the generated module from the cache folder and compile its
        functions (numba keeps their machine code beside it, so a network of
        the same shape compiles once). A cache entry that cannot be read back
        is deleted with a warning and the code compiled again. A cache folder
        that ``untrusted_cache`` refuses is not used at all: the code is
        compiled in memory, with a warning saying why."""
        import os
        import warnings
        folder = cache_dir()
        with suppress_os_error():  # a folder that cannot be made is refused below
            os.makedirs(folder, mode=0o700, exist_ok=True)
        reason = untrusted_cache(folder, self.module_name)
        if reason is not None:
            warnings.warn('numba cache not used, compiling without it (slower to start): '
                          '{}'.format(reason), RuntimeWarning)
            self._import_in_memory()
            self._warm_up()
            return
        path = os.path.join(folder, self.module_name + '.py')
        write_source(path, self.source)
        stale = cached_files(folder, self.module_name)
        try:
            self._import(path)
            self._warm_up()
        except Exception as e:
            if not stale:
                raise
            warnings.warn('numba cache of {} could not be read ({}: {}); deleted and '
                          'compiled again'.format(path, type(e).__name__, e), RuntimeWarning)
            for f in stale:
                with suppress_os_error():
                    os.unlink(f)
            self._import(path, fresh=True)
            self._warm_up()

    def _import(self, path, fresh=False):
        import importlib.util
        import sys
        name = self.module_name
        module = None if fresh else sys.modules.get(name)
        if module is None:  # registered first: numba's cache imports it by name
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[name]
                raise
        self.module = module
        self.run = module.run

    def _import_in_memory(self):
        """The generated module executed from memory, its functions compiled
        without numba's on-disk cache (nothing is read from or written to disk)."""
        import types
        module = types.ModuleType(self.module_name + '_uncached')
        exec(compile(self.source.replace('cache=True', 'cache=False'),
                     '<{}>'.format(module.__name__), 'exec'), module.__dict__)
        self.module = module
        self.run = module.run

    def _warm_up(self):
        """Compile (or load) every entry point for the argument types the
        engine passes: numba compiles on the first call."""
        X = numpy.zeros((2,) + self.x.shape(), numpy.float32)
        S = numpy.zeros((1, self.slab), numpy.float32)[0]
        limits = numpy.zeros(len(self.heads), numpy.float64)
        labels, exits = numpy.zeros(2, numpy.int32), numpy.zeros(2, numpy.int32)
        numba = self.numba or require_numba()
        array = numba.float32[::1]
        # the tiled convolutions first, vectorised with the widest vectors (``tile``) ...
        with tile_compile_settings():
            for name, n in self._tiled.items():
                getattr(self.module, name).compile((array, array) + (numba.int64,) * n)
        # ... then ``run`` with them inside, without the SLP vectoriser's time on the rest
        self.run(X, self.weights, S, limits, 0, False, labels, exits,
                 numpy.zeros(1, numpy.int64), 2)
        self.run.disable_compile()  # the engine's batch-1 path relies on the TypeError
