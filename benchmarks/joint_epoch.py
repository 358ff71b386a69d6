"""(c) Joint-epoch time / main-only-epoch time for B-LeNet: with the shared
trunk, a joint epoch costs a main epoch plus the heads.

    python benchmarks/joint_epoch.py [--quick] [--samples N]
"""
from common import mnist, parser, summary, timed

import numpy

from branchynet import utils
from networks import lenet_mnist


def main():
    p = parser(__doc__.splitlines()[0])
    p.add_argument('--repeats', type=int, default=None)
    args = p.parse_args()
    x, y = mnist()[:2]
    n = args.samples or (5120 if args.quick else 60000)
    repeats = args.repeats or (2 if args.quick else 1)
    x, y = x[:n], y[:n]
    main_s, joint_s = [], []
    for r in range(repeats):  # alternate, so drifting machine load hits both alike
        numpy.random.seed(r)
        net = lenet_mnist.get_network()
        _, s = timed(utils.train, net, x, y, main=True, batchsize=512, num_epoch=1,
                     seed=r, progress=False)
        main_s.append(s)
        _, s = timed(utils.train, net, x, y, batchsize=512, num_epoch=1, seed=r,
                     progress=False)
        joint_s.append(s)
    m, j = min(main_s), min(joint_s)
    print('{} samples, batch 512: main-only epoch {:.2f} s, joint epoch {:.2f} s, '
          'ratio {:.3f}'.format(n, m, j, j / m))
    summary(main_epoch_s=m, joint_epoch_s=j, joint_over_main=j / m)


if __name__ == '__main__':
    main()
