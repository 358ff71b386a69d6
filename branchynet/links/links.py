"""Layers that let a network be written as a flat list, as in the original.

* ``FL(fn, *args, **kwargs)`` turns a plain function (``F.relu``,
  ``F.max_pooling_2d`` with its window...) into a layer of the list.
* ``SL(fnTrain, fnTest=None)`` switches between two layers: ``fnTrain`` in
  training mode, ``fnTest`` at test time (identity when None); useful for
  dropout-like or augmenting layers.
* ``Branch([...], weight=1.)`` marks a branch point in the list and holds
  that exit's head; the last ``Branch`` of a list is the main network's final
  head. ``weight`` is that exit's loss weight in joint training.
* ``Net`` is a ``ChainList`` that runs a slice of its layers.

Train/test behaviour follows ``chainer.config.train`` (Chainer >= 2), so
dropout and batch normalisation switch with ``chainer.using_config``.
"""
import inspect

import chainer
import chainer.links as L
import numpy
from chainer.utils.type_check import InvalidType as ChainerInvalidType

from branchynet.links.cpukernels import fuses_with_relu, run_convolution_relu, run_layer
from branchynet.validation import InvalidValue


class FL(chainer.Link):
    """A parameter-free layer wrapping ``fn(x, *arguments, **keywords)``.

    ``arguments`` and ``keywords`` are the original's attribute names
    (``args`` and ``kwargs`` read the same values). ``fn`` must be importable
    (a module-level function) for the model to stay picklable with plain
    pickle; dill also handles lambdas.
    """

    def __init__(self, fn, *args, **kwargs):
        super().__init__()
        if not callable(fn):
            raise TypeError('FL expects a callable as fn, got {!r}'.format(fn))
        self.fn = fn
        self.arguments = args
        self.keywords = kwargs

    @property
    def args(self):
        return self.arguments

    @property
    def kwargs(self):
        return self.keywords

    def __setstate__(self, state):  # models pickled when the layer held args/kwargs
        if 'args' in state:
            state['arguments'] = state.pop('args')
        if 'kwargs' in state:
            state['keywords'] = state.pop('kwargs')
        self.__dict__.update(state)

    def forward(self, x):
        return self.fn(x, *self.arguments, **self.keywords)

    def bound_arguments(self):
        """The named arguments of the call ``fn(x, *arguments, **keywords)``,
        defaults filled in (what the compiled inference paths read, e.g. ``ksize``)."""
        bound = inspect.signature(self.fn).bind(None, *self.arguments, **self.keywords)
        bound.apply_defaults()
        return bound.arguments

    def __repr__(self):
        name = getattr(self.fn, '__name__', type(self.fn).__name__)
        return 'FL({})'.format(name)


def is_function(link, fn):
    """Whether ``link`` is an ``FL`` wrapping ``fn`` (e.g. ``F.relu``)."""
    return isinstance(link, FL) and link.fn is fn


def pair(v):
    """A Chainer ``ksize``/``stride``/``pad`` argument as ``(height, width)``."""
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


class SL(chainer.Chain):
    """Switch layer: ``fnTrain`` in training mode, ``fnTest`` in test mode
    (identity when ``fnTest`` is None).

    Each may be a Link (registered as a child, so its parameters are saved
    and trained) or a plain callable. ``fn`` is another name of ``fnTrain``.
    """

    def __init__(self, fnTrain, fnTest=None):
        super().__init__()
        for name, fn in (('fnTrain', fnTrain), ('fnTest', fnTest)):
            if isinstance(fn, chainer.Link):
                with self.init_scope():
                    setattr(self, name, fn)
            elif callable(fn) or (fn is None and name == 'fnTest'):
                setattr(self, name, fn)
            else:
                raise TypeError('SL expects a Link or a callable as {}, got {!r}'
                                .format(name, fn))

    @property
    def fn(self):
        return self.fnTrain

    def __setstate__(self, state):  # models pickled when the layer held ``fn``
        if 'fn' in state:
            state['fnTrain'] = state.pop('fn')
            children = state.get('_children')
            if children is not None and 'fn' in children:
                children.discard('fn')
                children.add('fnTrain')
        state.setdefault('fnTest', None)
        self.__dict__.update(state)

    def forward(self, x):
        if chainer.config.train:
            return self.fnTrain(x)
        if self.fnTest is None:
            return x
        return self.fnTest(x)


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

    def named(self, where):
        """This chain, called ``where`` in errors about its layers' input sizes."""
        self.where = where
        return self

    def forward(self, x, starti=0, endi=None):
        indices = range(len(self))[starti:endi]
        k = 0
        while k < len(indices):
            i = indices[k]
            try:
                # in training, a convolution and the ReLU after it in this slice: one node
                if k + 1 < len(indices) and fuses_with_relu(self[i], self[indices[k + 1]], x):
                    x = run_convolution_relu(self[i], x)
                    k += 2
                    continue
                x = run_layer(self[i], x)
            except ChainerInvalidType as e:  # Chainer's names neither layer nor fitting size
                raise InvalidValue(input_size_error(self, i, x)) from e
            k += 1
        return x

    def train(self, x, starti=0, endi=None):
        """Run the slice in training mode (original API)."""
        with chainer.using_config('train', True):
            return self(x, starti, endi)

    def test(self, x, starti=0, endi=None):
        """Run the slice in test mode, without building a graph (original API)."""
        with chainer.using_config('train', False), chainer.no_backprop_mode():
            return self(x, starti, endi)


def input_size_error(net, i, x):
    """One line on layer ``i`` of ``net`` refusing its input ``x``: where the
    layer is (``net.where``: which exit's head, or the trunk, as BranchyNet
    names them), what it got, and for a ``Linear`` or ``Convolution2D`` the
    size that would fit and the ``None`` that sizes it from its input."""
    layer, shape = net[i], tuple(x.shape[1:])
    where = '{}, layer {}'.format(getattr(net, 'where', 'the network'), i + 1)
    dims = ' x '.join(map(str, shape))
    if isinstance(layer, L.Linear) and layer.W.array is not None:
        out, need = layer.W.shape
        got = int(numpy.prod(shape))
        return ('{}: L.Linear({}, {}) gets {} input features per sample ({}): write '
                'L.Linear({}, {}), or L.Linear(None, {}), which takes the size from its first '
                'input'.format(where, need, out, got, dims, got, out, out))
    if isinstance(layer, L.Convolution2D) and layer.W.array is not None and len(shape) == 3:
        out, need = layer.W.shape[:2]
        return ('{}: L.Convolution2D({}, {}, ...) gets {} input channels per sample ({}): '
                'write L.Convolution2D({}, {}, ...), or L.Convolution2D(None, {}, ...), which '
                'takes the channels from its first input'.format(
                    where, need, out, shape[0], dims, shape[0], out, out))
    return '{}: {} cannot take inputs of shape ({}) per sample'.format(
        where, type(layer).__name__, dims)


class Branch(Net):
    """Marks a branch point in a flat network list and holds its exit head.

    ``weight`` is this exit's weight in the joint training loss (the default
    of ``BranchyNet.exit_weights``). The original accepted it and trained
    with 1.0 anyway; 1.0 remains the default, so results match it.
    """

    def __init__(self, branch=(), weight=1.):
        super().__init__(branch)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or \
                not weight >= 0:
            raise ValueError('Branch weight must be a non-negative number, got {!r}'
                             .format(weight))
        self.weight = float(weight)

    def __setstate__(self, state):  # models pickled before Branch had a weight
        state.setdefault('weight', 1.0)
        self.__dict__.update(state)
