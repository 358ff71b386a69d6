"""Layers that let a network be written as a flat list, as in the original.

* ``FL(fn, *args, **kwargs)`` turns a plain function (``F.relu``,
  ``F.max_pooling_2d`` with its window...) into a layer of the list.
* ``SL(fn)`` is a layer that is only active in training mode (identity at
  test time); useful for dropout-like or augmenting layers.
* ``Branch([...])`` marks a branch point in the list and holds that exit's
  head; the last ``Branch`` of a list is the main network's final head.
* ``Net`` is a ``ChainList`` that runs a slice of its layers.

Train/test behaviour follows ``chainer.config.train`` (Chainer >= 2), so
dropout and batch normalisation switch with ``chainer.using_config``.
"""
import chainer

from branchynet.cpukernels import run_layer


class FL(chainer.Link):
    """A parameter-free layer wrapping ``fn(x, *args, **kwargs)``.

    ``fn`` must be importable (a module-level function) for the model to
    stay picklable with plain pickle; dill also handles lambdas.
    """

    def __init__(self, fn, *args, **kwargs):
        super().__init__()
        if not callable(fn):
            raise TypeError('FL expects a callable as fn, got {!r}'.format(fn))
        self.fn = fn
        self.args = args
        self.kwargs = kwargs

    def forward(self, x):
        return self.fn(x, *self.args, **self.kwargs)

    def __repr__(self):
        name = getattr(self.fn, '__name__', type(self.fn).__name__)
        return 'FL({})'.format(name)


class SL(chainer.Chain):
    """Applies ``fn`` in training mode only; identity in test mode.

    ``fn`` may be a Link (registered as a child, so its parameters are
    saved and trained) or a plain callable.
    """

    def __init__(self, fn):
        super().__init__()
        if isinstance(fn, chainer.Link):
            with self.init_scope():
                self.fn = fn
        elif callable(fn):
            self.fn = fn
        else:
            raise TypeError('SL expects a Link or a callable, got {!r}'.format(fn))

    def forward(self, x):
        if chainer.config.train:
            return self.fn(x)
        return x


class Net(chainer.ChainList):
    """A chain of layers that can be run in slices: ``net(x, starti, endi)``."""

    def __init__(self, layers=()):
        super().__init__()
        for layer in layers:
            if not isinstance(layer, chainer.Link):
                raise TypeError(
                    'every layer must be a chainer.Link (wrap plain functions '
                    'in FL), got {!r}'.format(layer))
            self.add_link(layer)

    def forward(self, x, starti=0, endi=None):
        for layer in self[starti:endi]:
            x = run_layer(layer, x)
        return x

    def train(self, x, starti=0, endi=None):
        """Run the slice in training mode (original API)."""
        with chainer.using_config('train', True):
            return self(x, starti, endi)

    def test(self, x, starti=0, endi=None):
        """Run the slice in test mode, without building a graph (original API)."""
        with chainer.using_config('train', False), chainer.no_backprop_mode():
            return self(x, starti, endi)


class Branch(Net):
    """Marks a branch point in a flat network list and holds its exit head."""
