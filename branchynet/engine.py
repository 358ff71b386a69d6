"""What every compiled inference path of a BranchyNet shares.

A path (``fastpath.FastBranchyNet``, ``onnxpath.OnnxBranchyNet``) provides
``steps`` (per exit, ``step(h, timer) -> (activation, logits)``) and
``_main_logits(x, timer)`` (the baseline network); this base turns them into
``predict``/``predict_main`` and the engine methods that
``branchynet.utils.measure_*`` time, deciding exits with the same
``route_batch`` as ``BranchyNet.predict``.
"""
import numpy

from branchynet.net import route_batch
from branchynet.timing import NULL_TIMER


class InferenceEngine:
    """Base of the compiled paths; subclasses set ``net``, ``xp``, ``steps``."""

    #: whether the per-stage timer can time the trunk segments alone
    stage_timing = True

    def numexits(self):
        return len(self.steps)

    def send(self, x):
        return self.net.send(x)

    def _main_logits(self, x, timer):
        raise NotImplementedError

    def _route(self, x, thresholds, timer=NULL_TIMER):
        return route_batch(self.steps, x, thresholds, self.xp, timer, self.net.confidence)

    def _main_route(self, x, timer=NULL_TIMER):
        z = self._main_logits(x, timer)
        with timer.stage('decision'):
            labels = z.argmax(axis=1).astype(numpy.int32)
        return labels, numpy.full(len(labels), self.numexits() - 1, dtype=numpy.int32)

    def predict(self, x, thresholds=None, batchsize=None):
        """As ``BranchyNet.predict``: ``(labels, exits)`` numpy int32 arrays."""
        return self.net._predict_with(self, x, thresholds, batchsize)

    def predict_main(self, x, batchsize=None):
        """As ``BranchyNet.predict_main``: labels of the baseline network."""
        return self.net._predict_main_with(self, x, batchsize)
