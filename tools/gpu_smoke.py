"""Smoke test of an installed environment: the project imports Chainer through
its compatibility shims, builds B-LeNet, takes one training step on 512 MNIST
images and predicts 256 test images; on a GPU too when CuPy sees one.

    python tools/gpu_smoke.py [--device cpu|gpu|auto]

Prints the versions and one line per device; exits non-zero on any failure.
Run by tools/gpu_offline_check.sh after an offline install, and as the first
command on a GPU machine (tools/gpu_run.sh python tools/gpu_smoke.py).
"""
import argparse
import math
import os
import platform
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import branchynet  # noqa: E402,F401  (compatibility shims before chainer)
import chainer  # noqa: E402
import numpy  # noqa: E402

from branchynet import devices  # noqa: E402
from branchynet.io import fileio


def run(device_name, data):
    from networks import lenet_mnist
    x_train, y_train, x_test, y_test = data
    device = devices.resolve_device(device_name)
    numpy.random.seed(0)
    net = lenet_mnist.get_network()
    net.to_device(device)
    losses, accs = net.train(x_train[:512], y_train[:512])
    if not all(math.isfinite(v) for v in losses):
        raise SystemExit('{}: non-finite training loss {}'.format(device_name, losses))
    labels, exits = net.predict(x_test[:256], thresholds=[0.5])
    if labels.shape != (256,) or not set(exits.tolist()) <= {0, 1}:
        raise SystemExit('{}: bad prediction output'.format(device_name))
    with tempfile.TemporaryDirectory() as tmp:
        fileio.save_npz(os.path.join(tmp, 'm.npz'), net)
        fileio.save_dill(os.path.join(tmp, 'm.bn'), net)
    print('{}: one training step (losses {}), predict on 256 images: accuracy {:.3f}, '
          '{:.1f} % at exit 1; saved .npz and .bn'.format(
              devices.device_label(device), ['{:.3f}'.format(v) for v in losses],
              float((labels == y_test[:256]).mean()), 100. * float((exits == 0).mean())))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', choices=devices.DEVICE_CHOICES, default='auto',
                   help='auto: CPU, and the GPU too when CuPy sees one (default)')
    args = p.parse_args()
    import dill
    print('python {} | numpy {} | chainer {} | dill {} | cupy {}'.format(
        platform.python_version(), numpy.__version__, chainer.__version__, dill.__version__,
        _cupy_version()))
    from datasets import mnist
    data = mnist.get_data()
    names = {'cpu': ['cpu'], 'gpu': ['gpu'],
             'auto': ['cpu', 'gpu'] if devices.gpu_usable() else ['cpu']}[args.device]
    if args.device == 'auto' and len(names) == 1:
        print('no usable GPU: CPU only')
    for name in names:
        run(name, data)
    print('smoke test passed')


def _cupy_version():
    try:
        import cupy
        return cupy.__version__
    except Exception as e:  # not installed, or no CUDA libraries
        return 'none ({})'.format(type(e).__name__)


if __name__ == '__main__':
    main()
