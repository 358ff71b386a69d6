"""Inference engines: one batching loop for every way of running a BranchyNet.

An engine provides ``steps`` (per exit, ``step(h, timer) -> (activation,
logits)`` on device arrays) and ``main_logits(x, timer)`` (the baseline
network). From them this base builds ``predict``, ``predict_main``,
``exit_logits`` and ``get_SM`` over batches, deciding exits with
``routing.route_batch``, and the per-batch ``route``/``main_route`` that
``branchynet.evaluation.measurement`` times at batch size 1.

Engines: ``ChainerEngine`` (the model's own links; what ``BranchyNet.predict``
uses), ``engines.fast.FastBranchyNet`` and ``engines.onnx_runtime.OnnxBranchyNet``.
"""
import chainer
import chainer.functions as F
import numpy

from branchynet.measures import confidence
from branchynet.engines.routing import (NOT_FINITE, check_finite, exit_steps,
                                        leaving_by_share, route_batch, route_batch_by_share)
from branchynet.measures.timing import NULL_TIMER
from branchynet.validation import validate_batchsize, validate_inputs

#: Default batch size of predict, get_SM, test and friends: bounded, so a large
#: input is routed in chunks (all 60,000 MNIST images in one batch took 18 GB).
DEFAULT_BATCHSIZE = 1024


def as_engine(net, engine=None):
    """``engine``, or ``net``'s own ``ChainerEngine`` when ``engine`` is None
    or the model itself (callers may pass a BranchyNet where an engine goes)."""
    if engine is None or engine is net:
        return net.chainer_engine()
    return engine


class InferenceEngine:
    """Base of the engines; subclasses set ``net``, ``xp`` and ``steps`` and
    implement ``main_logits``."""

    #: whether the per-stage timer can time the trunk segments alone
    stage_timing = True
    #: whether ``route`` and ``main_route`` run Chainer links, so that
    #: ``batched`` enters test mode without backprop around them (an engine
    #: that runs its own code does not need them: they cost a few µs a
    #: batch, much of a small batch's routing on the numba path)
    routes_through_chainer = True
    _checked = (None, None)  # the last thresholds checked (a key) and their result

    def numexits(self):
        return len(self.steps)

    def send(self, x):
        return self.net.send(x)

    def main_logits(self, x, timer):
        """Logits of the baseline network for one device batch."""
        raise NotImplementedError

    # ---------------------------------------------------------- one device batch
    def route(self, x, thresholds, timer=NULL_TIMER):
        """Early-exit labels and exits of one device batch (``route_batch``)."""
        return route_batch(self.steps, x, thresholds, self.xp, timer, self.net.confidence)

    def main_route(self, x, timer=NULL_TIMER):
        """The baseline network on one device batch: labels (arg-max of the
        logits; a softmax would not change it) and exits, every one the last
        (``NOT_FINITE`` for both where the logits are not finite)."""
        z = self.main_logits(x, timer)
        with timer.stage('decision'):
            labels = z.argmax(axis=1).astype(numpy.int32)
            exits = numpy.full(len(labels), self.numexits() - 1, dtype=numpy.int32)
            if not bool(self.xp.isfinite(z).all()):  # one reduction in the common case
                bad = chainer.backends.cuda.to_cpu(~self.xp.isfinite(z).all(axis=1))
                labels[self.xp.asarray(bad)] = NOT_FINITE
                exits[bad] = NOT_FINITE
        return labels, exits

    def all_exit_logits(self, x):
        """Every exit's logits for one device batch (no early exit), copied:
        a compiled engine returns a buffer its next call overwrites."""
        out, h = [], x
        for step in self.steps:
            h, z = step(h, NULL_TIMER)
            out.append(self.xp.array(z, copy=True))
        return out

    # --------------------------------------------------------- whole inputs
    def batched(self, x, batchsize, run, routing=False):
        """``run(device_batch)`` (a sequence of device arrays) over ``x`` in
        batches of ``batchsize`` (default ``DEFAULT_BATCHSIZE``), in test mode
        without backprop; returns each output concatenated on the host.
        ``routing``: ``run`` calls ``route`` or ``main_route``; an engine
        whose routing runs no Chainer link (``routes_through_chainer``
        False) goes without the contexts then."""
        validate_inputs(x, self.net.input_shape)
        batchsize = DEFAULT_BATCHSIZE if batchsize is None else validate_batchsize(batchsize)
        if routing and not self.routes_through_chainer:
            return self._batches(x, batchsize, run)
        with chainer.using_config('train', False), chainer.no_backprop_mode():
            return self._batches(x, batchsize, run)

    def _batches(self, x, batchsize, run):
        to_cpu = chainer.backends.cuda.to_cpu
        if len(x) <= batchsize:  # one batch: its outputs as they are
            return [to_cpu(a) for a in run(self.send(x))]
        parts = [[to_cpu(a) for a in run(self.send(x[i:i + batchsize]))]
                 for i in range(0, len(x), batchsize)]
        return [numpy.concatenate(column) for column in zip(*parts)]

    def decision_key(self, thresholds):
        """What an exit decision depends on: the registered measure object
        of ``net.confidence`` (not its name: a measure registered again under
        the same name decides otherwise) and the thresholds as a tuple."""
        return confidence.MEASURES.get(self.net.confidence), tuple(thresholds)

    def resolve_thresholds(self, thresholds):
        """``net.resolve_thresholds(thresholds)`` as a tuple, kept for the
        last list or tuple of plain numbers seen with the same measure object
        (checking them costs a few µs a call, much of a small batch's
        routing on the numba path)."""
        key = None
        if type(thresholds) in (list, tuple) and all(type(t) in (float, int) for t in thresholds):
            key = self.decision_key(thresholds)
            checked = self._checked  # one tuple: a thread never sees a key with another result
            if key == checked[0]:
                return checked[1]
        ts = tuple(self.net.resolve_thresholds(thresholds))
        if key is not None:
            self._checked = (key, ts)
        return ts

    def predict(self, x, thresholds=None, batchsize=None):
        """As ``BranchyNet.predict``: ``(labels, exits)`` numpy int32 arrays."""
        ts = self.resolve_thresholds(thresholds)
        labels, exits = self.batched(x, batchsize, lambda xb: self.route(xb, ts), routing=True)
        return labels, check_finite(exits)

    def predict_main(self, x, batchsize=None):
        """As ``BranchyNet.predict_main``: labels of the baseline network."""
        labels, exits = self.batched(x, batchsize, self.main_route, routing=True)
        check_finite(exits)
        return labels

    def predict_by_share(self, x, shares, batchsize):
        """``(labels, exits)`` by ``routing.route_batch_by_share`` per batch;
        with ``batchsize=None`` the shares are of the whole input (the
        original's one batch), computed in bounded chunks (``_by_share_whole``)."""
        if batchsize is None:
            return self._by_share_whole(x, shares)
        labels, exits = self.batched(
            x, batchsize, lambda xb: route_batch_by_share(self.steps, xb, shares, self.xp))
        return labels, check_finite(exits)

    def _by_share_whole(self, x, shares, chunk=DEFAULT_BATCHSIZE):
        """``route_batch_by_share`` over all of ``x`` as one batch, with memory
        bounded by ``chunk`` samples: exit by exit, the entropies of the
        samples still remaining are computed in chunks (from the input again,
        so no activation of the whole input is kept), the exit is chosen over
        all of them, then the next exit is computed for the rest."""
        validate_inputs(x, self.net.input_shape)
        size, last = len(x), self.numexits() - 1
        labels = numpy.empty(size, numpy.int32)
        exits = numpy.empty(size, numpy.int32)
        remaining = numpy.arange(size)
        for n in range(last + 1):
            ent, pred = self._exit_entropies(x, remaining, n, chunk)
            bad = pred == NOT_FINITE  # marked and taken out (check_finite names them)
            labels[remaining[bad]] = exits[remaining[bad]] = NOT_FINITE
            if n == last:
                labels[remaining[~bad]], exits[remaining[~bad]] = pred[~bad], n
                break
            leave = leaving_by_share(ent, shares, n, size)
            labels[remaining[leave]], exits[remaining[leave]] = pred[leave], n
            remaining = remaining[~(leave | bad)]
            if not len(remaining):
                break
        return labels, check_finite(exits)

    def _exit_entropies(self, x, index, n, chunk):
        """Softmax entropy and label at exit ``n`` of ``x[index]``, ``chunk`` at a time."""
        to_cpu = chainer.backends.cuda.to_cpu
        ents, preds = [], []
        with chainer.using_config('train', False), chainer.no_backprop_mode():
            for i in range(0, len(index), chunk):
                h = self.send(x[index[i:i + chunk]])
                for step in self.steps[:n + 1]:
                    h, z = step(h, NULL_TIMER)
                pred = to_cpu(z.argmax(axis=1)).astype(numpy.int32)
                pred[to_cpu(~self.xp.isfinite(z).all(axis=1))] = NOT_FINITE
                ents.append(to_cpu(confidence.entropy_from_logits(z)))
                preds.append(pred)
        return numpy.concatenate(ents), numpy.concatenate(preds)

    def exit_logits(self, x, batchsize=None):
        """Every exit's logits for every sample: one numpy array per exit."""
        return self.batched(x, batchsize, self.all_exit_logits)

    def get_SM(self, x, batchsize=None):
        """Every exit's softmax for every sample: one numpy array per exit."""
        return self.batched(x, batchsize, lambda xb: [
            F.softmax(z).array for z in self.all_exit_logits(xb)])


class ChainerEngine(InferenceEngine):
    """The model's own Chainer links, in test mode: the reference every other
    engine is tested against. Built per call by ``BranchyNet`` (cheap), so it
    follows the model across devices."""

    def __init__(self, net):
        self.net = net
        self.xp = net.xp
        # chainer.as_array: an empty segment or head (two exits at one point, an
        # exit before the first layer) hands its input array back unchanged
        segments = [lambda h, n=n: chainer.as_array(net.segment(h, n))
                    for n in range(net.numexits())]
        heads = [lambda h, n=n: chainer.as_array(net.head(h, n)) for n in range(net.numexits())]
        self.steps = exit_steps(segments, heads)

    def main_logits(self, x, timer):
        with timer.stage('trunk'):
            h = chainer.as_array(self.net.trunk(x))
        with timer.stage('head'):
            return chainer.as_array(self.net.branches[-1](h))
