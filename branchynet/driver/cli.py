"""The driver's command line: ``python -m branchynet.experiment``.

Parses the options, runs one network or a list of them (each with its log,
then Table I of those that produced results), restarts itself under
``mpiexec`` for ``--mpi N``, and turns input errors into one-line messages
and exit statuses. ``experiment.run`` does the work of one network.
"""
import argparse
import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback

import numpy

from branchynet import networks, progress
from branchynet.driver import netspec, run as experiment, stages
from branchynet.reporting import report
from branchynet.training import checkpoint, loop as training, runtime
from branchynet.devices import DEVICE_CHOICES, resolve_device
from branchynet.datasets import DataUnavailableError
from branchynet.validation import MAX_SEED, InputError, InvalidValue, validate_seed


def build_parser():
    parser = argparse.ArgumentParser(
        prog='python -m branchynet.experiment', allow_abbrev=False,
        description='Train, time and screen BranchyNet networks (Table I and Fig. 3). '
                    './get_results.sh runs this with --networks all --device auto --out . '
                    'after setting up the environment.')
    parser.add_argument('--network', default=None, metavar='NAME|PATH.py:FUNCTION',
                        help='one network (default lenet_mnist): {}, or a function of your '
                             'own returning a BranchyNet, as PATH.py:FUNCTION or '
                             'package.module:FUNCTION (with --dataset; files and the Table I '
                             'row take the function\'s name)'.format(
                                 ', '.join(networks.NETWORKS)))
    parser.add_argument('--networks', metavar='LIST',
                        help='comma-separated networks (names or PATH.py:FUNCTION), or all '
                             '({}): each is run in turn '
                             'with its output also in <out>/_results/<network>.log, then '
                             'Table I of those that produced results goes to '
                             '<out>/_results/table1.md; a network whose data cannot be had '
                             'is skipped with a line saying how to provide it'.format(
                                 ', '.join(networks.NETWORKS)))
    parser.add_argument('--quiet', action='store_true',
                        help='no progress output (bars show on a terminal only; training also '
                             'logs a line every 30 s elsewhere)')
    parser.add_argument('--title', help='the name of the network in Table I and figures '
                        '(default: the paper\'s name, or the function\'s)')
    parser.add_argument('--preset', default='fast',
                        help="schedule: 'paper' (the original's), 'fast' (default) or 'tiny' "
                             '(seconds, a data subset)')
    parser.add_argument('--paper', dest='preset', action='store_const', const='paper',
                        help="the original's schedules on every training image (--preset "
                             'paper; LeNet 50 + 100 epochs: about 2 h on a 2-core CPU)')
    parser.add_argument('--device', default='cpu',
                        help='training device: {} (default cpu; auto: a GPU when CuPy sees '
                             'one)'.format(', '.join(DEVICE_CHOICES)))
    parser.add_argument('--time-devices', default=None,
                        help='comma-separated devices to time on (default: cpu, and with '
                             '--device gpu or auto the GPU too when it is usable)')
    parser.add_argument('--out', default='.', help='folder holding _models, _figs, _results')
    parser.add_argument('--seed', type=_seed, default=0,
                        help='0..{} (default 0)'.format(MAX_SEED))
    parser.add_argument('--epochs-main', type=int, help='override the preset')
    parser.add_argument('--epochs-joint', type=int, help='override the preset')
    parser.add_argument('--batchsize', type=int, help='override the preset')
    parser.add_argument('--n-train', type=int,
                        help='use N training samples, class-balanced: the first samples of '
                        'each class in turn')
    parser.add_argument('--n-test', type=int,
                        help='use N test samples, class-balanced as --n-train')
    parser.add_argument('--n-timing', type=int,
                        help='time and screen on the first N test samples (default all)')
    parser.add_argument('--timing-repeats', type=int, metavar='R',
                        help='timed passes over the timing samples per setting, after a '
                             'warm-up, baseline and BranchyNet interleaved; Table I shows '
                             'the median and the range (default: {})'.format(', '.join(
                                 '{} with --preset {}'.format(r, p)
                                 for p, r in stages.TIMING_REPEATS.items())))
    parser.add_argument('--dataset', dest='dataset_path', metavar='FILE.npz|FOLDER|NAME',
                        help="replace the network's dataset: an npz file (train_x, train_y, "
                             'test_x, test_y or x_train, ...), an image folder or '
                             '.tar/.tar.gz archive (train/<class>/*.jpg|png, test/<class>/*; '
                             'decoded once into a cache) or one of: '
                             + ', '.join(experiment.DATASETS))
    parser.add_argument('--cifar10', metavar='PATH',
                        help='where CIFAR-10 is for this run (sets $BRANCHYNET_CIFAR10): the '
                             'official cifar-10-python.tar.gz or its folder, or an '
                             'image-folder copy (folder or .tar/.tar.gz with train/<class>/, '
                             'test/<class>/; results then say "CIFAR-10 (JPEG copy)")')
    parser.add_argument('--engines', metavar='LIST',
                        help='the inference paths to time, comma-separated, of {} (default '
                             'all; chainer, the reference of the accuracy, Time and Gain '
                             'columns, is always timed): e.g. --engines chainer,fast leaves '
                             'out the numba path and its compile'.format(
                                 ', '.join(stages.TIMED_PATHS)))
    parser.add_argument('--screen', choices=('cached', 'original'),
                        help='cached (default): grid from exit outputs computed once; '
                             'original: one batch-1 pass per grid point')
    parser.add_argument('--n-val', type=int,
                        help='training samples held out to choose the calibrated row\'s '
                             'thresholds; default by preset: {}. Refused when it would leave '
                             'fewer training samples than it holds out. With 0 (the paper '
                             'preset, which trains on every training image) the held-out row '
                             'chooses on one half of the test set and measures on the '
                             'other'.format(n_val_defaults()))
    parser.add_argument('--place-exits', type=int, metavar='K',
                        help='after the main network\'s training, choose at most K early exits '
                             'on its trunk automatically and report them beside the hand '
                             'placement (docs/placement.md); the run then goes on as without it')
    parser.add_argument('--resume', action='store_true',
                        help='continue from the training snapshots in _models/')
    parser.add_argument('--init', metavar='FILE.npz',
                        help='start from these weights (continue training, or time only '
                             'with --epochs-main 0 --epochs-joint 0)')
    parser.add_argument('--augment', action='store_true', default=None,
                        help='train on augmented images (crops, flips; off by default)')
    parser.add_argument('--exit-weights', metavar='W1,W2,...',
                        help='loss weight of every exit in joint training, comma-separated '
                             '(default: each Branch\'s weight, 1 in the original)')
    parser.add_argument('--distill-weight', type=float, metavar='W',
                        help='self-distillation: each early exit also learns the last '
                             "exit's softened output, with this weight (default off)")
    parser.add_argument('--distill-temperature', type=float, metavar='T',
                        help='softening temperature of --distill-weight, {:g} to {:g} '
                             '(default {})'.format(*training.DISTILL_TEMPERATURES,
                                                   training.DEFAULT_DISTILL_TEMPERATURE))
    parser.add_argument('--adam-beta1', type=float, metavar='B',
                        help="Adam's beta1 (default {}, the original code's; the paper states "
                             '0.99)'.format(training.ORIGINAL_ADAM_BETA1))
    parser.add_argument('--lr-schedule', choices=training.LR_SCHEDULES,
                        help="step size over each training phase: constant (default, the "
                             "original's) or cosine (falls from alpha to 0 along a half cosine)")
    parser.add_argument('--shift', type=int, metavar='N',
                        help='train on images moved by a random offset in [-N, N] pixels '
                             'along each axis, drawn per epoch (default 0: off; at most half '
                             'the images\' smaller side; works with --mpi)')
    parser.add_argument('--flip', action='store_true', default=None,
                        help='train on images mirrored left to right at random (each with '
                             'probability 1/2, drawn per epoch; combines with --shift; works '
                             'with --mpi)')
    parser.add_argument('--distributed', action='store_true',
                        help='data-parallel over the MPI ranks this was started with '
                             '(mpiexec -n N python -m branchynet.experiment --distributed); '
                             '--batchsize stays the global batch')
    parser.add_argument('--communicator', default=None,
                        help='ChainerMN communicator with --distributed: on CPU packed '
                             "(default: one all-reduce per step) or naive (ChainerMN's, one per "
                             'parameter); on GPUs pure_nccl (default), flat or naive')
    parser.add_argument('--mpi', type=int, metavar='N',
                        help='start this run on N MPI ranks: mpiexec -n N ... --distributed '
                             '(needs requirements/mpi.txt; MPIEXEC overrides the launcher)')
    parser.add_argument('--hostfile', metavar='FILE',
                        help='with --mpi: the MPI hostfile listing the nodes (several machines)')
    return parser


def n_val_defaults():
    """``--n-val``'s default of every preset, as the networks set it:
    ``'fast 5000 (lenet_mnist), 1000 (alex_cifar10, your own); ...'``."""
    presets = {}
    for name in networks.NETWORKS:
        for preset in networks.load(name).EXPERIMENT['presets']:
            presets.setdefault(preset, {}).setdefault(
                experiment.resolve_config(name, preset)[1]['n_val'], []).append(name)
    for preset, settings in netspec.default_experiment('')['presets'].items():
        presets.setdefault(preset, {}).setdefault(settings['n_val'], []).append('your own')
    return '; '.join('{} {}'.format(preset, ', '.join(
        str(n) if len(values) == 1 else '{} ({})'.format(n, ', '.join(names))
        for n, names in sorted(values.items(), reverse=True)))
        for preset, values in presets.items())


def _seed(text):
    """``--seed``: an integer in 0..MAX_SEED, or argparse's one-line error."""
    try:
        return validate_seed(int(text), '--seed')
    except (ValueError, InputError):
        raise argparse.ArgumentTypeError('must be an integer in 0..{}, got {!r}'.format(
            MAX_SEED, text)) from None


def network_list(args):
    """The networks to run: ``--networks`` (a comma-separated list or ``all``)
    or ``--network`` (default lenet_mnist)."""
    if args.networks is None:
        return [_checked(args.network or 'lenet_mnist')]
    if args.network is not None:
        raise InvalidValue('give --network or --networks, not both (get_results.sh runs '
                           '--networks all: there, name one network with --networks NAME)')
    if args.networks.strip() == 'all':
        return list(networks.NETWORKS)
    names = [n.strip() for n in args.networks.split(',') if n.strip()]
    expected = 'expected a comma-separated list of: {} (or all)'.format(
        ', '.join(networks.NETWORKS))
    for i, name in enumerate(names):
        if not netspec.is_function_spec(name) and name not in networks.NETWORKS:
            raise InvalidValue('unknown network {!r} in --networks; {}'.format(name, expected))
        if name in names[:i]:
            raise InvalidValue('--networks names {} twice; {} (each once)'.format(
                name, expected))
    if not names:
        raise InvalidValue('--networks {!r} names no network; {}'.format(args.networks, expected))
    short = [netspec.short_name(n) for n in names]
    if len(set(short)) < len(short):
        raise InvalidValue('--networks names two networks called the same ({}): their files '
                           'would collide'.format(', '.join(short)))
    return [_checked(n) for n in names]


def _checked(spec):
    """``spec``, after checking that it names a network (a function spec is
    imported and called once, so a bad one fails before any work)."""
    if netspec.is_function_spec(spec):
        netspec.load(spec)
    elif spec.endswith('.py'):
        raise InvalidValue('--network {0}: name the function that builds the network too: '
                           '{0}:FUNCTION'.format(spec))
    elif spec not in networks.NETWORKS:
        networks.load(spec)  # raises, naming the choices
    return spec


def parse_weights(text):
    """``--exit-weights 1,0.3`` as a list of floats (None when not given)."""
    if text is None:
        return None
    try:
        return [float(w) for w in text.split(',')]
    except ValueError:
        raise InvalidValue('--exit-weights {!r}: expected comma-separated numbers, one per '
                           'exit (e.g. 1,0.3)'.format(text)) from None


def mpi_command(args, argv):
    """``mpiexec -n N [-hostfile F] python -m branchynet.experiment --distributed ...``:
    this command line with ``--mpi``/``--hostfile`` turned into the launcher's."""
    if args.mpi < 1:
        raise InvalidValue('--mpi needs a positive number of ranks, got {}'.format(args.mpi))
    if args.distributed:
        raise InvalidValue('--mpi starts the ranks itself; --distributed is for a command '
                           'already started by mpiexec')
    if args.hostfile is not None and not os.path.isfile(args.hostfile):
        raise InvalidValue('--hostfile {!r} is not a file; expected an MPI hostfile (one '
                           'host:slots per line)'.format(args.hostfile))
    if os.environ.get('MPIEXEC'):
        launcher = shutil.which(os.environ['MPIEXEC'])
        if not launcher:
            raise InvalidValue('MPIEXEC={!r} is not a command found here'.format(
                os.environ['MPIEXEC']))
    else:
        beside = os.path.join(os.path.dirname(sys.executable), 'mpiexec')
        launcher = beside if os.path.exists(beside) else shutil.which('mpiexec')
    if not launcher:
        raise InvalidValue('mpiexec not found: install requirements/mpi.txt into this '
                           'environment (./get_results.sh --mpi N does) or set MPIEXEC')
    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ('--mpi', '--hostfile'):
            skip = True
        elif not a.startswith(('--mpi=', '--hostfile=')):
            rest.append(a)
    command = [launcher, '-n', str(args.mpi)]
    if args.hostfile is not None:
        command += ['-hostfile', args.hostfile]  # MPICH and Open MPI both take -hostfile
    return command + [sys.executable, '-m', 'branchynet.experiment', '--distributed'] + rest


def run_launcher(command):
    """Run ``mpiexec`` and return its exit status (128 + N for signal N).

    Ctrl-C reaches the ranks from the terminal (they save a snapshot at one
    agreed batch and stop), so this process ignores SIGINT while it waits;
    a SIGTERM sent to it is passed on to mpiexec."""
    child = subprocess.Popen(command)
    previous = {signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
                signal.SIGTERM: signal.signal(signal.SIGTERM,
                                              lambda signum, frame: child.send_signal(signum))}
    try:
        code = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 128 - code if code < 0 else code


class _Tee(io.TextIOBase):
    """Writes to a stream and to a log file (the per-network logs)."""

    def __init__(self, stream, log_file):
        self.stream, self.log_file = stream, log_file

    def write(self, text):
        self.stream.write(text)
        self.log_file.write(text)
        return len(text)

    def flush(self):
        self.stream.flush()
        self.log_file.flush()


@contextlib.contextmanager
def _logged(path):
    """Output also appended to ``path`` (appended: a run refused because
    another holds ``--out`` must not wipe that run's log)."""
    with open(path, 'a') as log_file:
        log_file.write('\n--- {}\n'.format(time.strftime('%Y-%m-%d %H:%M:%S %Z')))
        with contextlib.redirect_stdout(_Tee(sys.stdout, log_file)), \
                contextlib.redirect_stderr(_Tee(sys.stderr, log_file)):
            yield


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        names = network_list(args)
        if args.cifar10 is not None:  # the ranks of --mpi inherit it
            if not os.path.exists(args.cifar10):
                raise InvalidValue('--cifar10 {}: no such file or folder; expected '
                                   'cifar-10-python.tar.gz, its folder or an image-folder '
                                   'copy'.format(args.cifar10))
            os.environ['BRANCHYNET_CIFAR10'] = os.path.abspath(args.cifar10)
        if args.hostfile is not None and args.mpi is None:
            raise InvalidValue('--hostfile needs --mpi N')
        if args.epochs_main == 0 and args.epochs_joint == 0 and not args.init:
            raise InvalidValue('--epochs-main 0 --epochs-joint 0 trains nothing, so it would '
                               'time and tabulate random weights: give --init FILE.npz (the '
                               'weights to time) or at least one epoch')
        training.check_shift(args.shift, args.augment, names=('--shift', '--augment'))
        training.check_flip(args.flip, args.augment, names=('--flip', '--augment'))
        training.check_distillation(args.distill_weight, args.distill_temperature,
                                    names=('--distill-weight', '--distill-temperature'))
        if args.mpi is not None:
            command = mpi_command(args, argv)
        if args.place_exits is not None and args.place_exits < 1:
            raise InvalidValue('--place-exits must be the most exits to place, 1 or more, got '
                               '{}'.format(args.place_exits))
        if args.place_exits is not None and (args.mpi is not None or args.distributed):
            raise InvalidValue('--place-exits runs on one process: leave out --mpi and '
                               '--distributed')
        args.exit_weights = parse_weights(args.exit_weights)
        args.engines = stages.parse_engines(args.engines)
    except InputError as e:
        print('error: {}'.format(e), file=sys.stderr)
        return 2
    if args.mpi is not None:
        print('starting: {}'.format(' '.join(command)), flush=True)
        return run_launcher(command)
    runtime.tune_allocator()
    if args.quiet:
        progress.set_quiet()
    overrides = {k: getattr(args, k) for k in
                 ('epochs_main', 'epochs_joint', 'batchsize', 'n_train', 'n_test', 'n_timing',
                  'timing_repeats', 'dataset_path', 'augment', 'screen', 'n_val', 'title',
                  'engines', 'place_exits') +
                 training.RECIPE_OPTIONS}
    if args.time_devices:
        time_devices = args.time_devices.split(',')
    else:  # training on the CPU times on the CPU; gpu/auto add the GPU when usable
        time_devices = ['cpu'] if args.device == 'cpu' else None
    if args.communicator and not args.distributed:
        print('error: --communicator needs --distributed', file=sys.stderr)
        return 2
    if not args.distributed:
        with _sigterm_unwinds():
            return _run_networks(args, names, overrides, time_devices, None)
    from branchynet.training import distributed
    try:
        dist = distributed.Distributed.create(
            args.communicator, gpu=resolve_device(args.device).xp is not numpy)
    except (distributed.MPIUnavailable, InputError) as e:  # every rank, before any collective
        if distributed.world_rank() == 0:
            print('error: {}'.format(e), file=sys.stderr)
        return 2
    dist.silence_others()
    with distributed.abort_on_error(dist, keep=(checkpoint.TrainingInterrupted,)):
        return _run_networks(args, names, overrides, time_devices, dist)


class Terminated(KeyboardInterrupt):
    """SIGTERM outside training: unwinds like Ctrl-C, so the ``--out`` lock and
    temporaries are cleaned up (training turns it into a snapshot itself)."""


@contextlib.contextmanager
def _sigterm_unwinds():
    def handler(signum, frame):
        raise Terminated()
    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run_networks(args, names, overrides, time_devices, dist):
    """One network as asked (``--network``), or each of ``--networks`` in turn
    with its log, then Table I of those that wrote results in this run.
    Exit status: 130 if interrupted (143 by SIGTERM outside training), else 2
    if a network's input was bad, 1 if one failed otherwise, 0."""
    if args.networks is None:
        return _run_main(args, names[0], overrides, time_devices, dist)
    root = dist is None or dist.is_root
    results = os.path.join(args.out, '_results')
    try:  # with MPI ranks, all of them learn whether rank 0 could
        with contextlib.nullcontext() if dist is None else dist.agreed((OSError,)):
            if root:
                os.makedirs(results, exist_ok=True)
    except OSError as e:
        if root:
            print('error: cannot create {}: {}'.format(results, e.strerror or e),
                  file=sys.stderr)
        return 2
    start = time.time()
    codes, produced = {}, []
    for spec in names:
        name = netspec.short_name(spec)
        logging = _logged(os.path.join(results, name + '.log')) if root \
            else contextlib.nullcontext()
        with logging:
            if root:
                print('=== {} ({} preset, device {}{})'.format(
                    name, args.preset, args.device,
                    '' if dist is None else ', {} MPI ranks'.format(dist.size)), flush=True)
            try:
                codes[name] = _run_main(args, spec, overrides, time_devices, dist)
            except Exception:  # a bug in one network's run: reported, the others still run
                if dist is not None:
                    raise  # distributed.abort_on_error ends every rank
                traceback.print_exc()
                codes[name] = 1
        path = os.path.join(results, name + '_results.json')
        if codes[name] == 0 and os.path.exists(path) and os.path.getmtime(path) >= start:
            produced.append(name)  # a skipped network writes no results
        if codes[name] in (130, 143):
            break
    if root:
        print('=== finished in {:.0f} s'.format(time.time() - start), flush=True)
        if produced:  # Table I of this run's networks only, never older runs' results
            if report.main(['--results', results, '--networks', ','.join(produced)]) != 0:
                codes['Table I'] = 1
        else:
            print('no network produced results: {} left as it was'.format(
                os.path.join(results, 'table1.md')), file=sys.stderr)
        failed = [n for n, c in codes.items() if c != 0]
        if failed:
            print('error: failed: {} (see {})'.format(
                ', '.join(failed), os.path.join(results, '<network>.log')), file=sys.stderr)
    for code in (130, 143, 2, 1):
        if code in codes.values():
            return code
    return 0


def _run_main(args, network, overrides, time_devices, dist):
    """``run`` with its errors as messages and exit codes. With MPI ranks, an
    error every rank raised together (an interruption, a refused input, data
    no rank could load) is reported by rank 0 alone; any other error of a
    rank propagates to ``distributed.abort_on_error``, which ends the job."""
    speak = dist is None or dist.is_root

    def together(e):
        return dist is None or getattr(e, 'all_ranks', False)
    try:
        experiment.run(network, args.preset, args.device, args.out, args.seed, overrides,
            time_devices=time_devices, init=args.init, resume=args.resume, distributed=dist)
    except checkpoint.TrainingInterrupted as e:
        if speak:  # with ranks, every rank stops at the same batch
            print(str(e), file=sys.stderr)
        return 130
    except KeyboardInterrupt as e:  # outside training (loading, timing, screening)
        if dist is not None:
            raise
        print('\ninterrupted ({}) while not training {}: run again with --resume to go on '
              'from the training snapshots in _models/ (finished epochs are not repeated)'
              .format('SIGTERM' if isinstance(e, Terminated) else 'SIGINT', network),
              file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    except DataUnavailableError as e:
        if not together(e):
            raise
        if speak:
            print('skipped {}: {}'.format(network, e), file=sys.stderr)
        return 0
    except (InputError, FileNotFoundError) as e:  # bad input; anything else is a bug
        if not together(e):
            raise
        if speak:
            print('error: {}'.format(e), file=sys.stderr)
        return 2
    except OSError as e:  # the environment: a full disk, no permission
        if not together(e):
            raise
        if speak:
            print('error: {}{}'.format(e.strerror or e, ': {}'.format(e.filename)
                                       if e.filename else ''), file=sys.stderr)
        return 1
    return 0
