"""Residual blocks under the original's module name ``branchynet.links.resnet``.

``ResBlock`` is B-ResNet-110's block (defined with the network, in
``networks.resnet_cifar10``). ``BottleNeckA``, ``BottleNeckB`` and ``Block``
are the original's bottleneck blocks (1x1, 3x3, 1x1 convolutions without
bias, each followed by batch normalisation), which none of the three
networks uses; their convolutions are initialised at the original's scale
(``networks.resnet_cifar10.WSCALE``).
"""
import chainer
import chainer.functions as F
import chainer.links as L

from branchynet.networks.resnet_cifar10 import ResBlock, initializer  # noqa: F401


def _conv_bn(in_channels, out_channels, ksize, stride, pad):
    conv = L.Convolution2D(in_channels, out_channels, ksize, stride=stride, pad=pad,
                           nobias=True, initialW=initializer())
    return conv, L.BatchNormalization(out_channels)


class BottleNeckA(chainer.Chain):
    """Bottleneck that changes the shape: ``relu(main(x) + projection(x))``;
    the projection is a strided 1x1 convolution with batch normalisation."""

    def __init__(self, in_size, ch, out_size, stride=2):
        super().__init__()
        self.in_size, self.ch, self.out_size, self.stride = in_size, ch, out_size, stride
        with self.init_scope():
            self.conv1, self.bn1 = _conv_bn(in_size, ch, 1, stride, 0)
            self.conv2, self.bn2 = _conv_bn(ch, ch, 3, 1, 1)
            self.conv3, self.bn3 = _conv_bn(ch, out_size, 1, 1, 0)
            self.conv4, self.bn4 = _conv_bn(in_size, out_size, 1, stride, 0)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        return F.relu(h + self.bn4(self.conv4(x)))


class BottleNeckB(chainer.Chain):
    """Bottleneck that keeps the shape: ``relu(main(x) + x)``."""

    def __init__(self, in_size, ch):
        super().__init__()
        self.in_size, self.ch = in_size, ch
        with self.init_scope():
            self.conv1, self.bn1 = _conv_bn(in_size, ch, 1, 1, 0)
            self.conv2, self.bn2 = _conv_bn(ch, ch, 3, 1, 1)
            self.conv3, self.bn3 = _conv_bn(ch, in_size, 1, 1, 0)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)))
        return F.relu(self.bn3(self.conv3(h)) + x)


class Block(chainer.ChainList):
    """One ``BottleNeckA`` followed by ``layer - 1`` ``BottleNeckB``."""

    def __init__(self, layer, in_size, ch, out_size, stride=2):
        if layer < 1:
            raise ValueError('Block needs layer >= 1, got {!r}'.format(layer))
        super().__init__(BottleNeckA(in_size, ch, out_size, stride),
                         *[BottleNeckB(out_size, ch) for _ in range(layer - 1)])
        self.layer, self.in_size, self.ch = layer, in_size, ch
        self.out_size, self.stride = out_size, stride

    def forward(self, x):
        for link in self:
            x = link(x)
        return x
