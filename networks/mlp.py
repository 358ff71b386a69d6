"""The original's three-layer perceptron (no branches), ``MLP(n_in, n_units, n_out)``."""
import branchynet  # noqa: F401  (compatibility shims before chainer)
import chainer
import chainer.functions as F
import chainer.links as L


class MLP(chainer.Chain):
    """linear(n_in, n_units), relu, linear(n_units, n_units), relu, linear(n_units, n_out)."""

    def __init__(self, n_in, n_units, n_out):
        super().__init__()
        with self.init_scope():
            self.l1 = L.Linear(n_in, n_units)
            self.l2 = L.Linear(n_units, n_units)
            self.l3 = L.Linear(n_units, n_out)

    def forward(self, x):
        return self.l3(F.relu(self.l2(F.relu(self.l1(x)))))
