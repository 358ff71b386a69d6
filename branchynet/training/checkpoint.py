"""Training snapshots: model, optimizer, position and random state, atomically.

A snapshot is one npz file written with Chainer's serializers (the model
under ``model/``, the optimizer and its Adam moments under ``optimizer/``)
plus the training position (epoch, and within an interrupted epoch the
shuffled order and the next batch), the per-epoch curves so far, and the
state of both random generators that training draws from (the shuffling
generator and numpy's global one, used by dropout). Resuming from it with
the same seed ends with the same weights as an uninterrupted run.
"""
import contextlib
import json
import os
import signal

import chainer
import numpy

from branchynet.io import safenpz
from branchynet.io.fileio import write_npz
from branchynet.validation import (InvalidValue, nonfinite_optimizer_state,
                                   require_finite_params)


class TrainingInterrupted(Exception):
    """Training stopped on SIGINT/SIGTERM; ``path`` is the snapshot to resume from."""

    def __init__(self, path, detail=''):
        super().__init__('training interrupted; snapshot saved to {}{} (resume with '
                         '--resume)'.format(path, detail))
        self.path = path


def data_digest(x, y, samples=256):
    """A short digest of a training set: its shape, all labels and up to
    ``samples`` evenly spaced images (cheap even for large sets)."""
    import hashlib
    x_host = chainer.backends.cuda.to_cpu(x[::max(1, len(x) // samples)])
    h = hashlib.sha256(repr((tuple(x.shape), str(x.dtype))).encode())
    h.update(numpy.ascontiguousarray(chainer.backends.cuda.to_cpu(y)).tobytes())
    h.update(numpy.ascontiguousarray(x_host).tobytes())
    return h.hexdigest()[:16]


def _rng_arrays(prefix, state):
    name, keys, pos, has_gauss, cached = state
    return {prefix + 'keys': keys, prefix + 'pos': numpy.array(pos),
            prefix + 'has_gauss': numpy.array(has_gauss),
            prefix + 'cached': numpy.array(cached)}


def _rng_state(npz, prefix, path):
    """An MT19937 state read from ``npz`` and checked field by field: numpy's
    ``set_state`` accepts a position past its 624-word key and then reads
    beyond it (a segfault at the next draw)."""
    def get(key, kinds, shape=()):
        value = safenpz.read_array(npz, prefix + key, path, shape=shape)
        if value.dtype.kind not in kinds:
            raise safenpz.ModelFileError('{}: {!r} must be {} of shape {}, got {} {}'.format(
                path, prefix + key, 'integers' if kinds == 'iu' else 'a number', shape,
                value.dtype, value.shape))
        return value
    keys = get('keys', 'iu', (MT_WORDS,))
    if keys.min() < 0 or keys.max() > 2 ** 32 - 1:
        raise safenpz.ModelFileError('{}: {!r} must hold 32-bit unsigned words'.format(
            path, prefix + 'keys'))
    pos, has_gauss, cached = int(get('pos', 'iu')), int(get('has_gauss', 'iu')), \
        float(get('cached', 'iuf'))
    if not 0 <= pos <= MT_WORDS:
        raise safenpz.ModelFileError('{}: {!r} is {}; expected a position in 0..{}'.format(
            path, prefix + 'pos', pos, MT_WORDS))
    if has_gauss not in (0, 1) or not numpy.isfinite(cached):
        raise safenpz.ModelFileError('{}: {!r} must be 0 or 1 and {!r} finite, got {} and {}'
                                     .format(path, prefix + 'has_gauss', prefix + 'cached',
                                             has_gauss, cached))
    return ('MT19937', keys.astype(numpy.uint32), pos, has_gauss, cached)


#: words in the key of numpy's MT19937 state
MT_WORDS = 624
#: the most values per epoch a curve may have when the run's width is not given
MAX_EXITS = 1024


def save(path, net, rng, epoch, losses, accs, order=None, next_batch=0, sums=None,
         settings=None):
    """Write a snapshot; ``order``/``next_batch`` mark a position inside ``epoch``.

    ``sums`` is ``(loss_sums, acc_sums, samples)`` of the batches of
    ``epoch`` done so far, so a resumed epoch's record covers all its
    batches; ``settings`` (a dict of plain values) identifies the run.
    """
    require_finite_params(net, 'write the snapshot {}'.format(path))
    bad = nonfinite_optimizer_state(net.optimizer)
    if bad:  # resuming would refuse them: such a snapshot could never be used
        raise InvalidValue('refusing to write the snapshot {}: optimizer state {}{} holds NaN '
                           'or infinite values (training diverged?)'.format(
                               path, ', '.join(bad[:3]), ', ...' if len(bad) > 3 else ''))
    serializer = chainer.serializers.DictionarySerializer()
    serializer['model'].save(net)
    if net.optimizer is not None:
        serializer['optimizer'].save(net.optimizer)
    arrays = dict(serializer.target)
    arrays['epoch'] = numpy.array(epoch)
    arrays['next_batch'] = numpy.array(next_batch)
    arrays['order'] = numpy.array([] if order is None else order, dtype=numpy.int64)
    arrays['losses'] = _table(losses)
    arrays['accs'] = _table(accs)
    if sums is not None:
        arrays['sums/loss'] = numpy.asarray(sums[0], dtype=numpy.float64).reshape(-1)
        arrays['sums/acc'] = numpy.asarray(sums[1], dtype=numpy.float64).reshape(-1)
        arrays['sums/samples'] = numpy.array(sums[2], dtype=numpy.int64)
    arrays['settings'] = numpy.array(json.dumps(settings or {}, sort_keys=True))
    arrays.update(_rng_arrays('rng/', rng.get_state()))
    arrays.update(_rng_arrays('global_rng/', numpy.random.get_state()))
    write_npz(path, lambda f: numpy.savez(f, **arrays))


def _table(rows):
    """Per-epoch, per-exit values as a 2-d float64 array (``(0, 0)`` when empty)."""
    if not len(rows):
        return numpy.zeros((0, 0))
    return numpy.array(rows, dtype=numpy.float64).reshape(len(rows), -1)


class Position(dict):
    """Where a snapshot left training: ``epoch``, ``losses``, ``accs``,
    ``order`` (None at an epoch end), ``next_batch`` and ``sums``."""

    __getattr__ = dict.__getitem__


#: What a setting missing from an older snapshot meant: snapshots written
#: before the number of MPI ranks was recorded came from single processes.
SETTING_DEFAULTS = {'mpi_ranks': 1}


def _mismatch(stored, settings):
    stored = dict({k: v for k, v in SETTING_DEFAULTS.items() if k in settings}, **stored)
    keys = sorted(set(stored) | set(settings))
    return ['{}: the snapshot has {}, this run {}{}'.format(
        k, _shown(stored.get(k)), _shown(settings.get(k)),
        _ranks_hint(stored[k]) if k == 'mpi_ranks' and k in stored else '')
        for k in keys if _key(stored.get(k)) != _key(settings.get(k))]


def _is_source(value):
    """A source file record (``{'file': ..., 'sha256': ...}``, the driver's
    ``network_source``): the same code wherever the file lies."""
    return isinstance(value, dict) and set(value) == {'file', 'sha256'}


def _key(value):
    return value['sha256'] if _is_source(value) else value


def _shown(value):
    if _is_source(value):
        return '{} (sha256 {})'.format(value['file'], value['sha256'][:16])
    return json.dumps(value)


def _ranks_hint(ranks):
    """Per-rank dropout masks and BatchNorm batch statistics depend on the
    number of ranks, so another number would not continue the same run."""
    how = 'one process' if ranks == 1 else 'mpiexec -n {} ... --distributed'.format(ranks)
    return ' (MPI ranks: resume with {}, the number the run was started with)'.format(how)


def load(path, net, rng, settings=None, num_epoch=None, n_samples=None, batchsize=None,
         data=None, width=None):
    """Restore a snapshot into ``net`` (and its optimizer) and ``rng``.

    No code runs while reading, every array is checked against what it
    fills (``branchynet.io.safenpz``), and with ``settings`` a snapshot of a
    run with other settings is refused, naming each that differs.
    ``num_epoch``, ``n_samples`` and ``batchsize`` check the position,
    ``width`` (values per epoch: 1 for main-only training, else the number
    of exits) the curves and sums. Every field is checked before the model,
    the optimizer or a generator is touched.
    ``data``: the snapshot file's bytes when read elsewhere (by MPI rank 0;
    ``path`` then only names it). Returns a :class:`Position`.
    """
    path = os.fspath(path)
    with safenpz.open_npz(path, 'a training snapshot', data=data) as npz:
        if 'epoch' not in npz.files:
            raise safenpz.ModelFileError('{} is not a training snapshot (no epoch recorded)'
                                         .format(path))

        def scalar(key):
            value = safenpz.read_array(npz, key, path, shape=())
            if value.shape != () or value.dtype.kind not in 'iu':
                raise safenpz.ModelFileError('{}: {!r} must be one integer, got {} {}'.format(
                    path, key, value.dtype, value.shape))
            return int(value)
        if settings is not None:
            stored = {}
            if 'settings' in npz.files:
                text = safenpz.read_array(npz, 'settings', path, max_bytes=1 << 20)
                try:
                    stored = json.loads(str(text))
                except ValueError:
                    stored = None
            if not isinstance(stored, dict):
                raise safenpz.ModelFileError('{}: its settings record is unreadable'.format(
                    path))
            differ = _mismatch(stored, settings)
            if differ:
                raise InvalidValue(
                    '{} is a snapshot of a run with other settings ({}); resume with the '
                    "same settings, or remove it (or use another --out) to start afresh"
                    .format(path, '; '.join(differ)))
        epoch, next_batch = scalar('epoch'), scalar('next_batch')
        if epoch < 0 or (num_epoch is not None and epoch > num_epoch):
            raise safenpz.ModelFileError('{} does not fit this training run: it is at epoch '
                                         '{} of a {}-epoch run'.format(path, epoch, num_epoch))
        # every entry's declared size is checked against what this run can need
        # (the curves: one row per epoch done) before it is read
        order = safenpz.read_array(npz, 'order', path, max_bytes=safenpz.MAX_UNSHAPED_BYTES
                                   if n_samples is None else 8 * n_samples)
        curve_bytes = min(8 * max(epoch, 1) * (width or MAX_EXITS), safenpz.MAX_UNSHAPED_BYTES)
        losses = safenpz.read_array(npz, 'losses', path, max_bytes=curve_bytes)
        accs = safenpz.read_array(npz, 'accs', path, max_bytes=curve_bytes)
        n_batches = None if n_samples is None or not batchsize else \
            (n_samples + batchsize - 1) // batchsize
        problems = []
        if losses.ndim != 2 or len(losses) != epoch or accs.shape != losses.shape:
            problems.append('its curves have {} and {} rows for {} epochs'.format(
                losses.shape, accs.shape, epoch))
        if len(order):
            expected = len(order) if n_samples is None else n_samples
            if order.dtype.kind not in 'iu' or order.ndim != 1 or len(order) != expected or \
                    not numpy.array_equal(numpy.sort(order), numpy.arange(expected)):
                problems.append('its batch order ({} {}) is not a permutation of the {} '
                                'training samples'.format(order.dtype, order.shape, expected))
            if next_batch < 0 or (n_batches is not None and next_batch > n_batches):
                problems.append('its next batch {} is outside 0..{}'.format(
                    next_batch, n_batches))
        problems += _curve_problems(losses, accs, width)
        sums = None
        if 'sums/loss' in npz.files and len(order):
            sums = (safenpz.read_array(npz, 'sums/loss', path, max_bytes=8 * (width or MAX_EXITS)),
                    safenpz.read_array(npz, 'sums/acc', path, max_bytes=8 * (width or MAX_EXITS)),
                    scalar('sums/samples'))
            problems += _sums_problems(sums, width, n_samples)
        if problems:
            raise safenpz.ModelFileError('{} does not fit this training run: {}'.format(
                path, '; '.join(problems)))
        rng_state = _rng_state(npz, 'rng/', path)
        global_state = _rng_state(npz, 'global_rng/', path)
        _check_optimizer_state(npz, path, net)
        safenpz.load_into(npz, net, path, path='model/')
        if any(k.startswith('optimizer/') for k in npz.files):
            net.ensure_optimizer()
            # strict=False: parameters never updated yet (the heads during main-only
            # training) have no optimizer state to restore
            safenpz.load_into(npz, net.optimizer, path, path='optimizer/', strict=False)
        rng.set_state(rng_state)
        numpy.random.set_state(global_state)
        return Position(epoch=epoch, losses=losses.tolist(), accs=accs.tolist(),
                        order=order if len(order) else None, next_batch=next_batch,
                        sums=sums)


def _curve_problems(losses, accs, width):
    """Curves are float tables; NaN marks an exit that got no samples, but
    infinite losses or accuracies outside [0, 1] are no training record."""
    if losses.dtype.kind != 'f' or accs.dtype.kind != 'f':
        return ['its curves are {} and {}, not numbers'.format(losses.dtype, accs.dtype)]
    if numpy.isinf(losses).any() or numpy.isinf(accs).any() or \
            (accs[~numpy.isnan(accs)] < 0).any() or (accs[~numpy.isnan(accs)] > 1).any():
        return ['its curves hold infinite losses or accuracies outside [0, 1]']
    if width is not None and losses.ndim == 2 and len(losses) and losses.shape[1] != width:
        return ['its curves have {} values per epoch; this run records {}'.format(
            losses.shape[1], width)]
    return []


def _sums_problems(sums, width, n_samples):
    loss, acc, samples = sums
    problems = []
    if loss.dtype.kind != 'f' or acc.dtype.kind != 'f' or loss.shape != acc.shape or \
            loss.ndim != 1 or (width is not None and len(loss) != width) or \
            numpy.isinf(loss).any() or numpy.isinf(acc).any():
        problems.append('its sums of the epoch so far are {} {} and {} {} (expected {} '
                        'values, none infinite)'.format(loss.dtype, loss.shape, acc.dtype,
                                                        acc.shape, width or 'matching'))
    if samples < 0 or (n_samples is not None and samples > n_samples):
        problems.append("its 'sums/samples' is {}, outside 0..{}".format(samples, n_samples))
    return problems


def _check_optimizer_state(npz, path, net):
    """Every optimizer entry of a parameter (Adam's ``m`` and ``v``, SGD's
    momentum ``v``) must have that parameter's shape and dtype, and the step
    counters (``.../t``) one number, checked from the ``.npy`` headers before
    any is read: a 1 GiB moment never loads, and a moment of another shape is
    refused here, not by a broadcast error at the first update. Step counters
    and Adam's second moments (``.../v``; with MomentumSGD, ``v`` is the
    signed momentum) must be >= 0: others give NaN weights at the first
    update."""
    params = dict(net.namedparams())
    for key in npz.files:
        if not key.startswith('optimizer/'):
            continue
        param, leaf = key[len('optimizer'):].rsplit('/', 1)
        if leaf in ('t', 'epoch'):
            expected = dict(shape=())
        elif param in params:
            shape, dtype = _param_header(npz, path, param, params[param])
            declared, stored = safenpz.entry_header(npz, key, path)
            if declared != shape or stored != dtype:
                raise safenpz.ModelFileError(
                    '{}: {!r} is {} {}, but parameter {} is {} {}: optimizer state '
                    'of another network?'.format(path, key, stored, declared, param.lstrip('/'),
                                                 dtype, shape))
            if leaf != 'v' or getattr(net, 'opt', 'Adam') != 'Adam':
                continue  # only Adam's v is a second moment (SGD's is a signed momentum)
            expected = dict(shape=shape)
        else:
            continue  # no parameter of this network: never read
        value = safenpz.read_array(npz, key, path, **expected)
        if value.dtype.kind in 'biuf' and value.size and not (value >= 0).all():
            raise safenpz.ModelFileError('{}: {!r} holds negative values; expected a step '
                                         'count or second moment >= 0'.format(path, key))


def _param_header(npz, path, name, param):
    """``(shape, dtype)`` of parameter ``name``: its own, or where it is not
    initialised yet (a layer of input size None), its ``model/`` entry's
    header, at most ``safenpz.MAX_UNSHAPED_BYTES``."""
    if param.array is not None:
        return tuple(param.array.shape), param.array.dtype
    key = 'model' + name
    shape, dtype = safenpz.entry_header(npz, key, path)
    if safenpz.declared_bytes(shape, dtype) > safenpz.MAX_UNSHAPED_BYTES:
        raise safenpz.ModelFileError('{}: entry {!r} declares {} {}, more than the {:,} bytes '
                                     'a layer may have'.format(path, key, dtype, shape,
                                                               safenpz.MAX_UNSHAPED_BYTES))
    return shape, dtype


@contextlib.contextmanager
def stop_requests():
    """Turn SIGINT/SIGTERM into a flag the training loop checks between batches.

    Yields a dict whose ``'signal'`` entry is set when a signal arrives; a
    second signal falls through to the default behaviour.
    """
    flag = {'signal': None}
    previous = {}

    def handler(signum, frame):
        flag['signal'] = signum
        signal.signal(signum, previous[signum])

    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: no handlers, no flag
        previous = {}
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def exists(path):
    return path is not None and os.path.exists(path)
