"""One network's run, end to end, as the original notebooks ran it.

    python -m branchynet.experiment --network lenet_mnist --preset fast

Steps: load data, build the network, train the main network alone, train
all exits jointly from those weights, time the baseline and BranchyNet at
batch size 1, screen the threshold grid on the test set (the paper's way),
pick the knee, write Table I, every screened point, figures and models.

Every network is configured by the ``EXPERIMENT`` dict of its module in
``networks/``; nothing here is specific to one network. ``--network
PATH.py:FUNCTION`` (or ``package.module:FUNCTION``) runs any function that
returns a BranchyNet, with default settings (``driver.netspec``). The stages
that time, screen and calibrate are ``driver.stages``; the command line
(options, network lists, ``--mpi``), which calls ``run``, is ``driver.cli``.
"""
import contextlib
import os
import platform

import branchynet  # noqa: F401  (compatibility shims before chainer)
import chainer
import numpy

from branchynet.datasets import DataUnavailableError

from branchynet import visualize
from branchynet.driver import netspec
from branchynet.evaluation import screening
from branchynet.io import fileio, runrecord
from branchynet.links import cpukernels, kernelthreads
from branchynet.measures import confidence, costs
from branchynet.reporting import tables
from branchynet.training import checkpoint, loop as training
from branchynet.devices import device_label, gpu_usable, resolve_device
from branchynet.io.fileio import save_dill, save_npz
from branchynet.validation import InputError, InvalidValue, validate_count, validate_seed
from branchynet.driver.stages import (balanced_head, calibrate_and_compare, exit_accuracies,
                                       held_out_halves, log, split_validation, time_and_screen)

DATASETS = ('mnist', 'cifar10', 'pcifar10', 'mnist32')


def resolve_config(network, preset, overrides=None):
    """The experiment settings of ``network`` (a name or ``...:FUNCTION``,
    ``branchynet.driver.netspec``) under ``preset``, with overrides."""
    module = netspec.load(network)
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
    if netspec.is_function_spec(network):
        config.update(network=netspec.short_name(network), network_spec=network)
    if not (isinstance(config['network'], str) and config['network'].isidentifier()):
        raise InvalidValue('--network {}: its name {!r} names the files in --out, so it must be '
                           'a Python name (letters, digits and _)'.format(network,
                                                                          config['network']))
    if netspec.is_function_spec(network):
        if not (config.get('dataset_path') or config.get('dataset')):
            raise InvalidValue('--network {} needs --dataset: an npz file (train_x, train_y, '
                               'test_x, test_y) or one of: {}'.format(
                                   network, ', '.join(DATASETS)))
    return module, config


def default_threshold_grid(net, x, values_per_exit=16):
    """Threshold values for the screening grid of a network configured without
    any: quantiles of every early exit's confidence scores on ``x`` (the
    evaluation samples), pooled, so the grid spans what the data
    distinguishes; values within the measure's range."""
    measure = confidence.get_measure(net.confidence)
    scores, _ = screening.exit_outputs(net, x)
    early = scores.shape[1] - 1
    count = max(3, values_per_exit // early)
    levels = numpy.linspace(0, 1, count + 2)[1:-1]
    limits = numpy.concatenate([numpy.quantile(scores[:, n], levels) for n in range(early)])
    values = {float('{:.4g}'.format(measure.limit(v))) for v in limits}
    if measure.upper is not None:
        values = [min(max(v, 0.0), measure.upper) for v in values]
    return sorted(set(values))


def _dataset_module(config, dataset_module=None):
    """The ``datasets`` module of the configured dataset name, or None for a file."""
    import importlib
    source = config.get('dataset_path')
    if dataset_module is not None or (source and source not in DATASETS and (
            source.endswith('.npz') or os.path.exists(source))):
        return dataset_module
    name = source or config['dataset']
    if name not in DATASETS:
        raise InvalidValue('unknown dataset {!r}; expected a .npz file, an image folder or '
                           '.tar/.tar.gz archive (train/<class>/*.jpg|png, test/<class>/*), '
                           'or one of: {}'.format(name, ', '.join(DATASETS)))
    return importlib.import_module('branchynet.datasets.' + name)


def load_dataset(config, dataset_module=None):
    """Load the configured dataset and cut the subsets the preset asks for.

    ``config['dataset_path']`` (``--dataset``) replaces the network's default
    dataset: an npz file in the ``train_x, train_y, test_x, test_y`` layout,
    an image folder or archive (``datasets.imagefolder``), or the name of a
    module in ``datasets/`` (e.g. ``mnist32``).
    """
    source = config.get('dataset_path')
    dataset_module = _dataset_module(config, dataset_module)
    if dataset_module is not None:
        x_train, y_train, x_test, y_test = dataset_module.get_data()
    elif source.endswith('.npz'):
        from branchynet.datasets import npz
        x_train, y_train, x_test, y_test = npz.load(source, num_classes=config['num_classes'])
    else:
        from branchynet.datasets import imagefolder
        x_train, y_train, x_test, y_test = imagefolder.get_data(source)
        classes = int(max(y_train.max(), y_test.max())) + 1
        if classes > config['num_classes']:
            raise InvalidValue('{} has {} classes; this network has {} outputs'.format(
                source, classes, config['num_classes']))
    if config.get('n_train'):  # class-balanced, from the front of each class
        keep = balanced_head(y_train, config['n_train'])
        x_train, y_train = x_train[keep], y_train[keep]
    if config.get('n_test'):
        keep = balanced_head(y_test, config['n_test'])
        x_test, y_test = x_test[keep], y_test[keep]
    return x_train, y_train, x_test, y_test


def data_copy(config, dataset_module=None):
    """The dataset module's ``data_source()`` (``label``, ``sha256``, ...) when
    the run's data is a copy, not the official files (e.g. ``'CIFAR-10 (JPEG
    copy)'``: CIFAR-10 from an image-folder copy), else None."""
    module = _dataset_module(config, dataset_module)
    source = getattr(module, 'data_source', None)
    if source is None:
        return None
    source = source()
    return None if source['official'] else source


#: Counts of the configuration and the least each accepts.
COUNT_MINIMUMS = {'n_train': 1, 'n_test': 1, 'n_timing': 1, 'n_val': 0, 'n_cost': 1,
                  'epochs_main': 0, 'epochs_joint': 0, 'batchsize': 1, 'timing_repeats': 1}


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

    ``distributed`` (a ``branchynet.training.distributed.Distributed``, every rank
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
            validate_seed(seed, '--seed')
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
        return _run_locked(module, config, config['network'], preset, dev, out, seed,
                           dataset_module, time_devices, init, resume, dist)


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

    started = runrecord.start()  # the commit the run starts from is the one it records
    log('code: commit {}, chainer {}, numpy {}, python {}'.format(
        started['commit'], chainer.__version__, numpy.__version__, platform.python_version()))
    log('{} ({} preset): loading {}'.format(network, preset,
                                           config.get('dataset_path') or config['dataset']))
    with _agreed(dist):  # every rank loads the data itself; all skip, or none
        x_train, y_train, x_test, y_test = load_dataset(config, dataset_module)
        copy = data_copy(config, dataset_module)
        if root:
            create_out(out)
    if copy:  # tables, figures and results name a copy of the data (e.g. a JPEG copy)
        title = title if copy['label'] in title else '{} on {}'.format(title, copy['label'])
        log('data: {} (sha256 {}), not the official files; results are labelled "{}"'.format(
            copy['label'], copy['sha256'], title))
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
    if dev.xp is numpy and cpukernels.enabled():
        if dist is None or not dist.kernel_threads:
            log('CPU training kernels on {} thread(s)'.format(kernelthreads.threads()))
        else:
            log('CPU training kernels: threads of rank 0, 1, ...: {}'.format(
                ', '.join(map(str, dist.kernel_threads))))
    main_snapshot = os.path.join(out['models'], network + '.main.snapshot.npz')
    joint_snapshot = os.path.join(out['models'], network + '.joint.snapshot.npz')
    if root and not (resume and checkpoint.exists(main_snapshot)) and \
            checkpoint.exists(joint_snapshot):
        os.unlink(joint_snapshot)  # it continued an older main phase
        log('a fresh main phase: removed the older joint snapshot {}'.format(joint_snapshot))
    settings = {'network': network, 'dataset': config.get('dataset_path') or config['dataset'],
                'n_train': len(x_train), 'n_val': len(val_idx), 'run_seed': seed,
                'epochs_main': config['epochs_main'], 'epochs_joint': config['epochs_joint']}
    if copy:  # a snapshot of a run on other data is not resumed
        settings['data_source'] = '{} sha256 {}'.format(copy['label'], copy['sha256'])
    if getattr(module, 'SOURCE', None):  # a function's file: --resume with other code is refused
        settings['network_source'] = module.SOURCE
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
    placement = None
    if config.get('place_exits') and root:
        from branchynet.driver.placing import place_after_main
        placement = place_after_main(net, network, config['place_exits'], x_train, y_train,
                                     x_val, y_val, x_test, y_test, out, config.get('engines'),
                                     seed, config.get('n_timing'))

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
               'environment': runrecord.environment(config, dev, started), 'seed': seed,
               'init': init,
               'data': {'source': copy['label'] if copy else None,
                        'source_sha256': copy['sha256'] if copy else None,
                        'n_train': len(x_train), 'n_test': len(x_test),
                        'n_val': len(val_idx), 'val_indices': val_idx,
                        'n_timing': min(config.get('n_timing') or len(x_test), len(x_test))},
               'training': {'main_loss': main_losses, 'main_acc': main_accs,
                            'main_seconds': main_s, 'joint_loss': joint_losses,
                            'joint_acc': joint_accs, 'joint_seconds': joint_s,
                            'epoch_seconds_main': main_s / max(1, config['epochs_main']),
                            'epoch_seconds_joint': joint_s / max(1, config['epochs_joint'])},
               'test': {'baseline_acc': base_test_acc, 'exit_accs_after_joint': exit_accs},
               'tables': {}, 'costs': costs.exit_costs(net)}
    if placement is not None:
        results['placement'] = placement
    if config.get('thresholds') is None:  # a network of one's own without a grid
        config['thresholds'] = default_threshold_grid(
            net, x_test[:config.get('n_timing') or len(x_test)])
        log('threshold grid from the exits\' {} quantiles on the test samples: {}'.format(
            net.confidence, ', '.join('{:.4g}'.format(t) for t in config['thresholds'])))
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
        else:  # every training image trained: the held-out row splits the test samples
            row, summary = held_out_halves(net, title, timing, label, results['costs'])
            rows += [row] if row else []
            results.setdefault('held_out', {})[label] = summary
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

