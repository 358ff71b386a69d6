"""Atomic file writing and model (de)serialisation.

Every file the project writes goes through ``atomic_write``: data goes to a
temporary file in the target's folder, is flushed to disk, and replaces the
target in one ``os.replace``. A crash leaves the old file or the new one,
never a truncated one.
"""
import contextlib
import os
import pickle
import tempfile
import zipfile

import chainer
import numpy


def _default_mode():
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_write(path, mode='wb'):
    """Open a temporary file that replaces ``path`` only if the block succeeds."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.' + os.path.basename(path) + '.',
                               suffix='.part')
    os.chmod(tmp, _default_mode())
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path to write by name (for writers that take a path).

    The temporary path keeps ``path``'s extension, so libraries that pick a
    format from the extension (matplotlib, numpy) behave as for ``path``.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    base, ext = os.path.splitext(os.path.basename(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.' + base + '.', suffix='.part' + ext)
    os.close(fd)
    os.chmod(tmp, _default_mode())
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def save_npz(path, net):
    """Save the weights (and BatchNorm statistics) of ``net`` as npz, atomically.

    This is the recommended way to share a model: loading it runs no code.
    """
    with atomic_write(path) as f:
        chainer.serializers.save_npz(f, net)


def load_npz(path, net):
    """Load weights saved by :func:`save_npz` into ``net`` (built by get_network())."""
    try:
        chainer.serializers.load_npz(os.fspath(path), net)
    except (KeyError, ValueError, OSError, EOFError, pickle.UnpicklingError,
            zipfile.BadZipFile) as e:
        raise ValueError('cannot load weights from {}: {} (expected an npz file '
                         'written by save_npz for this network)'.format(path, e)) from e
    return net


def save_dill(path, net):
    """Pickle the whole model with dill, as the original project did (``.bn``).

    A model on a GPU is moved to the CPU for the dump (as the original did
    before dumping), so the file loads on machines without CuPy, and is moved
    back to its device afterwards.
    """
    import dill
    device = getattr(net, 'device', None)
    on_gpu = device is not None and getattr(device, 'xp', numpy) is not numpy
    if on_gpu:
        net.to_cpu()
    try:
        with atomic_write(path) as f:
            dill.dump(net, f)
    finally:
        if on_gpu:
            net.to_device(device)


def load_dill(path, trust=False):
    """Load a dill-pickled model.

    Unpickling runs code stored in the file, so it is refused unless
    ``trust=True``: only load ``.bn`` files you made yourself or trust. Use
    :func:`save_npz`/:func:`load_npz` to share models safely.
    """
    if not trust:
        raise PermissionError(
            'loading {} would run code stored in it (dill/pickle); pass trust=True '
            'only for files you trust, or share weights as .npz and use load_npz'
            .format(path))
    import dill
    try:
        with open(path, 'rb') as f:
            return dill.load(f)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError,
            IndexError, TypeError, ValueError) as e:
        raise ValueError('{} is not a readable BranchyNet model file (truncated or '
                         'foreign?): {}: {}'.format(path, type(e).__name__, e)) from e
