"""B-LeNet for MNIST (1x28x28): one early exit after the first convolution.

Trunk: conv(1,5,5,pad 3) | exit 1 | pool, relu, conv(5,10,5,pad 3), pool,
relu, conv(10,20,5,pad 3), pool, relu, linear(720,84) | exit 2: linear(84,10).
Max pooling keeps Chainer's default ``cover_all=True`` (30->15->17->9->11->6).
"""
import branchynet  # noqa: F401  (compatibility shims before chainer)
import chainer.functions as F
import chainer.links as L

from branchynet import FL, Branch, BranchyNet

INPUT_SHAPE = (1, 28, 28)

# Experiment configuration read by branchynet.driver.run (schedules, threshold
# grid, the paper's Table I row for comparison).
EXPERIMENT = {
    'title': 'LeNet',
    'dataset': 'mnist',
    'batchsize': 512,
    # Table I of the paper (CPU 3.0 GHz, GPU GTX TITAN X; its timer was trunk-only).
    'published': {'baseline_acc': 99.20, 'branchy_acc': 99.25, 'cpu_ms': (3.37, 0.62),
              'gpu_ms': (1.58, 0.34), 'T': (0.025,), 'exits': (94.3, 5.63)},
    'thresholds': [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1,
                   0.25, 0.5, 0.75, 1., 2., 3., 5., 10.],
    'presets': {
        # The paper's schedule: 50 main-only epochs, then 100 joint epochs.
        'paper': {'epochs_main': 50, 'epochs_joint': 100, 'n_val': 0},
        # About 5 minutes on a 2-core CPU (measured); about 98 % on MNIST. The
        # paper's accuracy needs far more epochs (10 main + 45 joint gave 98.95 % for
        # the main exit and 99.05 % for B-LeNet at the knee here).
        'fast': {'epochs_main': 4, 'epochs_joint': 4, 'n_timing': 2000},
        # Seconds: for tests and notebooks on a data subset.
        'tiny': {'epochs_main': 1, 'epochs_joint': 1, 'n_val': 200, 'n_train': 2000,
                 'n_test': 300, 'thresholds': [0.01, 0.1, 1.0]},
    },
}


def _pool_relu():
    return [FL(F.max_pooling_2d, 2, 2), FL(F.relu)]


def get_network(percentTrainKeeps=1, **kwargs):
    """A fresh B-LeNet (untrained)."""
    network = [
        L.Convolution2D(1, 5, 5, stride=1, pad=3),
        Branch(_pool_relu() + [L.Convolution2D(5, 10, 3, pad=1)] + _pool_relu() +
               [L.Linear(640, 10)]),
    ] + _pool_relu() + [
        L.Convolution2D(5, 10, 5, stride=1, pad=3),
    ] + _pool_relu() + [
        L.Convolution2D(10, 20, 5, stride=1, pad=3),
    ] + _pool_relu() + [
        L.Linear(720, 84),
        Branch([L.Linear(84, 10)]),
    ]
    return BranchyNet(network, percentTrainKeeps=percentTrainKeeps,
                      input_shape=INPUT_SHAPE, **kwargs)
