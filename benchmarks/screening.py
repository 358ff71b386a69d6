"""(d) Threshold screening time, the new way (exit outputs once, costs once,
grid in array operations) against the original way (one batch-1 pass per
grid point), and the knee's predicted time against a real batch-1 run.

    python benchmarks/screening.py [--quick] [--model FILE.npz] [--samples N]
    python benchmarks/screening.py --network resnet_cifar10 [--samples 10000]

LeNet: its 17-value grid over the MNIST test set, both ways, results
compared point by point. ResNet-110: the 17 x 17 grid over 10,000 samples
of MNIST padded to 3x32x32 (CIFAR-10 cannot be had here; costs do not depend
on the data), a briefly trained model; the original way is estimated from a
few real points.
"""
from common import lenet, mnist, parser, summary, test_subset, timed

import numpy

from branchynet.evaluation import measurement, screening, tradeoff
from branchynet.training import loop as training


def knee_check(net, x, y, records, base_acc, n_check):
    """The knee's predicted Chainer time for the checked samples vs a real run."""
    k = tradeoff.select_knee([r['acc'] for r in records], [r['ms_chainer'] for r in records],
                          base_acc)
    ts = records[k]['thresholds']
    real = measurement.measure_branchy(net, x[:n_check], y[:n_check], ts, trunk_only=False)
    return ts, real


def lenet_run(args):
    from networks.lenet_mnist import EXPERIMENT
    data = mnist()
    net = lenet(args, data)
    x, y = test_subset(args, data, 500, 10000)
    grid = EXPERIMENT['thresholds']
    (records, info), new_s = timed(screening.screen_cached, net, x, y, grid, cost_samples=200)
    old, old_s = timed(screening.screen_thresholds, net, x, y, grid, progress=False,
                       trunk_only=False)
    same = all(r['acc'] == a and r['exit_counts'] == e
               for r, a, e in zip(records, old[1], old[3]))
    err = [abs(r['ms_chainer'] - d) / d for r, d in zip(records, old[2])]
    print('LeNet, {} points over {} samples: new way {:.1f} s, original way {:.1f} s '
          '({:.1f}x faster); accuracy and exits identical: {}; predicted vs measured time '
          'per point: mean error {:.1%}, max {:.1%}'.format(
              len(grid), len(x), new_s, old_s, old_s / new_s, same, numpy.mean(err),
              max(err)))
    return {'points': len(grid), 'samples': len(x), 'new_s': new_s, 'original_s': old_s,
            'speedup': old_s / new_s, 'identical': same, 'time_err_mean': numpy.mean(err),
            'time_err_max': max(err)}


def resnet_run(args):
    from datasets import mnist32
    from networks import resnet_cifar10
    x_train, y_train, x_test, y_test = mnist32.get_data()
    n = args.samples or (300 if args.quick else 10000)
    x, y = x_test[:n], y_test[:n]
    numpy.random.seed(0)
    net = resnet_cifar10.get_network()
    n_train = 64 if args.quick else 512
    training.train_exits(net, x_train[:n_train], y_train[:n_train], main=True, batchsize=64,
                         num_epoch=1, seed=0, progress=False)
    training.train_exits(net, x_train[:n_train], y_train[:n_train], batchsize=64, num_epoch=1,
                         seed=1, progress=False)
    grid = resnet_cifar10.EXPERIMENT['thresholds']
    n_cost = 20 if args.quick else 100
    (records, info), new_s = timed(screening.screen_cached, net, x, y, grid,
                                   cost_samples=n_cost)
    # the original way, estimated: one batch-1 pass per point over n samples
    per_sample_ms = float(numpy.mean(info['path_ms']['chainer']))
    original_est_s = len(records) * len(x) * per_sample_ms / 1000.
    base = measurement.measure_main(net, x[:n_cost], y[:n_cost], trunk_only=False)
    n_check = 20 if args.quick else 200
    ts, real = knee_check(net, x, y, records, base['acc'], n_check)
    counts = numpy.array(real['exit_counts'], dtype=float)
    predicted = float(counts / counts.sum() @ numpy.array(info['path_ms']['chainer']))
    err = abs(predicted - real['ms']) / real['ms']
    print('ResNet-110, {} points over {} samples: new way {:.1f} s (original way about '
          '{:.0f} s = {:.1f} h, estimated from {:.1f} ms per sample); knee T={} on {} samples: '
          'predicted {:.2f} ms, measured {:.2f} ms ({:.1%} off)'.format(
              len(records), len(x), new_s, original_est_s, original_est_s / 3600,
              per_sample_ms, ts, n_check, predicted, real['ms'], err))
    return {'points': len(records), 'samples': len(x), 'new_s': new_s,
            'original_est_s': original_est_s, 'knee_pred_ms': predicted,
            'knee_meas_ms': real['ms'], 'knee_err': err}


def main():
    p = parser(__doc__.splitlines()[0])
    p.add_argument('--network', default='lenet_mnist', choices=('lenet_mnist', 'resnet_cifar10'))
    args = p.parse_args()
    out = lenet_run(args) if args.network == 'lenet_mnist' else resnet_run(args)
    summary(**out)


if __name__ == '__main__':
    main()
