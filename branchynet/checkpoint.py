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
import os
import signal

import chainer
import numpy

from branchynet.fileio import atomic_write


class TrainingInterrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after writing a snapshot."""

    def __init__(self, path):
        super().__init__('training interrupted; snapshot saved to {} (resume with '
                         '--resume)'.format(path))
        self.path = path


def _rng_arrays(prefix, state):
    name, keys, pos, has_gauss, cached = state
    return {prefix + 'keys': keys, prefix + 'pos': numpy.array(pos),
            prefix + 'has_gauss': numpy.array(has_gauss),
            prefix + 'cached': numpy.array(cached)}


def _rng_state(npz, prefix):
    return ('MT19937', npz[prefix + 'keys'], int(npz[prefix + 'pos']),
            int(npz[prefix + 'has_gauss']), float(npz[prefix + 'cached']))


def _curves(rows):
    """Per-epoch, per-exit values as a 2-D float64 array ((0, 0) before the first
    epoch ends: a snapshot taken during the first epoch has no curves yet)."""
    if not len(rows):
        return numpy.zeros((0, 0))
    return numpy.array(rows, dtype=numpy.float64).reshape(len(rows), -1)


def save(path, net, rng, epoch, losses, accs, order=None, next_batch=0):
    """Write a snapshot; ``order``/``next_batch`` mark a position inside ``epoch``."""
    serializer = chainer.serializers.DictionarySerializer()
    serializer['model'].save(net)
    if net.optimizer is not None:
        serializer['optimizer'].save(net.optimizer)
    arrays = dict(serializer.target)
    arrays['epoch'] = numpy.array(epoch)
    arrays['next_batch'] = numpy.array(next_batch)
    arrays['order'] = numpy.array([] if order is None else order, dtype=numpy.int64)
    arrays['losses'] = _curves(losses)
    arrays['accs'] = _curves(accs)
    arrays.update(_rng_arrays('rng/', rng.get_state()))
    arrays.update(_rng_arrays('global_rng/', numpy.random.get_state()))
    with atomic_write(path) as f:
        numpy.savez(f, **arrays)


def load(path, net, rng):
    """Restore a snapshot into ``net`` (and its optimizer) and ``rng``.

    Returns ``(epoch, losses, accs, order, next_batch)``.
    """
    try:
        npz = numpy.load(path)
    except (OSError, ValueError) as e:
        raise ValueError('{} is not a readable training snapshot: {}'.format(path, e)) from e
    with npz:
        if 'epoch' not in npz.files:
            raise ValueError('{} is not a training snapshot (no epoch recorded)'.format(path))
        chainer.serializers.NpzDeserializer(npz, path='model/').load(net)
        if any(k.startswith('optimizer/') for k in npz.files):
            net._ensure_optimizer()
            # strict=False: parameters never updated yet (the heads during main-only
            # training) have no optimizer state to restore
            chainer.serializers.NpzDeserializer(npz, path='optimizer/', strict=False).load(
                net.optimizer)
        rng.set_state(_rng_state(npz, 'rng/'))
        numpy.random.set_state(_rng_state(npz, 'global_rng/'))
        order = npz['order'] if len(npz['order']) else None
        return (int(npz['epoch']), npz['losses'].tolist(), npz['accs'].tolist(), order,
                int(npz['next_batch']))


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
