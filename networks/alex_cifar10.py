"""B-AlexNet for CIFAR-10 (3x32x32): early exits after conv 2 and conv 3.

Trunk: conv(3,32,5,pad 2), relu, pool(3,2), LRN, conv(32,64,5,pad 2) | exit 1 |
relu, pool(3,2), LRN, conv(64,96,3,pad 1) | exit 2 | relu, conv(96,96,3,1), relu,
conv(96,64,3,1), relu, pool(3,2), linear(1024,256), relu, dropout, linear(256,128),
relu, dropout | exit 3: linear(128,10).
Spatial sizes with ``cover_all=True`` pooling: 32 -> 16 | 16 -> 8 | 8 -> 4.
"""
import branchynet  # noqa: F401  (compatibility shims before chainer)
import chainer.functions as F
import chainer.links as L

from branchynet import FL, Branch, BranchyNet

INPUT_SHAPE = (3, 32, 32)

EXPERIMENT = {
    'title': 'AlexNet',
    'dataset': 'pcifar10',
    'batchsize': 512,
    'published': {'baseline_acc': 78.38, 'branchy_acc': 79.19, 'cpu_ms': (9.56, 6.32),
              'gpu_ms': (3.15, 1.30), 'T': (0.0001, 0.05), 'exits': (65.6, 25.2, 9.2)},
    'thresholds': [0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 0.75, 1., 5., 10.],
    'presets': {
        # The paper's schedule: 50 main-only epochs, then 100 joint epochs.
        'paper': {'epochs_main': 50, 'epochs_joint': 100, 'n_val': 0},
        # A few minutes on a 2-core CPU (about 9 min per full CIFAR epoch here).
        'fast': {'epochs_main': 3, 'epochs_joint': 3, 'n_train': 6000, 'n_val': 1000,
                 'n_test': 2000,
                 'n_timing': 300, 'batchsize': 128},
        'tiny': {'epochs_main': 1, 'epochs_joint': 1, 'n_val': 100, 'n_train': 300, 'n_test': 100,
                 'batchsize': 64, 'thresholds': [0.01, 1.0]},
    },
}


def _lrn():
    return FL(F.local_response_normalization, n=3, k=2, alpha=5e-5, beta=0.75)


def _relu():
    return FL(F.relu)


def _pool():
    return FL(F.max_pooling_2d, 3, 2)


def get_network(percentTrainKeeps=1, **kwargs):
    """A fresh B-AlexNet (untrained)."""
    network = [
        L.Convolution2D(3, 32, 5, pad=2), _relu(), _pool(), _lrn(),
        L.Convolution2D(32, 64, 5, pad=2),
        Branch([_relu(), _pool(), _lrn(), L.Convolution2D(64, 32, 3, pad=1), _relu(),
                L.Convolution2D(32, 32, 3, pad=1), _relu(), _pool(), L.Linear(512, 10)]),
        _relu(), _pool(), _lrn(), L.Convolution2D(64, 96, 3, pad=1),
        Branch([_relu(), _pool(), _lrn(), L.Convolution2D(96, 32, 3, pad=1), _relu(),
                _pool(), L.Linear(128, 10)]),
        _relu(), L.Convolution2D(96, 96, 3, pad=1), _relu(),
        L.Convolution2D(96, 64, 3, pad=1), _relu(), _pool(),
        L.Linear(1024, 256), _relu(), FL(F.dropout, 0.5),
        L.Linear(256, 128), _relu(), FL(F.dropout, 0.5),
        Branch([L.Linear(128, 10)]),
    ]
    return BranchyNet(network, percentTrainKeeps=percentTrainKeeps,
                      input_shape=INPUT_SHAPE, **kwargs)
