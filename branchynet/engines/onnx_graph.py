"""One ONNX graph that does a BranchyNet's whole early-exit inference.

``early_exit_model(net, measure)`` builds a graph with inputs ``x`` (a batch,
float32) and ``limits`` (float64, one per early exit: the measure's limit,
``Measure.limit(T)`` of each threshold T) and outputs, in input order,
``labels`` (int32), ``exits`` (int32, 0-based) and ``logits`` (float32, the
logits of the exit each sample left at). One ``session.run`` answers a batch:

    trunk segment 1 -> head 1 -> score (float64) -> leave = score < limit
      -> labels, exits and logits of the leaving samples scattered into place
      -> If any sample stays: Compress the activation and the indices of
         the staying samples -> segment 2 -> head 2 -> ... -> final exit

``If`` subgraphs nest, one per early exit, so no segment runs on an empty
batch. ``batch1=True`` builds the latency form: one sample, no Compress or
Scatter, each ``If`` on that sample's decision.

The decision is ``routing.route_batch``'s: the scores are computed from the
logits in float64 (the entropy as ``-sum p log p`` with ``log p`` from
``LogSoftmax``, the same quantity as ``confidence.entropy_from_logits``'s
``log S - sum(e d) / S`` up to the last bits; maxprob and margin from a
float64 ``Softmax``); a sample leaves where its score is strictly below the
limit; ties in the arg-max go to the first class; a sample whose logits at
an exit it reaches are not finite gets label and exit ``NOT_FINITE`` (-1)
there. Only the three built-in measures have a graph (``GRAPH_MEASURES``).
Measured (docs/benchmarks.md), this form is not faster than one session
per exit: ``OnnxBranchyNet`` keeps that as its default.
"""
import numpy

from branchynet.measures import confidence

#: the measure objects this module turns into graph nodes (a measure
#: registered later under the same name is not one of them)
GRAPH_MEASURES = {confidence.MEASURES[name]: name for name in ('entropy', 'maxprob', 'margin')}

#: graph inputs and outputs
INPUTS = ('x', 'limits')
OUTPUTS = ('labels', 'exits', 'logits')

NOT_FINITE = -1


class _Builder:
    """Graph construction on an ``onnx_export.Exporter``: nodes go to the
    exporter's current node list (swapped for each ``If`` branch), weights
    to its initializers (outer scope of every branch)."""

    def __init__(self, exporter, net, measure, with_logits):
        self.ex, self.net, self.measure = exporter, net, measure
        self.onnx = exporter.onnx
        self.last = net.numexits() - 1
        self.with_logits = with_logits
        tp = self.onnx.TensorProto
        self._consts = [{}]  # per scope (the graph, then each If branch entered)
        self.types = {'labels': tp.INT32, 'exits': tp.INT32, 'logits': tp.FLOAT}

    def const(self, value, dtype):
        """A constant initializer, one per value and type (made on first use)."""
        key = (repr(value), numpy.dtype(dtype).str)
        for scope in self._consts:
            if key in scope:
                return scope[key]
        name = self._consts[-1][key] = self.ex.const(numpy.array(value, dtype), 'c', dtype)
        return name

    @property
    def axes1(self):
        return self.const([1], numpy.int64)

    @property
    def minus1(self):
        return self.const(NOT_FINITE, numpy.int32)

    def node(self, op, inputs, **attrs):
        return self.ex.node(op, inputs, **attrs)

    def exit_logits(self, h, n):
        """Segment ``n`` then head ``n``: ``(activation, logits)``."""
        net = self.net
        h = self.ex.sequence(net.trunk[slice(*net.segment_bounds(n))], h)
        return h, self.ex.sequence(net.head_links(n), h)

    def decide(self, z, n):
        """Exit ``n``'s decision on logits ``z`` (M, K): ``(stay, finish)``.
        ``stay`` (bool, None at the last exit): the row's score is not below
        the limit and the row is finite. ``finish()`` appends the nodes of
        the leaving rows' answer and returns ``(label, exit)`` (int32: the
        arg-max, the first of equal maxima, and ``n``; both ``NOT_FINITE``
        where the row is not finite); the batch-1 graph calls it inside the
        ``If`` branch of a leaving sample only."""
        node, tp = self.node, self.onnx.TensorProto
        z64 = node('Cast', [z], to=tp.DOUBLE)
        bad = None
        if n == self.last:
            stay = None
        else:
            limit = node('Gather', ['limits', self.const([n], numpy.int64)])
            if self.measure == 'entropy':
                # -H = sum p log p with log p = LogSoftmax(z): NaN exactly where
                # the row is not finite (z - max z is NaN or -inf there, and
                # p log p = 0 * -inf); -H <= -limit is False for NaN
                logp = node('LogSoftmax', [z64], axis=1)
                neg_h = node('ReduceSum', [node('Mul', [node('Exp', [logp]), logp]),
                                           self.axes1], keepdims=0)
                stay = node('LessOrEqual', [neg_h, node('Neg', [limit])])
                bad = lambda: node('IsNaN', [neg_h])  # noqa: E731 (made where needed)
            else:
                p = node('Softmax', [z64], axis=1)
                one = self.const(1.0, numpy.float64)
                if self.measure == 'maxprob':  # 1 - max p
                    score = node('Sub', [one, node('ReduceMax', [p], axes=[1], keepdims=0)])
                else:  # margin: 1 - (p1 - p2), the two largest
                    top, p1, p2 = (self.ex._name(base) for base in ('top2', 'p1', 'p2'))
                    helper = self.onnx.helper
                    self.ex.nodes.append(helper.make_node(
                        'TopK', [p, self.const([2], numpy.int64)],
                        [top, self.ex._name('top2_index')], axis=1))
                    self.ex.nodes.append(helper.make_node('Split', [top], [p1, p2], axis=1))
                    score = node('Sub', [one, node('Squeeze', [node('Sub', [p1, p2]),
                                                               self.axes1])])
                # a -inf logit leaves these scores finite: the row is checked
                not_finite = self.not_finite(z64)
                stay = node('Not', [node('Or', [node('Less', [score, limit]), not_finite])])
                bad = lambda: not_finite  # noqa: E731

        def finish():
            flag = self.not_finite(z64) if bad is None else bad()
            label = node('Cast', [node('ArgMax', [z], axis=1, keepdims=0)], to=tp.INT32)
            return (node('Where', [flag, self.minus1, label]),
                    node('Where', [flag, self.minus1, self.const(n, numpy.int32)]))
        return stay, finish

    def not_finite(self, z64):
        """Whether each row of ``z64`` (float64 logits) is not finite: its
        sum cannot overflow for float32 logits, so it is finite exactly when
        every logit is, and r - r is NaN where it is not."""
        r = self.node('ReduceSum', [z64, self.axes1], keepdims=0)
        return self.node('IsNaN', [self.node('Sub', [r, r])])

    def branch(self, build, outputs):
        """An ``If`` branch: the nodes ``build()`` appends; its outputs are
        the tensors ``build()`` returns (``outputs``: their kinds)."""
        helper = self.onnx.helper
        # the branch's weights are its own initializers: ONNX Runtime's layout
        # optimisations (NCHWc convolutions) take constant weights from the
        # graph that runs them only (measured: a branch reading the outer
        # graph's weights ran B-LeNet's convolutions 2x slower)
        saved = self.ex.nodes, self.ex.weights
        self.ex.nodes, self.ex.weights = [], []
        self._consts.append({})
        try:
            names = build()
            # a branch output must be made in the branch
            made = {o for nd in self.ex.nodes for o in nd.output}
            out = [name if name in made else self.node('Identity', [name]) for name in names]
            if len(set(out)) < len(out):
                out = [self.node('Identity', [name]) for name in out]
            nodes, weights = self.ex.nodes, self.ex.weights
        finally:
            self.ex.nodes, self.ex.weights = saved
            self._consts.pop()
        return helper.make_graph(nodes, self.ex._name('branch'), [],
                                 [helper.make_tensor_value_info(o, self.types[k], None)
                                  for o, k in zip(out, outputs)], weights)

    def if_node(self, cond, then_build, else_build, outputs, names=None):
        helper = self.onnx.helper
        then_g = self.branch(then_build, outputs)
        else_g = self.branch(else_build, outputs)
        names = names or [self.ex._name('if_' + k) for k in outputs]
        self.ex.nodes.append(helper.make_node('If', [cond], names, then_branch=then_g,
                                              else_branch=else_g))
        return names

    # ------------------------------------------------------------ batch 1
    def single(self, h, n, names=None):
        """Exit ``n`` onwards for one sample: ``(label, exit, logits)``
        (``names``: those of the ``If`` outputs, the graph's at exit 1)."""
        outputs = self.outputs()
        h, z = self.exit_logits(h, n)
        stay, finish = self.decide(z, n)

        def here():
            return list(finish()) + [z][:len(outputs) - 2]
        if n == self.last:
            return here()
        return self.if_node(stay, lambda: self.single(h, n + 1), here, outputs, names)

    # ------------------------------------------------------------ batches
    def batched(self, h, idx, state, n):
        """Exit ``n`` onwards for the samples ``idx`` (int64 indices into the
        batch) with activation ``h``; ``state``: the labels, exits (and
        logits) of the whole batch so far. Returns them updated."""
        node, outputs = self.node, self.outputs()
        h, z = self.exit_logits(h, n)
        stay, finish = self.decide(z, n)
        label, exit_id = finish()
        if n == self.last:
            return self.scatter(state, idx, label, exit_id, z)
        leave = node('Not', [stay])
        state = self.scatter(state, *(node('Compress', [v, leave], axis=0)
                                      for v in (idx, label, exit_id, z)))
        rest = node('Compress', [idx, stay], axis=0)
        anyone = node('Greater', [node('Size', [rest]), self.const(0, numpy.int64)])

        def go_on():
            return self.batched(node('Compress', [h, stay], axis=0), rest, state, n + 1)
        return self.if_node(anyone, go_on, lambda: state, outputs)

    def scatter(self, state, idx, label, exit_id, z):
        """``state`` with ``label``, ``exit_id`` and ``z`` written at ``idx``."""
        node = self.node
        out = [node('ScatterElements', [state[0], idx, label], axis=0),
               node('ScatterElements', [state[1], idx, exit_id], axis=0)]
        if self.with_logits:
            out.append(node('ScatterND', [state[2], node('Unsqueeze', [idx, self.axes1]), z]))
        return out

    def outputs(self):
        return OUTPUTS if self.with_logits else OUTPUTS[:2]


def _value_info(onnx, name, elem, shape):
    return onnx.helper.make_tensor_value_info(name, elem, shape)


def early_exit_model(net, measure='entropy', batch1=False, shapes=None, logits=True,
                     opset=17):
    """The early-exit graph of ``net`` (an ONNX ModelProto; see module doc).

    ``measure``: 'entropy', 'maxprob' or 'margin'. ``batch1``: the
    one-sample form. ``shapes``: ``(segment input shapes, logit shapes)``
    per exit, one sample each (``onnx_runtime.exit_shapes``). The logits
    output is left out where the exits' logit shapes differ.
    """
    from branchynet.engines.onnx_export import Exporter, exit_shapes
    if measure not in GRAPH_MEASURES.values():
        raise ValueError('no graph for the measure {!r}'.format(measure))
    want_logits = logits
    inputs, logits = shapes if shapes is not None else exit_shapes(net)
    with_logits = want_logits and len(set(tuple(s) for s in logits)) == 1 and \
        len(logits[0]) == 1
    ex = Exporter()
    b = _Builder(ex, net, measure, with_logits)
    onnx = ex.onnx
    tp = onnx.TensorProto
    names = b.outputs()
    if batch1:
        outs = b.single('x', 0, names)
        batch = [1]
    else:
        node = b.node
        n = node('Shape', ['x'], start=0, end=1)
        count = node('Squeeze', [n, b.const([0], numpy.int64)])
        idx = node('Range', [b.const(0, numpy.int64), count, b.const(1, numpy.int64)])
        zeros = onnx.helper.make_tensor('v', tp.INT32, [1], [0])
        state = [node('ConstantOfShape', [n], value=zeros),
                 node('ConstantOfShape', [n], value=zeros)]
        if with_logits:
            shape = node('Concat', [n, b.const(list(logits[0]), numpy.int64)], axis=0)
            state.append(node('ConstantOfShape', [shape], value=onnx.helper.make_tensor(
                'v', tp.FLOAT, [1], [0.0])))
        outs = b.batched('x', idx, state, 0)
        batch = ['N']
    for tensor, name in zip(outs, names):
        if tensor != name:
            ex.nodes.append(onnx.helper.make_node('Identity', [tensor], [name]))
    out_info = [_value_info(onnx, 'labels', tp.INT32, batch),
                _value_info(onnx, 'exits', tp.INT32, batch)]
    if with_logits:
        out_info.append(_value_info(onnx, 'logits', tp.FLOAT, batch + list(logits[0])))
    graph = onnx.helper.make_graph(
        ex.nodes, 'branchynet_early_exit',
        [_value_info(onnx, 'x', tp.FLOAT, batch + list(inputs[0])),
         _value_info(onnx, 'limits', tp.DOUBLE, [len(logits) - 1])],
        out_info, ex.weights)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid('', opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
