"""Export a trained BranchyNet to ONNX and run it with ONNX Runtime.

Each exit becomes one ONNX graph: trunk segment n fused with exit n's head,
with two outputs, the exit's logits and the segment's activation (for the
samples that go on to the next segment); the baseline network (whole trunk
and final head) is one more graph. ``OnnxBranchyNet`` routes samples through
these graphs with the same entropy rule and code as ``BranchyNet.predict``
(``routing.route_batch``), one ONNX Runtime call per exit reached.

On this project's 2-core CPU, B-LeNet at batch size 1 runs about twice as
fast here as on the array-level fast path (``benchmarks/gain.py``),
with the same early-exit gain. It is CPU-only and optional:
``pip install -r requirements/onnx.txt`` (onnx, onnxruntime).

Layers exported: Convolution2D (BatchNormalization after it folded in),
Linear, BatchNormalization, ReLU, tanh, sigmoid, max and average pooling,
LRN; dropout and ``SL`` layers vanish at test time. A Chain can export
itself with ``to_onnx(exporter, x)`` (the ResNet block does); anything
else is refused with an error naming the layer.
"""
import os

import numpy

from branchynet.io.fileio import atomic_write
from branchynet.engines.base import InferenceEngine
from branchynet.engines.onnx_export import OPSET, Exporter, exit_shapes, require_onnx  # noqa: F401
from branchynet.engines.onnx_graph import GRAPH_MEASURES, early_exit_model
from branchynet.engines.routing import check_finite
from branchynet.measures import confidence
from branchynet.measures.timing import NULL_TIMER
from branchynet.validation import InvalidValue, require_network, validate_batchsize

INPUT_NAME, OUTPUT_NAMES = 'x', ('logits', 'features')
#: the early-exit graph's outputs ``route`` asks for
ROUTE_OUTPUTS = ['labels', 'exits']


def export_models(net, sample=None, shapes=None):
    """ONNX models of ``net``: ``(main, exits)``. ``exits[n]`` maps segment n's
    input ``x`` to ``(logits, features)`` (the last exit: logits only).
    ``sample``: one input (default: zeros of ``net.input_shape``), run
    through Chainer to learn each segment's input shape (or ``shapes``,
    ``exit_shapes``' answer)."""
    inputs, logits = shapes if shapes is not None else exit_shapes(net, sample)
    last = net.numexits() - 1
    exporter = Exporter()
    z = exporter.sequence(net.head_links(last), exporter.sequence(list(net.trunk), 'x'))
    main = exporter.model(('x', inputs[0]), [(z, logits[last])], OUTPUT_NAMES[:1])
    exits = []
    for n in range(net.numexits()):
        exporter = Exporter()
        h = exporter.sequence(net.trunk[slice(*net.segment_bounds(n))], 'x')
        z = exporter.sequence(net.head_links(n), h)
        outputs = [(z, logits[n])] + ([(h, inputs[n + 1])] if n < last else [])
        exits.append(exporter.model(('x', inputs[n]), outputs, OUTPUT_NAMES[:len(outputs)]))
    return main, exits


def exit_file_stem(index):
    """File name (without ``.onnx``) of the exit with 0-based ``index``: exits
    are numbered from 1 in files, as in figures, logs and tables."""
    return 'exit{}'.format(index + 1)


#: the engine's forms: one graph per exit (the default), or one early-exit graph per network
FORMS = ('sessions', 'graph')


class OnnxBranchyNet(InferenceEngine):
    """Early-exit inference of a trained BranchyNet on ONNX Runtime (CPU).

    Same interface as ``engines.fast.FastBranchyNet`` (``branchynet.engines.base``).
    The models snapshot the weights: build again after training.
    ``save(directory)`` writes ``main.onnx`` and ``exit1.onnx``, ``exit2.onnx``...
    (exits numbered from 1; ``branchynet.engines.deploy.save_bundle`` adds a manifest
    and a standalone ``predict.py``); ``save_graph(path)`` the early-exit graph.
    ``threads``: ONNX Runtime's intra-op threads (1 suits batch size 1).

    ``form``: how ``predict`` and ``route`` run early exit.

    * ``'sessions'`` (the default): one session per exit (trunk segment and
      head), the decisions made in Python between them
      (``routing.route_batch``), one ``session.run`` per exit reached.
    * ``'graph'``: one ``session.run`` per batch of one ONNX graph
      that does the whole early-exit inference, exit decisions included
      (``onnx_graph.early_exit_model``; a second graph without Compress and
      Scatter answers batches of one sample). The thresholds are an input of
      the graph, so changing them (``calibrate``, ``thresholdExits``, the
      ``thresholds`` argument) rebuilds nothing. A measure without a graph
      (one registered beside entropy, maxprob and margin) is routed as
      ``'sessions'`` does.

    Measured on a 2-core Xeon (docs/benchmarks.md), the graph was 6-8 %
    slower at batch size 1 where nearly every sample leaves at exit 1 of
    B-LeNet (its decision nodes cost more than Python's decision on one
    row), a few per cent faster where half the samples go on, and level at
    batch sizes 64 and 512: so the sessions stay the default.

    Both forms use the per-exit sessions for ``exit_logits``, ``get_SM`` and
    ``predict_percent``, and the main graph for ``predict_main``.
    """

    routes_through_chainer = False  # ONNX Runtime runs the whole graph

    #: the per-stage (trunk-only) timer cannot split a fused exit graph
    stage_timing = False

    _decided = (None, None)  # the last decision key and its (sessions, limits)

    def __init__(self, net, threads=1, form='sessions'):
        require_network(net)
        threads = validate_batchsize(threads, 'threads')
        if form not in FORMS:
            raise InvalidValue('form must be one of {}, got {!r}'.format(
                ', '.join(repr(f) for f in FORMS), form))
        if net.xp is not numpy:
            raise InvalidValue('the ONNX path runs on the CPU: move the model with '
                               'net.to_cpu() first')
        _, ort = require_onnx()
        self.net = net
        self.xp = numpy
        self.form = form
        self.shapes = exit_shapes(net)
        self.models = export_models(net, shapes=self.shapes)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL

        def session(model):
            return ort.InferenceSession(model.SerializeToString(), options,
                                        providers=['CPUExecutionProvider'])
        self._session = session
        self.main_session = session(self.models[0])
        self.exit_sessions = [session(m) for m in self.models[1]]
        self.steps = [self._step(s) for s in self.exit_sessions]
        #: (measure name, with logits) -> (batch session, batch-1 session) of
        #: the early-exit graph, built on first use
        self.graph_sessions = {}
        if form == 'graph':
            self._graph_sessions(confidence.get_measure(net.confidence))

    def _graph_sessions(self, measure, logits=False):
        """The early-exit graph's sessions for ``measure`` (built on first use),
        or None for a measure without a graph. ``logits``: the graph with the
        logits output (``route`` takes the one without: its Compress and
        ScatterND per exit cost a few per cent on B-LeNet)."""
        name = GRAPH_MEASURES.get(measure)
        if name is None:
            return None
        found = self.graph_sessions.get((name, logits))
        if found is None:
            found = tuple(self._session(early_exit_model(self.net, name, batch1=one,
                                                         shapes=self.shapes, logits=logits))
                          for one in (False, True))
            self.graph_sessions[name, logits] = found
        return found

    def _decision(self, thresholds):
        """``(sessions, limits)`` for ``thresholds``: the graph's sessions
        (None: route in Python) and the float64 limits it takes, kept for the
        last settings seen (this sits on the batch-1 hot path)."""
        key = self.decision_key(thresholds)
        decided = self._decided  # one tuple: a thread never sees a key with another's
        if key != decided[0]:
            measure = confidence.get_measure(self.net.confidence)
            limits = numpy.array([measure.limit(t) for t in thresholds], numpy.float64)
            decided = self._decided = key, (self._graph_sessions(measure), limits)
        return decided[1]

    def route(self, x, thresholds, timer=NULL_TIMER):
        """Labels and exits of one batch: one run of the early-exit graph
        (``form='graph'``), else ``routing.route_batch`` over the exits'
        sessions (``form='sessions'``, or a measure without a graph)."""
        if self.form == 'graph':
            sessions, limits = self._decision(thresholds)
            if sessions is not None:
                with timer.stage('exit'):
                    return sessions[len(x) == 1].run(
                        ROUTE_OUTPUTS, {INPUT_NAME: x, 'limits': limits})
        return InferenceEngine.route(self, x, thresholds, timer)

    def predict_logits(self, x, thresholds=None, batchsize=None):
        """``(labels, exits, logits)``: ``predict``'s answer and the logits of
        the exit each sample left at, from the early-exit graph with its
        logits output (either form; a measure without a graph is refused)."""
        ts = self.resolve_thresholds(thresholds)
        sessions = self._graph_sessions(confidence.get_measure(self.net.confidence), True)
        if sessions is None:
            raise InvalidValue('the early-exit graph decides by {}; the network\'s measure '
                               'is {!r}'.format(', '.join(GRAPH_MEASURES.values()),
                                                self.net.confidence))
        limits = numpy.array([confidence.get_measure(self.net.confidence).limit(t)
                              for t in ts], numpy.float64)
        labels, exits, logits = self.batched(x, batchsize, lambda xb: sessions[
            len(xb) == 1].run(None, {INPUT_NAME: xb, 'limits': limits}), routing=True)
        return labels, check_finite(exits), logits

    def save_graph(self, path, measure=None, batch1=False):
        """Write the early-exit graph (``onnx_graph.early_exit_model``: inputs
        ``x`` and ``limits``, outputs ``labels``, ``exits``, ``logits``) of
        ``measure`` (default: the network's) to ``path``, atomically."""
        measure = self.net.confidence if measure is None else measure
        model = early_exit_model(self.net, confidence.get_measure(measure).name,
                                 batch1=batch1, shapes=self.shapes)
        with atomic_write(os.fspath(path)) as f:
            f.write(model.SerializeToString())
        return path

    @staticmethod
    def _step(sess):
        def run(h, timer):
            with timer.stage('exit'):
                out = sess.run(None, {'x': h})
            return (out[1] if len(out) > 1 else None), out[0]
        return run

    def send(self, x):
        return numpy.ascontiguousarray(x)

    def save(self, directory):
        """Write the ONNX models (atomically) to ``directory`` (made if missing):
        ``main.onnx`` and ``exit<n>.onnx`` for exit n = 1, 2, ... Returns the
        file names."""
        if os.path.lexists(directory) and not os.path.isdir(directory):
            raise InvalidValue('{} exists and is not a folder; save writes main.onnx and '
                               'exit<n>.onnx into a folder'.format(directory))
        os.makedirs(directory, exist_ok=True)
        main, exits = self.models
        named = [('main', main)] + [(exit_file_stem(n), m) for n, m in enumerate(exits)]
        for name, model in named:
            with atomic_write(os.path.join(directory, name + '.onnx')) as f:
                f.write(model.SerializeToString())
        return [name + '.onnx' for name, _ in named]

    def main_logits(self, x, timer):
        with timer.stage('exit'):
            return self.main_session.run(None, {'x': x})[0]
