"""B-ResNet-110 initialisation: the original's scale against He-normal.

The original passed ``wscale=sqrt(2)`` to the stem and residual convolutions;
under Chainer 1.17 that drew weights with std sqrt(wscale / fan_in) =
1.19 / sqrt(fan_in). He-normal draws 1.41 / sqrt(fan_in). This script
measures, for both, from one seed each:

* the weights' std times sqrt(fan_in) over the residual convolutions;
* the std of each stage's output at initialisation, in training mode (batch
  statistics) and in test mode (the initial running statistics);
* the main network's training loss over a few Adam steps on MNIST in CIFAR's
  shape (``datasets.mnist32``) and the accuracy on held-out images after them.

    python benchmarks/resnet_init.py --steps 12 --batch 32
"""
import argparse
import math
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import branchynet  # noqa: E402,F401  (compatibility shims before chainer)
import chainer  # noqa: E402
import numpy  # noqa: E402

from networks import resnet_cifar10  # noqa: E402

SCALES = {'original (wscale=sqrt(2))': math.sqrt(2), 'He-normal (wscale=2)': 2.0}


def build(wscale, seed):
    numpy.random.seed(seed)
    saved = resnet_cifar10.WSCALE
    resnet_cifar10.WSCALE = wscale
    try:
        return resnet_cifar10.get_network()
    finally:
        resnet_cifar10.WSCALE = saved


def weight_scale(net):
    """Mean over the residual blocks' convolutions of std(W) * sqrt(fan_in)."""
    values = []
    for link in net.trunk:
        if isinstance(link, resnet_cifar10.ResBlock):
            for conv in (link.conv1, link.conv2):
                w = conv.W.array
                values.append(float(w.std()) * math.sqrt(w[0].size))
    return float(numpy.mean(values))


def stage_stds(net, x, train):
    """Std of the trunk's output after the stem and after each stage."""
    marks = {3: 'stem', 21: 'stage 1', 39: 'stage 2', 57: 'stage 3'}
    out, h = {}, x
    with chainer.using_config('train', train), chainer.no_backprop_mode():
        for i, link in enumerate(net.trunk, 1):
            h = link(h)
            if i in marks:
                out[marks[i]] = float(h.array.std())
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--steps', type=int, default=12)
    p.add_argument('--batch', type=int, default=32)
    p.add_argument('--seed', type=int, default=0)
    args = p.parse_args()
    from datasets import mnist32
    x_train, y_train, x_test, y_test = mnist32.get_data()
    n = args.steps * args.batch
    x, y = x_train[:n], y_train[:n]
    xv, yv = x_test[:200], y_test[:200]
    for name, wscale in SCALES.items():
        net = build(wscale, args.seed)
        print('== {}: std(W)*sqrt(fan_in) = {:.3f} (expected {:.3f})'.format(
            name, weight_scale(net), math.sqrt(wscale)))
        for train in (True, False):
            stds = stage_stds(net, x_test[:args.batch], train)
            print('   init activations, {} mode: {}'.format(
                'train' if train else 'test',
                ', '.join('{} {:.3g}'.format(k, v) for k, v in stds.items())))
        losses, start = [], time.perf_counter()
        for i in range(0, n, args.batch):
            loss, _ = net.train_main(x[i:i + args.batch], y[i:i + args.batch])
            losses.append(loss)
        acc, _ = net.test_main(xv, yv, batchsize=100)
        print('   main-network loss per step: {}'.format(
            ' '.join('{:.3f}'.format(v) for v in losses)))
        print('   mean loss of the last 4 steps {:.3f}; held-out accuracy {:.1%} '
              '({:.0f} s)'.format(numpy.mean(losses[-4:]), acc, time.perf_counter() - start))


if __name__ == '__main__':
    main()
