"""Early-exit inference compiled to native code with numba (optional).

The array-level fast path (``engines.fast``) and ONNX Runtime pay a
per-layer, per-call price that a network as small as B-LeNet never earns
back. This path generates one numba function per layer shape from the link
tree (``builder``, ``codegen``, ``program``). The threads of a batch each
make one native call (the functions release the GIL) that takes the batch's
samples one at a time from a counter they share and runs each in the
thread's own scratch slab, so the working set of a sample (its activations)
stays in the core's caches whatever the batch size; batch size 1 is one
native call on the caller's thread. Each call takes a set of slabs and a
counter no other call is using (``_Scratch``), so one engine may be called
from several threads at once.

``NumbaBranchyNet(net).predict(x, thresholds)`` gives the labels and exits
of ``net.predict`` (up to float rounding in the last bits of the logits).
Numba is optional (``requirements/numba.txt``): without it, or for a layer
this path does not know, ``NumbaBranchyNet`` raises ``ImportError`` or
``NotCompilable`` naming what is missing, and ``compile_engine`` falls back
to ``engines.fast.FastBranchyNet``. CPU (numpy) networks only. The weights
are snapshotted: compile again after training further. The generated code
and numba's machine code are cached on disk (``cache``).
"""
import threading
import time

import chainer
import numpy

from branchynet.engines.base import InferenceEngine
from branchynet.measures import confidence
from branchynet.validation import InvalidValue, require_network, validate_inputs
from branchynet.engines.numba.layout import MEASURE_CODES, NotCompilable
from branchynet.engines.numba.kernels import blas_limit
from branchynet.engines.numba.program import Program


#: The native code of each measure it decides: the library's own measure objects.
_NATIVE = {confidence.MEASURES[name]: code for name, code in MEASURE_CODES.items()}


class _Scratch:
    """What one call of the native code writes besides its outputs: a
    scratch slab per engine thread (float32 zeros, ``Program.slab`` long;
    the code keeps the margins zero) and the batch-1 call's sample counter."""

    __slots__ = ('slabs', 'taken')

    def __init__(self, threads, size):
        self.slabs = list(numpy.zeros((threads, size), numpy.float32))  # one view each
        self.taken = numpy.zeros(1, numpy.int64)


#: Calls running the BLAS on one thread, process-wide (``_one_blas_thread``).
_BLAS_USERS = [0, None]  # calls inside, the limit entered by the first of them
_BLAS_LOCK = threading.Lock()


class _one_blas_thread:
    """``blas_limit(1)`` for as long as any call of any engine is inside
    (the BLAS thread count is process-wide: the first call in sets it, the
    last one out restores it, so calls overlapping on threads neither run a
    multithreaded BLAS nor leave it at one thread)."""

    def __enter__(self):
        with _BLAS_LOCK:
            if not _BLAS_USERS[0]:
                limit = blas_limit(1)
                limit.__enter__()
                _BLAS_USERS[1] = limit
            _BLAS_USERS[0] += 1

    def __exit__(self, *exc):
        with _BLAS_LOCK:
            _BLAS_USERS[0] -= 1
            if not _BLAS_USERS[0]:
                limit, _BLAS_USERS[1] = _BLAS_USERS[1], None
                limit.__exit__(None, None, None)


class NumbaBranchyNet(InferenceEngine):
    """Early-exit inference of a trained BranchyNet, compiled with numba.

    Same answers as ``net.predict``/``net.predict_main``. A batch runs on
    ``threads`` threads at once (default: one per core), which take its
    samples one at a time (``_split``). Each call runs in scratch slabs of
    its own (``_Scratch``: a free one kept from an earlier call, else a new
    one), so one engine may be called from several threads at once; the
    engine keeps as many sets of slabs as calls have run at once. ``kernels``:
    each convolution and linear layer runs the generated loop ('loop'), an
    im2col and BLAS product ('gemm'), or ('auto') whichever was measured
    faster for its shape on this machine at compile time (``explain()``
    shows the choice and times). The
    exit decision is native for the measures of ``MEASURE_CODES``; any other
    ``net.confidence`` routes through the fast path's per-exit steps.
    """

    stage_timing = False  # segment, head and decision are one native call
    routes_through_chainer = False  # native code (the fast path's fallback enters test mode)

    def __init__(self, net, threads=None, kernels='auto'):
        import os
        from branchynet.engines.fast import FastBranchyNet
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or threads < 1):
            raise InvalidValue('threads must be a positive integer or None (one per core), '
                               'got {!r}'.format(threads))
        self.net = require_network(net)
        self.xp = numpy
        start = time.perf_counter()
        self.program = Program(net, kernels=kernels)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') \
            else os.cpu_count()
        self.threads = cores if threads is None else threads
        self.input_shape = net.input_shape
        self._fast = FastBranchyNet(net)
        self.steps = self._fast.steps
        # the scratch of calls not running now: a call pops one (or makes one) and
        # appends it when done (list.pop and list.append are atomic in CPython)
        self._scratch = [_Scratch(self.threads, self.program.slab)]
        # fixed per engine, read on every call (the batch-1 path is a few µs)
        self._uses_gemm = self.program.uses_gemm
        self._pool = None
        self._pool_lock = threading.Lock()
        self._decided = (None, None)  # (key, (code, limits)) of the last thresholds: one tuple
        self._main_limits = numpy.zeros(self.numexits(), numpy.float64)  # not read
        # starts the worker threads now, not inside the first timed batch
        self.main_route(numpy.zeros((self.threads,) + tuple(self.input_shape), numpy.float32))
        #: seconds to generate and compile (or load from numba's cache) the code
        self.compile_seconds = time.perf_counter() - start

    def send(self, x):
        """``x`` itself when it is a host array already (what the network's
        device would send back, for a fraction of its cost), else sent."""
        return x if type(x) is numpy.ndarray else self.net.send(x)

    def _batch(self, x):
        """``x`` as a float32 (N, C, H, W) batch of the one array type the
        native code is compiled for (C-contiguous, aligned, writeable: numba
        types a read-only array apart); any other shape (also one of the same
        size, such as channels last) gets ``validate_inputs``' error."""
        x = numpy.require(x, numpy.float32, ['C', 'A', 'W'])
        if x.ndim != 4 or not len(x) or x.shape[1:] != tuple(self.input_shape):
            validate_inputs(x, self.input_shape)
            raise InvalidValue('x must be a batch of samples of shape {}, got shape {}'.format(
                tuple(self.input_shape), x.shape))
        return x

    def _take_scratch(self):
        """A ``_Scratch`` no running call uses: give it back with
        ``self._scratch.append`` once no thread of the call can write it."""
        try:
            return self._scratch.pop()
        except IndexError:  # every kept one is in use: another thread's call
            return _Scratch(self.threads, self.program.slab)

    def _split(self, fn, n, *args):
        """``fn(*args, S, taken, n)`` on up to ``threads`` threads at once,
        each with its own slab ``S`` (of one ``_Scratch`` this call alone
        uses) and one counter ``taken`` (int64, from 0, this call's own),
        from which the native code takes one sample at a time
        (``Program``): a thread that starts late (a wake-up) or runs slower
        (a core shared with another process) takes fewer samples, and each
        thread makes one call per batch (every return to Python waits for
        the interpreter lock, which another thread may hold). Returns once
        every sample taken is done; a worker that starts after that runs
        nothing. The first exception raised in ``fn`` is raised here, after
        every thread that started has ended."""
        taken = numpy.zeros(1, numpy.int64)
        parts = max(1, min(self.threads, n))
        scratch = self._take_scratch()
        slabs = scratch.slabs
        if parts == 1:
            try:
                fn(*args, slabs[0], taken, n)
            finally:
                self._scratch.append(scratch)
            return
        if self._pool is None:
            with self._pool_lock:  # one pool, however many threads call first at once
                if self._pool is None:
                    from concurrent.futures import ThreadPoolExecutor
                    self._pool = ThreadPoolExecutor(self.threads - 1)
        lock, all_done, errors = threading.Lock(), threading.Lock(), []
        all_done.acquire()  # released by the last worker to end after the caller
        running, over = [0], [False]  # workers inside fn; whether the caller has finished

        def work(S):
            with lock:
                if over[0]:
                    return
                running[0] += 1
            try:
                fn(*args, S, taken, n)
            except BaseException as e:
                errors.append(e)
            with lock:
                running[0] -= 1
                if over[0] and not running[0]:
                    all_done.release()

        for t in range(1, parts):
            self._pool.submit(work, slabs[t])
        try:
            fn(*args, slabs[0], taken, n)
        except BaseException as e:
            errors.append(e)
        with lock:
            over[0] = True
            wait = running[0] > 0
        if wait:
            all_done.acquire()
        self._scratch.append(scratch)  # every thread that wrote it has ended
        if errors:
            raise errors[0]

    def _decision(self, thresholds):
        """(measure code, float64 limits) for ``thresholds``, kept for the
        last settings seen (this sits on the batch-1 hot path); code None
        for a measure decided in Python."""
        key = self.decision_key(thresholds)
        decided = self._decided  # one tuple: a thread never sees a key with another's limits
        if key != decided[0]:
            measure = confidence.get_measure(self.net.confidence)
            code = _NATIVE.get(measure)  # None for any other measure object, whatever its name
            limits = numpy.array([measure.limit(t) for t in thresholds] + [0.], numpy.float64)
            decided = self._decided = key, (code, limits)
        return decided[1]

    def _run(self, x, limits, code, main_only):
        p = self.program
        if not self._uses_gemm and type(x) is numpy.ndarray and x.ndim == 4 and len(x) == 1:
            # batch 1, the latency path: one native call on x as it is; the
            # compiled code takes only the array type _batch makes (else
            # TypeError) and checks the sample shape (else 1)
            labels, exits = numpy.empty(1, numpy.int32), numpy.empty(1, numpy.int32)
            scratch = self._take_scratch()
            scratch.taken[0] = 0
            try:
                done = p.run(x, p.weights, scratch.slabs[0], limits, code, main_only,
                             labels, exits, scratch.taken, 1) == 0
            except TypeError:
                done = False  # converted (or refused) below
            self._scratch.append(scratch)
            if done:
                return labels, exits
        x = self._batch(x)
        n = len(x)
        labels = numpy.empty(n, numpy.int32)
        exits = numpy.empty(n, numpy.int32)
        if self._uses_gemm:  # one BLAS thread per engine thread
            with _one_blas_thread():
                self._call(x, limits, code, main_only, labels, exits)
        else:
            self._call(x, limits, code, main_only, labels, exits)
        return labels, exits

    def _call(self, x, limits, code, main_only, labels, exits):
        p = self.program

        def run(S, taken, n):
            if p.run(x, p.weights, S, limits, code, main_only, labels, exits, taken, n):
                raise InvalidValue('the native code refused a batch of shape {} ({} samples '
                                   'of shape {} expected)'.format(x.shape, n, self.input_shape))
        self._split(run, len(x))

    def explain(self, measure=False):
        """The layers' kernels and measured times as text, one line per layer
        (``Program.explain`` gives the rows): layer, kind, input and output
        shapes (C x H x W), kernel chosen, µs per call of each kernel; with
        ``measure=True`` every layer is timed now (a profile by layer), and
        a last line sums the times by layer kind."""
        rows = self.program.explain(measure)
        lines = ['{:>5s} {:<13s} {:<22s} {:<12s} {:<6s} {}'.format(
            'layer', 'kind', 'input', 'output', 'kernel', 'µs per call')]
        total = {}
        for r in rows:
            times = ', '.join('{} {:.1f}'.format(k, v) for k, v in sorted(r['us'].items()))
            lines.append('{:>5d} {:<13s} {:<22s} {:<12s} {:<6s} {}'.format(
                r['layer'], r['kind'], r['input'], r['output'], r['kernel'] or '-', times))
            chosen = r['us'].get(r['kernel'] or r['kind'])
            if chosen is not None:
                total[r['kind']] = total.get(r['kind'], 0.) + chosen
        if total:
            lines.append('sum of the chosen kernels\' µs by kind (every layer once, early '
                         'heads included): ' + ', '.join('{} {:.0f}'.format(k, v) for k, v in
                                                           sorted(total.items())))
        return '\n'.join(lines)

    def route(self, x, thresholds, timer=None):
        code, limits = self._decision(thresholds)
        if code is None:  # a measure decided in Python: the fast path's steps, in test mode
            with chainer.using_config('train', False), chainer.no_backprop_mode():
                return self._fast.route(x, thresholds)
        return self._run(x, limits, code, False)

    def main_route(self, x, timer=None):
        return self._run(x, self._main_limits, 0, True)

    def main_logits(self, x, timer):
        """The baseline network's logits (through the fast path: the native
        code returns labels only)."""
        return self._fast.main_logits(x, timer)


def compile_engine(net, warn=print):
    """The fastest engine available for ``net``: ``NumbaBranchyNet`` when numba
    is installed and can compile every layer, else ``FastBranchyNet`` (the
    reason passed to ``warn``)."""
    try:
        return NumbaBranchyNet(net)
    except (ImportError, NotCompilable) as e:
        from branchynet.engines.fast import FastBranchyNet
        if warn is not None:
            warn('numba path unavailable, using the fast path: {}'.format(e))
        return FastBranchyNet(net)
