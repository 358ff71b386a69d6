"""B-ResNet-110 for CIFAR-10 (3x32x32): early exits after the stem and stage 1.

Trunk: conv(3,16,3,pad 0) (32 -> 30), BN, relu | exit 1 | 18 x ResBlock(16,16) |
exit 2 | ResBlock(16,32,stride 2), 17 x ResBlock(32,32), ResBlock(32,64,stride 2),
17 x ResBlock(64,64), average pooling(6, stride 1) (8 -> 3) | exit 3: linear(576,10).
The main path has 109 convolutions and 1 linear layer; exit 2 sits after the
37th convolution. The stem and residual convolutions are initialised at the
original's scale (``WSCALE``); the exit-1 head and the linear layers use
Chainer's default, as the original did.
"""
import math

import branchynet  # noqa: F401  (compatibility shims before chainer)
import chainer
import chainer.functions as F
import chainer.links as L
import numpy

from branchynet import FL, Branch, BranchyNet
from branchynet.links.cpukernels import batch_norm, residual_shortcut, run_layer

INPUT_SHAPE = (3, 32, 32)
BLOCKS_PER_STAGE = 18

EXPERIMENT = {
    'title': 'ResNet-110',
    'dataset': 'pcifar10',
    'batchsize': 64,
    'published': {'baseline_acc': 80.70, 'branchy_acc': 79.17, 'cpu_ms': (137.20, 73.5),
              'gpu_ms': (70.9, 37.2), 'T': (0.3, 0.2), 'exits': (41.5, 13.8, 44.7)},
    'thresholds': [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1,
                   0.25, 0.5, 0.75, 1., 2., 3., 5., 10.],
    'presets': {
        # The paper's schedule: 100 main-only epochs, then 100 joint epochs.
        'paper': {'epochs_main': 100, 'epochs_joint': 100, 'n_val': 0},
        # About 2 h per full CIFAR epoch on a 2-core CPU: a small subset here.
        'fast': {'epochs_main': 1, 'epochs_joint': 1, 'n_train': 1200, 'n_val': 200,
                 'n_test': 500,
                 'n_timing': 40, 'thresholds': [0.001, 0.1, 0.5, 1., 2.]},
        'tiny': {'epochs_main': 1, 'epochs_joint': 1, 'n_val': 16, 'n_train': 64, 'n_test': 16,
                 'batchsize': 32, 'thresholds': [0.1, 2.0]},
    },
}


#: The original passed ``wscale=math.sqrt(2)`` to these convolutions. Chainer
#: 1.17 drew weights from HeNormal(1/sqrt(2)) scaled by sqrt(wscale), i.e.
#: std = sqrt(wscale / fan_in) = 1.19 / sqrt(fan_in); He-normal (wscale 2)
#: would be 1.41 / sqrt(fan_in).
WSCALE = math.sqrt(2)


def initializer(wscale=None):
    """Chainer 1.17's initialisation for ``wscale`` (default ``WSCALE``):
    normal, std ``sqrt(wscale / fan_in)``."""
    wscale = WSCALE if wscale is None else wscale
    return chainer.initializers.HeNormal(scale=math.sqrt(wscale / 2.))


def conv(in_channels, out_channels, ksize, pad, stride=1, initialW='original'):
    """A convolution initialised at the original's scale unless ``initialW``
    says otherwise (None: Chainer's default). Keyword arguments throughout:
    Chainer 7's sixth positional argument of Convolution2D is ``nobias``."""
    if isinstance(initialW, str) and initialW == 'original':
        initialW = initializer()
    return L.Convolution2D(in_channels, out_channels, ksize, stride=stride, pad=pad,
                           initialW=initialW)


class ResBlock(chainer.Chain):
    """conv-BN-relu-conv-BN plus the shortcut, then relu.

    When the block changes the shape, the shortcut is average-pooled
    (window 1, stride 2) and zero-padded in channels (no parameters).
    """

    def __init__(self, in_size, out_size, stride=1, ksize=1):
        super().__init__()  # ksize: the original's unused argument, kept for its calls
        self.in_channels, self.out_channels, self.stride = in_size, out_size, stride
        with self.init_scope():
            self.conv1 = conv(in_size, out_size, 3, 1, stride)
            self.bn1 = L.BatchNormalization(out_size)
            self.conv2 = conv(out_size, out_size, 3, 1)
            self.bn2 = L.BatchNormalization(out_size)

    @property
    def in_size(self):
        """Input channels (the original's name; also ``in_channels``)."""
        return self.in_channels

    @property
    def out_size(self):
        """Output channels (the original's name; also ``out_channels``)."""
        return self.out_channels

    def forward(self, x):
        # the CPU training kernels where they apply (links.cpukernels)
        h = batch_norm(self.bn1, run_layer(self.conv1, x), relu=True)
        h = run_layer(self.conv2, h)
        shortcut = residual_shortcut(x, self.stride, self.out_channels)
        return batch_norm(self.bn2, h, relu=True, shortcut=shortcut)

    def to_fast(self, compiler):
        """This block as plain array operations (see branchynet.engines.fast)."""
        xp = compiler.xp
        conv1 = compiler.conv(self.conv1, bn=self.bn1, relu=True)
        conv2 = compiler.conv(self.conv2, bn=self.bn2)
        stride, in_channels = self.stride, self.in_channels

        def run(x):
            h = conv2(conv1(x))
            shortcut = x[:, :, ::stride, ::stride] if stride != 1 else x
            h[:, :in_channels] += shortcut  # the zero-padded channels add nothing
            return xp.maximum(h, 0, out=h)
        return run

    def to_numba(self, builder, x):
        """This block as generated numba functions (see branchynet.engines.numba)."""
        h = builder.conv(self.conv1, x, bn=self.bn1, relu=True)
        h = builder.conv(self.conv2, h, bn=self.bn2)
        return builder.residual(h, x, self.stride)

    def to_onnx(self, exporter, x):
        """This block as ONNX nodes (see branchynet.engines.onnx_runtime)."""
        h = exporter.conv(self.conv1, x, bn=self.bn1, relu=True)
        h = exporter.conv(self.conv2, h, bn=self.bn2)
        shortcut = x
        if self.stride != 1:  # average pooling with window 1 is subsampling
            shortcut = exporter.node('MaxPool', [x], kernel_shape=[1, 1],
                                     strides=[self.stride, self.stride])
        if self.out_channels != self.in_channels:
            pads = exporter.const([0, 0, 0, 0, 0, self.out_channels - self.in_channels, 0, 0],
                                  'pads', dtype=numpy.int64)
            shortcut = exporter.node('Pad', [shortcut, pads], mode='constant')
        return exporter.node('Relu', [exporter.node('Add', [h, shortcut])])


def _stage(in_channels, out_channels, stride, count):
    return [ResBlock(in_channels, out_channels, stride)] + \
        [ResBlock(out_channels, out_channels) for _ in range(count - 1)]


def get_network(percentTrainKeeps=1, blocks_per_stage=BLOCKS_PER_STAGE, **kwargs):
    """A fresh B-ResNet-110 (untrained); ``blocks_per_stage`` residual blocks in
    each of its three stages (18 make the 110 layers; fewer build the same
    structure, smaller, e.g. for tests)."""
    n = blocks_per_stage
    network = [
        conv(3, 16, 3, 0), L.BatchNormalization(16), FL(F.relu),
        Branch([conv(16, 64, 5, 2, initialW=None), FL(F.relu),
                FL(F.local_response_normalization, n=3, k=2, alpha=5e-5, beta=0.75),
                conv(64, 32, 3, 1, initialW=None), FL(F.relu),
                conv(32, 32, 3, 1, initialW=None), FL(F.relu),
                L.Linear(28800, 10)]),
    ] + _stage(16, 16, 1, n) + [
        Branch([ResBlock(16, 16), L.Linear(14400, 10)]),
    ] + _stage(16, 32, 2, n) + _stage(32, 64, 2, n) + [
        FL(F.average_pooling_2d, 6, 1),
        Branch([L.Linear(576, 10)]),
    ]
    return BranchyNet(network, percentTrainKeeps=percentTrainKeeps,
                      input_shape=INPUT_SHAPE, **kwargs)
