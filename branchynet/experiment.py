"""The experiment driver: one network, end to end, as the original notebooks ran it.

    python -m branchynet.experiment --network lenet_mnist --preset fast

Steps: load data, build the network, train the main network alone, train
all exits jointly from those weights, time the baseline and BranchyNet at
batch size 1, screen the threshold grid on the test set (the paper's way),
pick the knee, write Table I, every screened point, figures and models.

Every network is configured by the ``EXPERIMENT`` dict of its module in
``networks/``; nothing here is specific to one network.
"""
import argparse
import csv
import io
import json
import os
import platform
import sys
import time

import branchynet  # noqa: F401  (compatibility shims before chainer)
import chainer
import numpy

import networks
from datasets import DataUnavailableError

DATASETS = ('mnist', 'cifar10', 'pcifar10', 'mnist32')
from branchynet import utils, visualize
from branchynet.devices import DEVICE_CHOICES, device_label, gpu_usable, resolve_device
from branchynet.fileio import atomic_write, save_dill, save_npz





def log(msg):
    print('[{}] {}'.format(time.strftime('%H:%M:%S'), msg), flush=True)


def resolve_config(network, preset, overrides=None):
    """The experiment settings of ``network`` under ``preset``, with overrides."""
    module = networks.load(network)
    base = dict(module.EXPERIMENT)
    presets = base.pop('presets')
    if preset not in presets:
        raise ValueError('unknown preset {!r} for {}; expected one of: {}'.format(
            preset, network, ', '.join(presets)))
    config = {'network': network, 'preset': preset, 'n_train': None, 'n_test': None,
              'n_timing': None, 'num_classes': 10, 'dataset_path': None, 'augment': False}
    config.update(base)
    config.update(presets[preset])
    for key, value in (overrides or {}).items():
        if value is not None:
            config[key] = value
    return module, config


def load_dataset(config, dataset_module=None):
    """Load the configured dataset and cut the subsets the preset asks for.

    ``config['dataset_path']`` (``--dataset``) replaces the network's default
    dataset: an npz file in the ``train_x, train_y, test_x, test_y`` layout,
    or the name of a module in ``datasets/`` (e.g. ``mnist32``).
    """
    import importlib
    source = config.get('dataset_path')
    if source and source.endswith('.npz'):
        from datasets import npz
        x_train, y_train, x_test, y_test = npz.load(source, num_classes=config['num_classes'])
    else:
        name = source or config['dataset']
        if dataset_module is None:
            if name not in DATASETS:
                raise ValueError('unknown dataset {!r}; expected a .npz file or one of: {}'
                                 .format(name, ', '.join(DATASETS)))
            dataset_module = importlib.import_module('datasets.' + name)
        x_train, y_train, x_test, y_test = dataset_module.get_data()
    if config.get('n_train'):
        x_train, y_train = x_train[:config['n_train']], y_train[:config['n_train']]
    if config.get('n_test'):
        x_test, y_test = x_test[:config['n_test']], y_test[:config['n_test']]
    return x_train, y_train, x_test, y_test


def environment(config, device):
    """What the numbers were measured on, recorded with the results."""
    cpu = platform.processor()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f
                       if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    env = {'python': platform.python_version(), 'chainer': chainer.__version__,
           'numpy': numpy.__version__, 'cpu': cpu, 'cores': os.cpu_count(),
           'platform': platform.platform(), 'training_device': str(device)}
    if device.xp is not numpy:
        import cupy
        env['cupy'] = cupy.__version__
        env['gpu'] = cupy.cuda.runtime.getDeviceProperties(0)['name'].decode()
    return env


def write_json(path, obj):
    with atomic_write(path, 'w') as f:
        json.dump(obj, f, indent=1, default=float)


def write_table(path_base, rows):
    with atomic_write(path_base + '.md', 'w') as f:
        f.write(utils.format_table(rows) + '\n')
    buf = io.StringIO()
    columns = ('Device',) + utils.TABLE_COLUMNS
    writer = csv.writer(buf)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([utils._cell(c, row.get(c)) for c in columns])
    with atomic_write(path_base + '.csv', 'w') as f:
        f.write(buf.getvalue())


def exit_accuracies(net, x, y, sms=None):
    """Test accuracy of every exit on every sample (no early exit)."""
    sms = net.get_SM(x) if sms is None else sms
    return [float((sm.argmax(axis=1) == y).mean()) for sm in sms]


def time_and_screen(net, name, title, config, x_test, y_test, label, out):
    """Batch-1 baseline and grid screening on the current device; Table I block."""
    n_timing = config.get('n_timing') or len(x_test)
    xs, ys = x_test[:n_timing], y_test[:n_timing]
    log('{}: timing the baseline at batch size 1 on {} samples'.format(label, len(xs)))
    baseline = utils.measure_main(net, xs, ys)
    log('{}: baseline acc {:.2%}, {:.3f} ms/sample end to end ({:.3f} trunk only)'.format(
        label, baseline['acc'], baseline['ms'], baseline['trunk_ms']))
    log('{}: screening {} threshold values over {} early exit(s)'.format(
        label, len(config['thresholds']), net.numexits() - 1))
    screen = utils.screen_branchy(net, xs, ys, config['thresholds'])
    accs, diffs = screen[1], screen[2]
    knee = utils.select_knee(accs, diffs, baseline['acc'])
    rows = utils.branchy_table_results(title, baseline, screen.records[knee], device=label,
                                       printout=False)
    print(utils.format_table(rows), flush=True)
    tag = '{}_{}'.format(name, label.lower())
    write_table(os.path.join(out['results'], tag + '_table'), rows)
    write_json(os.path.join(out['results'], tag + '_screen.json'), {
        'network': name, 'device': label, 'n_samples': len(xs), 'baseline': baseline,
        'knee_index': knee, 'knee_rule': 'fastest point with accuracy >= baseline',
        'points': screen.records})
    visualize.plot_line_tradeoff(
        accs, diffs, baseline['acc'], baseline['ms'], knee,
        title='{} on {}: accuracy vs runtime'.format('B-' + title, label),
        path=os.path.join(out['figs'], tag + '_tradeoff'))
    return rows


def run(network, preset='fast', device='cpu', out_dir='.', seed=0, overrides=None,
        dataset_module=None, time_devices=None):
    """Run the whole experiment; returns a dict of what was measured."""
    module, config = resolve_config(network, preset, overrides)
    title = config['title']
    out = {k: os.path.join(out_dir, '_' + k) for k in ('models', 'figs', 'results')}
    dev = resolve_device(device)
    numpy.random.seed(seed)
    if dev.xp is not numpy:
        dev.xp.random.seed(seed)

    log('{} ({} preset): loading {}'.format(network, preset,
                                           config.get('dataset_path') or config['dataset']))
    x_train, y_train, x_test, y_test = load_dataset(config, dataset_module)
    log('train {} samples, test {} samples'.format(len(x_train), len(x_test)))

    chainer.global_config.cudnn_deterministic = True
    net = module.get_network()
    net.to_device(dev)
    dev.use()

    log('training the main network: {} epochs, batch {}'.format(
        config['epochs_main'], config['batchsize']))
    main_losses, main_accs, main_s = utils.train(
        net, x_train, y_train, main=True, batchsize=config['batchsize'],
        num_epoch=config['epochs_main'], seed=seed, augment=config['augment'])
    base_test_acc, _ = net.test_main(x_test, y_test, batchsize=1000)
    log('main network: test accuracy {:.2%} ({:.1f} s)'.format(base_test_acc, main_s))

    log('joint training of all {} exits: {} epochs'.format(
        net.numexits(), config['epochs_joint']))
    joint_losses, joint_accs, joint_s = utils.train(
        net, x_train, y_train, main=False, batchsize=config['batchsize'],
        num_epoch=config['epochs_joint'], seed=seed + 1, augment=config['augment'])
    sms = net.get_SM(x_test)
    exit_accs = exit_accuracies(net, x_test, y_test, sms)
    log('joint: test accuracy per exit {} ({:.1f} s)'.format(
        ', '.join('{:.2%}'.format(a) for a in exit_accs), joint_s))

    last = net.numexits() - 1
    curves_l = [[float('nan')] * last + row for row in main_losses] + joint_losses
    curves_a = [[float('nan')] * last + row for row in main_accs] + joint_accs
    visualize.plot_layers(curves_l, curves_a, title='B-{}: training per exit'.format(title),
                          path=os.path.join(out['figs'], network + '_training'),
                          phase_labels=[(0, 'main only'),
                                        (len(main_losses), 'joint')])
    visualize.plot_layer_entropy(sms, y_test, title='B-{}: early exit vs entropy '
                                 'threshold (test set)'.format(title),
                                 path=os.path.join(out['figs'], network + '_entropy'))

    save_dill(os.path.join(out['models'], network + '.bn'), net)
    save_npz(os.path.join(out['models'], network + '.npz'), net)
    log('saved {0}/{1}.bn (dill) and {0}/{1}.npz (weights)'.format(out['models'], network))

    results = {'network': network, 'title': title, 'config': config,
               'environment': environment(config, dev), 'seed': seed,
               'data': {'n_train': len(x_train), 'n_test': len(x_test),
                        'n_timing': config.get('n_timing') or len(x_test)},
               'training': {'main_loss': main_losses, 'main_acc': main_accs,
                            'main_seconds': main_s, 'joint_loss': joint_losses,
                            'joint_acc': joint_accs, 'joint_seconds': joint_s,
                            'epoch_seconds_main': main_s / max(1, config['epochs_main']),
                            'epoch_seconds_joint': joint_s / max(1, config['epochs_joint'])},
               'test': {'baseline_acc': base_test_acc, 'exit_accs_after_joint': exit_accs},
               'tables': {}}
    if time_devices is None:
        time_devices = ['cpu'] + (['gpu'] if gpu_usable() else [])
    for td in time_devices:
        tdev = resolve_device(td)
        net.to_device(tdev)
        tdev.use()
        label = device_label(tdev)
        results['tables'][label] = time_and_screen(net, network, title, config, x_test,
                                                   y_test, label, out)
    net.to_device(dev)
    write_json(os.path.join(out['results'], network + '_results.json'), results)
    log('done: results in {}, figures in {}'.format(out['results'], out['figs']))
    return results


def build_parser():
    parser = argparse.ArgumentParser(
        description='Train and evaluate one BranchyNet network (Table I and Fig. 3).')
    parser.add_argument('--network', default='lenet_mnist', choices=networks.NETWORKS)
    parser.add_argument('--preset', default='fast',
                        help="schedule: 'paper' (the original's), 'fast' or 'tiny'")
    parser.add_argument('--device', default='cpu',
                        help='training device: {} (default cpu)'.format('/'.join(DEVICE_CHOICES)))
    parser.add_argument('--time-devices', default=None,
                        help='comma-separated devices to time on (default: cpu, and gpu '
                             'when usable)')
    parser.add_argument('--out', default='.', help='folder holding _models, _figs, _results')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--epochs-main', type=int, help='override the preset')
    parser.add_argument('--epochs-joint', type=int, help='override the preset')
    parser.add_argument('--batchsize', type=int, help='override the preset')
    parser.add_argument('--n-train', type=int, help='use the first N training samples')
    parser.add_argument('--n-test', type=int, help='use the first N test samples')
    parser.add_argument('--n-timing', type=int,
                        help='time and screen on the first N test samples (default all)')
    parser.add_argument('--dataset', dest='dataset_path', metavar='FILE.npz|NAME',
                        help="replace the network's dataset: an npz file (train_x, train_y, "
                             'test_x, test_y) or one of: ' + ', '.join(DATASETS))
    parser.add_argument('--augment', action='store_true', default=None,
                        help='train on augmented images (crops, flips; off by default)')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    overrides = {k: getattr(args, k) for k in
                 ('epochs_main', 'epochs_joint', 'batchsize', 'n_train', 'n_test', 'n_timing',
                  'dataset_path', 'augment')}
    time_devices = args.time_devices.split(',') if args.time_devices else None
    try:
        run(args.network, args.preset, args.device, args.out, args.seed, overrides,
            time_devices=time_devices)
    except DataUnavailableError as e:
        print('skipped {}: {}'.format(args.network, e), file=sys.stderr)
        return 0
    except (ValueError, TypeError, FileNotFoundError) as e:
        print('error: {}'.format(e), file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
