"""The experiment driver: one network, end to end, as the original notebooks ran it.

    python -m branchynet.experiment --network lenet_mnist --preset fast

Steps: load data, build the network, train the main network alone, train
all exits jointly from those weights, time the baseline and BranchyNet at
batch size 1, screen the threshold grid on the test set (the paper's way),
pick the knee, write Table I, every screened point, figures and models.

Every network is configured by the ``EXPERIMENT`` dict of its module in
``networks/``; nothing here is specific to one network. The command line
(options, network lists, ``--mpi``) is ``branchynet.cli``.
"""
import contextlib
import itertools
import os
import platform
import sys
import time

import branchynet  # noqa: F401  (compatibility shims before chainer)
import chainer
import numpy
from sklearn.model_selection import train_test_split

import networks
from datasets import DataUnavailableError

from branchynet import (calibration, checkpoint, confidence, costs, fileio, measurement,
                        runrecord, screening, tables, tradeoff, training,
                        visualize)
from branchynet.devices import device_label, gpu_usable, resolve_device
from branchynet.fastpath import FastBranchyNet
from branchynet.fileio import atomic_write, save_dill, save_npz
from branchynet.validation import InputError, InvalidValue, validate_count

DATASETS = ('mnist', 'cifar10', 'pcifar10', 'mnist32')


def log(msg):
    print('[{}] {}'.format(time.strftime('%H:%M:%S'), msg), flush=True)


def resolve_config(network, preset, overrides=None):
    """The experiment settings of ``network`` under ``preset``, with overrides."""
    module = networks.load(network)
    base = dict(module.EXPERIMENT)
    presets = base.pop('presets')
    if preset not in presets:
        raise InvalidValue('unknown preset {!r} for {}; expected one of: {}'.format(
            preset, network, ', '.join(presets)))
    config = {'network': network, 'preset': preset, 'n_train': None, 'n_test': None,
              'n_timing': None, 'num_classes': 10, 'dataset_path': None, 'augment': False,
              'screen': 'cached', 'n_cost': 200, 'n_val': 5000}
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
                raise InvalidValue('unknown dataset {!r}; expected a .npz file or one of: {}'
                                 .format(name, ', '.join(DATASETS)))
            dataset_module = importlib.import_module('datasets.' + name)
        x_train, y_train, x_test, y_test = dataset_module.get_data()
    if config.get('n_train'):
        x_train, y_train = x_train[:config['n_train']], y_train[:config['n_train']]
    if config.get('n_test'):
        x_test, y_test = x_test[:config['n_test']], y_test[:config['n_test']]
    return x_train, y_train, x_test, y_test


def exit_accuracies(net, x, y, sms=None):
    """Test accuracy of every exit on every sample (no early exit)."""
    sms = net.get_SM(x) if sms is None else sms
    return [float((sm.argmax(axis=1) == y).mean()) for sm in sms]


def _screen(net, config, xs, ys, engines, path_macs, outputs=None):
    """Every grid point's accuracy, exits and per-engine time.

    ``cached`` (default): exit outputs computed once, per-exit costs measured
    once, the grid evaluated in array operations (times predicted).
    ``original``: one real batch-1 pass per point, as the original did
    (Chainer path only). ``outputs``: the cached exit outputs of ``xs`` when
    already computed (by the ranks of a distributed run)."""
    if config['screen'] == 'original':
        screen = screening.screen_thresholds(net, xs, ys, config['thresholds'])
        records = [dict(r, ms_chainer=r['ms']) for r in screen.records]
        return records, {'method': 'original: one batch-1 pass per point'}
    records, info = screening.screen_cached(net, xs, ys, config['thresholds'], engines=engines,
                                            cost_samples=config['n_cost'],
                                            path_macs=path_macs, outputs=outputs)
    info['method'] = 'cached: exit outputs once, times predicted from per-exit costs'
    return records, info


def time_and_screen(net, name, title, config, x_test, y_test, label, out, costs_,
                    outputs=None):
    """Batch-1 baseline, grid screening and the knee on the current device.

    The knee is the fastest point (Chainer-path time) whose accuracy is at
    least the baseline's and which is faster than the baseline beyond noise
    (``tradeoff.choose_knee``); it is then measured for real at batch size 1 on
    both paths. Without such a point, or when the knee measures no faster
    than the baseline, the table and the figure say so. Writes the Table I
    block, every point (JSON) and Fig. 3.
    """
    n_timing = config.get('n_timing') or len(x_test)
    xs, ys = x_test[:n_timing], y_test[:n_timing]
    fast = FastBranchyNet(net)
    engines = {'chainer': net, 'fast': fast}
    log('{}: timing the baseline at batch size 1 on {} samples (Chainer and fast path)'
        .format(label, len(xs)))
    baseline = measurement.measure_main(net, xs, ys)
    baseline_fast = measurement.measure_main(net, xs, ys, engine=fast, trunk_only=False)
    log('{}: baseline acc {:.2%}, {:.3f} ms/sample end to end ({:.3f} trunk only, {:.3f} '
        'fast path)'.format(label, baseline['acc'], baseline['ms'], baseline['trunk_ms'],
                            baseline_fast['ms']))
    t0 = time.perf_counter()
    log('{}: screening {} threshold values over {} early exit(s) ({})'.format(
        label, len(config['thresholds']), net.numexits() - 1, config['screen']))
    records, info = _screen(net, config, xs, ys, engines, costs_['path_macs'], outputs)
    info['seconds'] = time.perf_counter() - t0
    accs = [r['acc'] for r in records]
    ms = [r['ms_chainer'] for r in records]
    choice = tradeoff.choose_knee(accs, ms, baseline['acc'], baseline['ms'])
    knee = choice['index']
    ts = records[knee]['thresholds']
    log('{}: {} T={}; measuring it at batch size 1'.format(
        label, 'knee' if choice['gain'] else choice['note'], ts))
    branchy = measurement.measure_branchy(net, xs, ys, ts)
    branchy_fast = measurement.measure_branchy(net, xs, ys, ts, engine=fast, trunk_only=False)
    if choice['gain'] and branchy['ms'] >= baseline['ms']:
        choice = {'index': knee, 'gain': False, 'note': '{}; measured {:.3f} vs {:.3f} ms'
                  .format(tradeoff.NO_GAIN, branchy['ms'], baseline['ms'])}
    limit = costs.arithmetic_limit_gain(costs_, branchy['exit_counts'])
    rows = tables.branchy_table_rows(title, baseline, branchy, device=label, printout=False,
                                     baseline_fast=baseline_fast, branchy_fast=branchy_fast,
                                     mac_limit=limit)
    if not choice['gain']:
        rows[1]['Network'] += ' ({})'.format(choice['note'])
        log('{}: {}'.format(label, choice['note']))
    print(tables.format_table(rows), flush=True)
    knee_check = {'predicted_ms_chainer': records[knee]['ms_chainer'],
                  'measured_ms_chainer': branchy['ms'],
                  'predicted_ms_fast': records[knee].get('ms_fast'),
                  'measured_ms_fast': branchy_fast['ms']}
    log('{}: knee time predicted {:.3f} ms, measured {:.3f} ms (Chainer)'.format(
        label, knee_check['predicted_ms_chainer'], branchy['ms']))
    tag = '{}_{}'.format(name, label.lower())
    tables.write_table(os.path.join(out['results'], tag + '_table'), rows)
    runrecord.write_json(os.path.join(out['results'], tag + '_screen.json'), {
        'network': name, 'device': label, 'n_samples': len(xs), 'screening': info,
        'baseline': baseline, 'baseline_fast': baseline_fast, 'knee_index': knee,
        'knee_rule': 'fastest point (Chainer-path time) with accuracy >= baseline and '
                     'predicted time <= baseline time / 1.05',
        'knee_is_gain': choice['gain'], 'knee_note': choice['note'],
        'knee': branchy, 'knee_fast': branchy_fast, 'knee_check': knee_check,
        'mac_limit_gain': limit, 'points': records})
    star = knee if choice['gain'] else None  # no star for a point that is no knee
    extra = []
    if 'ms_fast' in records[0]:
        extra.append({'label': 'fast path', 'accs': accs,
                      'ms': [r['ms_fast'] for r in records],
                      'base_acc': baseline_fast['acc'], 'base_ms': baseline_fast['ms'],
                      'knee': star})
    visualize.plot_tradeoff_curve(
        accs, ms, baseline['acc'], baseline['ms'], star,
        title='{} on {}: accuracy vs runtime{}'.format(
            'B-' + title, label, '' if choice['gain'] else '\n' + tradeoff.NO_GAIN),
        path=os.path.join(out['figs'], tag + '_tradeoff'), extra_series=extra,
        series_label='Chainer path')
    path_ms = info.get('path_ms', {}).get('chainer')
    if path_ms is None:  # the original way measured no per-exit costs
        path_ms = screening.path_costs(net, xs[:config['n_cost']])
    return rows, {'path_ms': path_ms, 'baseline': baseline, 'baseline_fast': baseline_fast,
                  'xs': xs, 'ys': ys, 'fast': fast}


def split_validation(x_train, y_train, n_val, seed):
    """Hold out ``n_val`` training samples for calibration: a seeded split
    stratified by class (scikit-learn's ``train_test_split``), so the held-out
    class mix is the training set's. Where stratifying is impossible (fewer
    held-out samples than classes, or a class with one sample) the split is
    a plain seeded random choice."""
    if not n_val:
        return x_train, y_train, None, None, []
    if n_val >= len(x_train):
        raise InvalidValue('n_val ({}) must be smaller than the training set ({})'.format(
            n_val, len(x_train)))
    index = numpy.arange(len(x_train))
    counts = numpy.bincount(y_train)
    counts = counts[counts > 0]
    stratify = y_train if (counts.min() >= 2 and len(counts) <= min(n_val, len(x_train) - n_val)) \
        else None
    rest, val = train_test_split(index, test_size=n_val, random_state=seed, stratify=stratify)
    val, rest = numpy.sort(val), numpy.sort(rest)
    return x_train[rest], y_train[rest], x_train[val], y_train[val], val.tolist()


def calibrate_and_compare(net, name, title, x_val, y_val, timing, label, out, costs_,
                          row_note=''):
    """Thresholds calibrated on the validation split, for every confidence measure.

    The target is the baseline's validation accuracy (the last exit's) and
    the cost the Chainer path's batch-1 time. The entropy choice is then
    measured for real on the test samples (the calibrated Table I row);
    every measure is compared on the test set from cached outputs.
    """
    xs, ys, path_ms = timing['xs'], timing['ys'], timing['path_ms']
    comparison, curves, rocs = [], {}, {}
    chosen = None
    for measure in confidence.MEASURES:
        val_scores, val_preds = screening.exit_outputs(net, x_val, measure)
        cal = calibration.calibrate_thresholds(val_scores, val_preds, y_val, path_ms,
                                               measure=measure)
        test_scores, test_preds = screening.exit_outputs(net, xs, measure)
        on_test = screening.evaluate(test_scores, test_preds, ys, [cal['thresholds']],
                                     path_ms=path_ms, path_macs=costs_['path_macs'],
                                     measure=measure)
        comparison.append({
            'measure': measure, 'thresholds': cal['thresholds'], 'target_acc': cal['target_acc'],
            'val_acc': cal['acc'], 'val_ms': cal['cost'], 'met_on_val': cal['met'],
            'test_acc': float(on_test['acc'][0]), 'test_ms_predicted': float(on_test['ms'][0]),
            'test_macs': float(on_test['macs'][0]),
            'test_exit_pct': (100. * on_test['exit_counts'][0] / len(ys)).tolist(),
            'test_exit_auroc': calibration.exit_aurocs(test_scores, test_preds, ys)})
        rocs[measure] = calibration.exit_roc(test_scores, test_preds, ys)
        if measure == 'entropy':
            chosen = cal
        # accuracy/cost curve on the test set: quantile candidates of the test scores
        early = test_scores.shape[1] - 1
        grid = [numpy.quantile(test_scores[:, n], numpy.linspace(0, 1, 40 if early == 1 else 15))
                for n in range(early)]
        limits = numpy.array(list(itertools.product(*grid)))
        to_user = numpy.vectorize(confidence.get_measure(measure).limit)
        r = screening.evaluate(test_scores, test_preds, ys, to_user(limits), path_ms=path_ms,
                               measure=measure)
        curves[measure] = (r['acc'].tolist(), r['ms'].tolist())
    measured = measurement.measure_branchy(net, xs, ys, chosen['thresholds'])
    measured_fast = measurement.measure_branchy(net, xs, ys, chosen['thresholds'],
                                          engine=timing['fast'], trunk_only=False)
    row = {'Device': label, 'Network': 'B-{} (calibrated{})'.format(title, row_note),
           'Acc. (%)': 100 * measured['acc'], 'Time (ms)': measured['ms'],
           'Gain': timing['baseline']['ms'] / measured['ms'],
           'Trunk-only (ms)': measured['trunk_ms'],
           'Trunk-only gain': timing['baseline']['trunk_ms'] / measured['trunk_ms'],
           'Fast (ms)': measured_fast['ms'],
           'Fast gain': timing['baseline_fast']['ms'] / measured_fast['ms'],
           'MAC limit': costs.arithmetic_limit_gain(costs_, measured['exit_counts']),
           'Thrshld. T': chosen['thresholds'],
           'Exit (%)': [100. * c / len(ys) for c in measured['exit_counts']]}
    tag = '{}_{}'.format(name, label.lower())
    visualize.plot_measures(curves, timing['baseline']['acc'], timing['baseline']['ms'],
                            title='B-{}: confidence measures on the test set ({})'.format(
                                title, label),
                            path=os.path.join(out['figs'], tag + '_measures'))
    visualize.plot_exit_roc(rocs, title='B-{}: exit 1 decision on the test set ({})'.format(
        title, label), path=os.path.join(out['figs'], tag + '_exit_roc'))
    summary = {'calibrated': {'thresholds': chosen['thresholds'], 'val_acc': chosen['acc'],
                              'val_ms_predicted': chosen['cost'],
                              'test_acc': measured['acc'], 'test_ms': measured['ms'],
                              'test_ms_fast': measured_fast['ms'],
                              'test_exit_counts': measured['exit_counts']},
               'measures': comparison}
    with atomic_write(os.path.join(out['results'], tag + '_calibration.md'), 'w') as f:
        f.write(tables.calibration_report(title, label, summary, len(y_val), len(ys)))
    return row, summary


#: Counts of the configuration and the least each accepts.
COUNT_MINIMUMS = {'n_train': 1, 'n_test': 1, 'n_timing': 1, 'n_val': 0, 'n_cost': 1,
                  'epochs_main': 0, 'epochs_joint': 0, 'batchsize': 1}


def check_config(config):
    """Refuse counts that are not integers or below their minimum (``--n-train 0``
    would otherwise mean "all", ``-5`` "all but five")."""
    for key, minimum in COUNT_MINIMUMS.items():
        validate_count(config.get(key), '--' + key.replace('_', '-'), minimum)


def output_folders(out_dir):
    """The paths of the ``_models``/``_figs``/``_results`` folders of ``out_dir``."""
    return {k: os.path.join(out_dir, '_' + k) for k in ('models', 'figs', 'results')}


def prepare_out(out_dir):
    """The ``_models``/``_figs``/``_results`` folders of ``out_dir``, checked.

    Fails with a clear error before any training when they could not be
    made (``--out`` under a file, no permission); nothing is created here.
    """
    out = output_folders(out_dir)
    for folder in [out_dir] + list(out.values()):
        existing = os.path.abspath(folder)
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            raise InvalidValue('--out {}: cannot create the folder {}: {} is a file '
                               '(Not a directory)'.format(out_dir, folder, existing))
        if not os.access(existing, os.W_OK | os.X_OK):
            raise InvalidValue('--out {}: the folder {} is not writable'.format(
                out_dir, existing))
    return out


def create_out(out):
    """Make the output folders checked by ``prepare_out``."""
    for folder in out.values():
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise InvalidValue('cannot create the folder {}: {}'.format(
                folder, e.strerror or e)) from e


def run(network, preset='fast', device='cpu', out_dir='.', seed=0, overrides=None,
        dataset_module=None, time_devices=None, init=None, resume=False, distributed=None):
    """Run the whole experiment; returns a dict of what was measured.

    ``distributed`` (a ``branchynet.distributed.Distributed``, every rank
    calling ``run``): training is data-parallel, the test set's exit outputs
    are computed on every rank's shard and gathered; batch-1 timing, the
    calibration and everything under ``out_dir`` (the lock included) are
    rank 0's alone, which alone returns the results (the others return None).

    ``init`` names an npz of weights (``_models/<net>.npz``) to start from,
    e.g. to continue training or, with 0 epochs, only to time and screen.
    Training snapshots go to ``_models/<net>.{main,joint}.snapshot.npz`` at
    every epoch end (and on SIGINT/SIGTERM); ``resume`` continues from them.

    Settings, devices and the output folder are checked before any work;
    the run holds a lock on ``out_dir`` (a second run there is refused) and
    first deletes temporaries that killed runs left there.
    """
    dist = distributed
    root = dist is None or dist.is_root
    with contextlib.ExitStack() as held:
        with _agreed(dist):
            module, config = resolve_config(network, preset, overrides)
            check_config(config)
            validate_count(seed, '--seed', 0)
            if dist is not None and config['augment']:
                raise InvalidValue('--augment is not supported with --distributed (the '
                                   'augmented batches are drawn per process, not shared by ranks)')
            dev = resolve_device(device)
            for td in time_devices or ():
                resolve_device(td)
            if dist is not None and dev.xp is not numpy:  # one GPU per rank of a node
                dev = chainer.get_device('@cupy:{}'.format(dist.comm.intra_rank))
            out = prepare_out(out_dir) if root else output_folders(out_dir)
            if root:  # the other ranks never touch out_dir
                held.enter_context(fileio.RunLock(out_dir))
                for folder in [out_dir] + list(out.values()):
                    removed = fileio.remove_stale_temporaries(folder)
                    if removed:
                        log('removed {} temporary file(s) left in {} by an interrupted run'
                            .format(len(removed), folder))
        return _run_locked(module, config, network, preset, dev, out, seed, dataset_module,
                           time_devices, init, resume, dist)


def _agreed(dist, kinds=(InputError, DataUnavailableError, OSError)):
    """``dist.agreed``: with MPI ranks, an error on one ends every rank's run
    the same way (see ``distributed.Distributed.agreed``); alone, nothing."""
    return contextlib.nullcontext() if dist is None else dist.agreed(kinds)


def _run_locked(module, config, network, preset, dev, out, seed, dataset_module,
                time_devices, init, resume, dist):
    title = config['title']
    root = dist is None or dist.is_root
    numpy.random.seed(seed)
    if dev.xp is not numpy:
        dev.xp.random.seed(seed)

    log('code: commit {}, chainer {}, numpy {}, python {}'.format(
        runrecord.source_commit(), chainer.__version__, numpy.__version__,
        platform.python_version()))
    log('{} ({} preset): loading {}'.format(network, preset,
                                           config.get('dataset_path') or config['dataset']))
    with _agreed(dist):  # every rank loads the data itself; all skip, or none
        x_train, y_train, x_test, y_test = load_dataset(config, dataset_module)
        if root:
            create_out(out)
    x_train, y_train, x_val, y_val, val_idx = split_validation(
        x_train, y_train, config['n_val'], seed)
    log('train {} samples, validation {}, test {}'.format(
        len(x_train), 0 if x_val is None else len(x_val), len(x_test)))

    chainer.global_config.cudnn_deterministic = True
    net = module.get_network()
    if init:
        with _agreed(dist):
            if root:  # the other ranks get these weights in train_exits' broadcast
                fileio.load_npz(init, net)
        log('initialised from {}'.format(init))
    net.to_device(dev)
    dev.use()

    log('training the main network: {} epochs, batch {}'.format(
        config['epochs_main'], config['batchsize']))
    main_snapshot = os.path.join(out['models'], network + '.main.snapshot.npz')
    joint_snapshot = os.path.join(out['models'], network + '.joint.snapshot.npz')
    if root and not (resume and checkpoint.exists(main_snapshot)) and \
            checkpoint.exists(joint_snapshot):
        os.unlink(joint_snapshot)  # it continued an older main phase
        log('a fresh main phase: removed the older joint snapshot {}'.format(joint_snapshot))
    settings = {'network': network, 'dataset': config.get('dataset_path') or config['dataset'],
                'n_train': len(x_train), 'n_val': len(val_idx), 'run_seed': seed,
                'epochs_main': config['epochs_main'], 'epochs_joint': config['epochs_joint']}
    recipe = {k: config.get(k) for k in training.RECIPE_OPTIONS}
    if any(v is not None for v in recipe.values()):
        log('training recipe beyond the original: {}'.format(', '.join(
            '{}={}'.format(k, v) for k, v in recipe.items() if v is not None)))
    main_losses, main_accs, main_s = training.train_exits(
        net, x_train, y_train, main=True, batchsize=config['batchsize'],
        num_epoch=config['epochs_main'], seed=seed, augment=config['augment'],
        snapshot=main_snapshot, resume=resume, settings=settings, distributed=dist,
        **recipe)
    if dist is None:
        base_test_acc, _ = net.test_main(x_test, y_test, batchsize=1000)
    else:
        base_test_acc = float((dist.predict_main(net, x_test) == y_test).mean())
    log('main network: test accuracy {:.2%} ({:.1f} s)'.format(base_test_acc, main_s))

    log('joint training of all {} exits: {} epochs'.format(
        net.numexits(), config['epochs_joint']))
    joint_losses, joint_accs, joint_s = training.train_exits(
        net, x_train, y_train, main=False, batchsize=config['batchsize'],
        num_epoch=config['epochs_joint'], seed=seed + 1, augment=config['augment'],
        snapshot=joint_snapshot, resume=resume, settings=settings, distributed=dist,
        **recipe)
    sms = net.get_SM(x_test) if dist is None else dist.get_SM(net, x_test)
    exit_accs = exit_accuracies(net, x_test, y_test, sms)
    log('joint: test accuracy per exit {} ({:.1f} s)'.format(
        ', '.join('{:.2%}'.format(a) for a in exit_accs), joint_s))

    outputs = None
    if dist is not None:
        if config['screen'] == 'cached':
            outputs = dist.exit_outputs(net, x_test[:config.get('n_timing') or len(x_test)])
        if not root:  # the rest (timing, writing) is rank 0's alone
            dist.wait_for_root()
            return None

    last = net.numexits() - 1
    curves_l = [[float('nan')] * last + row for row in main_losses] + joint_losses
    curves_a = [[float('nan')] * last + row for row in main_accs] + joint_accs
    if curves_l:
        visualize.plot_training(curves_l, curves_a, title='B-{}: training per exit'.format(title),
                              path=os.path.join(out['figs'], network + '_training'),
                              phase_labels=[(0, 'main only')] * bool(main_losses) +
                              [(len(main_losses), 'joint')] * bool(joint_losses))
    visualize.plot_entropy_sweep(sms, y_test, title='B-{}: early exit vs entropy '
                                 'threshold (test set)'.format(title),
                                 path=os.path.join(out['figs'], network + '_entropy'))

    save_dill(os.path.join(out['models'], network + '.bn'), net)
    save_npz(os.path.join(out['models'], network + '.npz'), net)
    log('saved {0}/{1}.bn (dill) and {0}/{1}.npz (weights)'.format(out['models'], network))

    results = {'network': network, 'title': title, 'config': config,
               'environment': runrecord.environment(config, dev), 'seed': seed, 'init': init,
               'data': {'n_train': len(x_train), 'n_test': len(x_test),
                        'n_val': len(val_idx), 'val_indices': val_idx,
                        'n_timing': min(config.get('n_timing') or len(x_test), len(x_test))},
               'training': {'main_loss': main_losses, 'main_acc': main_accs,
                            'main_seconds': main_s, 'joint_loss': joint_losses,
                            'joint_acc': joint_accs, 'joint_seconds': joint_s,
                            'epoch_seconds_main': main_s / max(1, config['epochs_main']),
                            'epoch_seconds_joint': joint_s / max(1, config['epochs_joint'])},
               'test': {'baseline_acc': base_test_acc, 'exit_accs_after_joint': exit_accs},
               'tables': {}, 'costs': costs.exit_costs(net)}
    if time_devices is None:
        time_devices = ['cpu'] + (['gpu'] if gpu_usable() else [])
    for td in time_devices:
        tdev = resolve_device(td)
        net.to_device(tdev)
        tdev.use()
        label = device_label(tdev)
        rows, timing = time_and_screen(net, network, title, config, x_test, y_test, label,
                                       out, results['costs'], outputs)
        if x_val is not None:
            log('{}: calibrating thresholds on {} validation samples'.format(label, len(x_val)))
            # The paper's schedule trains on every training image; holding some
            # out for calibration (opt-in there) is then said in the row.
            note = '; trained on {:,} of {:,} images'.format(
                len(x_train), len(x_train) + len(x_val)) if preset == 'paper' else ''
            row, summary = calibrate_and_compare(net, network, title, x_val, y_val, timing,
                                                 label, out, results['costs'], row_note=note)
            rows.append(row)
            results.setdefault('calibration', {})[label] = summary
            print(tables.format_table(rows), flush=True)
            tables.write_table(os.path.join(out['results'], '{}_{}_table'.format(
                network, label.lower())), rows)
        results['tables'][label] = rows
    net.to_device(dev)
    if dist is not None:
        results['distributed'] = {
            'ranks': dist.size, 'communicator': dist.communicator_name,
            'global_batch': config['batchsize'],
            'comm_seconds_rank0': dist.comm_seconds,
            'timing': 'batch-1 timing and calibration ran on rank 0 alone'}
    runrecord.write_json(os.path.join(out['results'], network + '_results.json'), results)
    log('done: results in {}, figures in {}'.format(out['results'], out['figs']))
    if dist is not None:
        dist.wait_for_root()
    return results


def build_parser():
    """The driver's argument parser (``branchynet.cli``)."""
    from branchynet import cli
    return cli.build_parser()


def main(argv=None):
    """The driver's command line (``branchynet.cli.main``): exit status."""
    from branchynet import cli
    return cli.main(argv)


if __name__ == '__main__':
    sys.exit(main())
