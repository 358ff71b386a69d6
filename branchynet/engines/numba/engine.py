"""Early-exit inference compiled to native code with numba (optional).

The array-level fast path (``engines.fast``) and ONNX Runtime pay a
per-layer, per-call price that a network as small as B-LeNet never earns
back. This path generates one numba function per layer shape from the link
tree (``builder``, ``codegen``, ``program``). A batch is split into one
contiguous part per thread (the functions release the GIL), each run sample
by sample in the thread's own scratch slab by one native call, so the working
set of a sample (its activations) stays in the core's caches whatever the
batch size; batch size 1 is one native call.

``NumbaBranchyNet(net).predict(x, thresholds)`` gives the labels and exits
of ``net.predict`` (up to float rounding in the last bits of the logits).
Numba is optional (``requirements/numba.txt``): without it, or for a layer
this path does not know, ``NumbaBranchyNet`` raises ``ImportError`` or
``NotCompilable`` naming what is missing, and ``compile_engine`` falls back
to ``engines.fast.FastBranchyNet``. CPU (numpy) networks only. The weights
are snapshotted: compile again after training further. The generated code
and numba's machine code are cached on disk (``cache``).
"""
import time

import numpy

from branchynet.engines.base import InferenceEngine
from branchynet.measures import confidence
from branchynet.validation import InvalidValue, require_network, validate_inputs
from branchynet.engines.numba.layout import MEASURE_CODES, NotCompilable
from branchynet.engines.numba.kernels import blas_limit
from branchynet.engines.numba.program import Program


class NumbaBranchyNet(InferenceEngine):
    """Early-exit inference of a trained BranchyNet, compiled with numba.

    Same answers as ``net.predict``/``net.predict_main``. A batch is split
    into ``threads`` contiguous parts run at once (the generated functions
    release the GIL); default: one per core. ``kernels``: each convolution and
    linear layer runs the generated loop ('loop'), an im2col and BLAS product
    ('gemm'), or ('auto') whichever was measured faster for its shape on this
    machine at compile time (``explain()`` shows the choice and times). The
    exit decision is native for the measures of ``MEASURE_CODES``; any other
    ``net.confidence`` routes through the fast path's per-exit steps.
    """

    stage_timing = False  # segment, head and decision are one native call
    #: each chunk a thread takes is this share of the samples left per thread (``_split``)
    GUIDED_SHARE = 2

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
        self._scratch = numpy.zeros((self.threads, self.program.slab), numpy.float32)
        # fixed per engine, read on every call (the batch-1 path is a few µs)
        self._slabs = list(self._scratch)  # one view per thread, made once
        self._features = int(numpy.prod(self.input_shape))
        self._uses_gemm = self.program.uses_gemm
        self._pool = None
        self._last_decision = None
        self._main_limits = numpy.zeros(self.numexits(), numpy.float64)  # not read
        # starts the worker threads now, not inside the first timed batch
        self.main_route(numpy.zeros((self.threads,) + tuple(self.input_shape), numpy.float32))
        #: seconds to generate and compile (or load from numba's cache) the code
        self.compile_seconds = time.perf_counter() - start

    def send(self, x):
        """``x`` itself when it is a host array already (what the network's
        device would send back, for a fraction of its cost), else sent."""
        return x if type(x) is numpy.ndarray else self.net.send(x)

    def _rows(self, x):
        """``x`` as contiguous float32 rows, one flat sample each; a batch
        whose samples are not ``input_shape``'s size (the native code would
        read past them) gets ``validate_inputs``' error."""
        x = numpy.ascontiguousarray(x, dtype=numpy.float32)
        if not len(x) or x.size != len(x) * self._features:
            validate_inputs(x, self.input_shape)
            raise InvalidValue('x must be a batch of samples of shape {}, got shape {}'.format(
                tuple(self.input_shape), x.shape))
        return x.reshape(len(x), self._features)

    def _split(self, fn, n, *args):
        """``fn(*args, S, lo, hi)`` over ``range(n)`` on ``threads`` threads at
        once, each taking the next chunk of samples as it finishes one: a
        thread that starts late (a wake-up) or runs slower (a core shared with
        another process) takes fewer. Guided: a chunk is the samples left over
        ``GUIDED_SHARE`` times the threads, so the chunks shrink towards the
        end and the threads finish close together (equal chunks of an eighth
        of the batch left one thread up to a chunk's time alone at the end).
        Returns once every sample is done, without waiting for a worker that
        has not woken up yet (on a busy machine that can take milliseconds):
        it finds nothing left and returns. The first exception raised in
        ``fn`` is raised here, after the chunks already started have ended."""
        parts = max(1, min(self.threads, n))
        if parts == 1:
            fn(*args, self._slabs[0], 0, n)
            return
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor
            self._pool = ThreadPoolExecutor(self.threads - 1)
        import threading
        lock, all_done, share = threading.Lock(), threading.Event(), parts * self.GUIDED_SHARE
        taken, finished, errors = [0], [0], []

        def work(S):
            while True:
                with lock:
                    lo = taken[0]
                    taken[0] = hi = min(n, lo + max(1, (n - lo) // share))
                if lo >= n:
                    return
                try:
                    fn(*args, S, lo, hi)
                except BaseException as e:
                    errors.append(e)
                with lock:
                    if errors:  # nothing more is started; what is not taken counts as done
                        hi, taken[0] = hi + n - taken[0], n
                    finished[0] += hi - lo
                    if finished[0] == n:
                        all_done.set()

        for t in range(1, parts):
            self._pool.submit(work, self._slabs[t])
        work(self._slabs[0])
        all_done.wait()
        if errors:
            raise errors[0]

    def _decision(self, thresholds):
        """(measure code, float64 limits) for ``thresholds``, kept for the
        last settings seen (this sits on the batch-1 hot path); code None
        for a measure decided in Python."""
        key = (self.net.confidence, tuple(thresholds))
        if self._last_decision is None or self._last_decision[0] != key:
            measure = confidence.get_measure(self.net.confidence)
            code = MEASURE_CODES.get(measure.name)
            if confidence.MEASURES.get(measure.name) is not measure:
                code = None
            limits = numpy.array([measure.limit(t) for t in thresholds] + [0.], numpy.float64)
            self._last_decision = (key, code, limits)
        return self._last_decision[1:]

    def _run(self, x, limits, code, main_only):
        rows = self._rows(x)
        n, p = len(rows), self.program
        labels = numpy.empty(n, numpy.int32)
        exits = numpy.empty(n, numpy.int32)
        if n == 1 and not self._uses_gemm:  # one native call, no hand-off to a thread
            p.run(rows, p.weights, self._slabs[0], limits, code, main_only, labels, exits, 0, 1)
        elif self._uses_gemm:  # one BLAS thread per engine thread
            with blas_limit(1):
                self._call(rows, limits, code, main_only, labels, exits)
        else:
            self._call(rows, limits, code, main_only, labels, exits)
        return labels, exits

    def _call(self, rows, limits, code, main_only, labels, exits):
        p = self.program
        self._split(lambda S, lo, hi: p.run(rows, p.weights, S, limits, code, main_only,
                                            labels, exits, lo, hi), len(rows))

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
        if code is None:
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
