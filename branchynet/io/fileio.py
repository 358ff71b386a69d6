"""Atomic file writing and model (de)serialisation.

Every file the project writes goes through ``atomic_write``: data goes to a
temporary file in the target's folder, is flushed to disk, and replaces the
target in one ``os.replace``. A crash leaves the old file or the new one,
never a truncated one.
"""
import contextlib
import fcntl
import io
import json
import os
import pickle
import re
import socket
import stat
import tempfile
import time

import chainer
import numpy

from branchynet.validation import InvalidValue, require_finite_params


#: Marks the temporaries of ``atomic_path`` (with the writer's process id and
#: mkstemp's 8 random characters), so no user file is ever taken for one.
TEMP_TAG = 'branchynet-tmp-'
_TEMPORARY = re.compile(r'^\..*\.' + re.escape(TEMP_TAG) + r'(\d+)-[a-z0-9_]{8}\.part(\.\w+)?$')


def _default_mode():
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_write(path, mode='wb'):
    """Open a temporary file that replaces ``path`` only if the block succeeds
    (its contents synced to disk before the rename; see ``atomic_path``)."""
    with atomic_path(path) as tmp:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def write_npz(path, write):
    """``write(file)`` (``numpy.savez``-like) into an in-memory buffer, then the
    bytes to ``path`` with ``atomic_write``: a full disk then fails in one plain
    write, never inside an open ``ZipFile`` (whose later clean-up would print
    an "Exception ignored ... closed file" traceback)."""
    buffer = io.BytesIO()
    write(buffer)
    with atomic_write(path) as f:
        f.write(buffer.getbuffer())


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
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.{}.{}{}-'.format(base, TEMP_TAG, os.getpid()),
                               suffix='.part' + ext)
    os.close(fd)
    os.chmod(tmp, _default_mode())
    try:
        yield tmp
        os.replace(tmp, path)
        fsync_folder(folder)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None and e.errno is not None:
            e.filename = path  # a failed write (a full disk) names the file it was for
        raise


def fsync_folder(folder):
    """Flush a folder's entries (a rename) to disk, where the system allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems do not sync folders
        pass
    finally:
        os.close(fd)


#: The largest small JSON record ``read_json`` reads (the caches' records of
#: kernel and step times are a few kB).
MAX_RECORD_BYTES = 4 * 2 ** 20


def read_regular(path, max_bytes):
    """The bytes of ``path`` when it is a regular file (symbolic links
    followed) of at most ``max_bytes``. A FIFO or a device (``/dev/zero``
    through a link too) is refused with ``ValueError`` before anything is read,
    and opening never blocks; a larger file is refused unread. ``OSError``
    as ``open`` raises it (``FileNotFoundError`` when there is none)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the open
    with os.fdopen(fd, 'rb') as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError('not a regular file')
        if info.st_size > max_bytes:
            raise ValueError('{:,} bytes, more than the {:,} it may have'.format(
                info.st_size, max_bytes))
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:  # it grew meanwhile
        raise ValueError('more than the {:,} bytes it may have'.format(max_bytes))
    return data


def read_json(path, max_bytes=MAX_RECORD_BYTES):
    """The JSON value in ``path``, read with ``read_regular``: a file that is
    not regular, too large, not UTF-8 JSON or nested too deeply for Python's
    parser gives ``ValueError`` saying which; ``OSError`` as ``open``."""
    data = read_regular(path, max_bytes)
    try:
        return json.loads(data.decode('utf-8'))
    except RecursionError:
        raise ValueError('JSON nested too deeply') from None


def read_record(path, what, then, prefix=''):
    """The JSON object in ``path`` (a cache's record), ``{}`` when there is no
    file; a file that is no such object (damaged, not a regular file, over
    ``MAX_RECORD_BYTES``, nested too deeply) also gives ``{}``, with a
    RuntimeWarning "``prefix path`` is not a record of ``what`` (why); ``then``"."""
    import warnings
    try:
        record = read_json(path)
        if not isinstance(record, dict):
            raise ValueError('not a JSON object')
        return record
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        warnings.warn('{}{} is not a record of {} ({}); {}'.format(prefix, path, what, e, then),
                      RuntimeWarning)
        return {}


def is_temporary(name):
    """Whether ``name`` is a temporary of ``atomic_write``/``atomic_path``."""
    return _TEMPORARY.match(name) is not None


def _writer_alive(name):
    """Whether the process that made the temporary ``name`` still runs here."""
    pid = int(_TEMPORARY.match(name).group(1))
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):
        return True
    return True


def remove_stale_temporaries(folder):
    """Delete temporaries left in ``folder`` by a killed writer; returns their names.

    Only this project's temporaries (``is_temporary``) whose writing process
    no longer runs are deleted; every other file is left alone.
    """
    removed = []
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for name in names:
        full = os.path.join(folder, name)
        if is_temporary(name) and not _writer_alive(name) and os.path.isfile(full) and \
                not os.path.islink(full):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(full)
                removed.append(name)
    return removed


class RunLocked(InvalidValue):
    """Another live run holds the output folder."""


class RunLock:
    """An exclusive lock on an output folder, held for one driver run.

    The lock is ``fcntl.flock`` on the file ``.branchynet.lock``, held while
    the run lasts and released by the system when the process ends, however
    it ends; taking it is one atomic call, so two runs can never both hold
    it. The file records the holder's host and process id for the message a
    refused run prints. A record naming a live process that holds no flock
    (a run of an older version, or on another host, which cannot be checked)
    is respected too; one naming a dead process on this host is taken over.
    """
    NAME = '.branchynet.lock'

    def __init__(self, folder):
        self.folder = os.fspath(folder)
        self.path = os.path.join(self.folder, self.NAME)
        self.held = False
        self._fd = None

    @staticmethod
    def _record(fd):
        """The holder record in the open lock file, or None when unreadable."""
        try:
            data = os.pread(fd, 4096, 0)
            holder = json.loads(data.decode('utf-8')) if data else None
        except (OSError, ValueError):
            return None
        return holder if isinstance(holder, dict) else None

    @staticmethod
    def _alive(holder):
        """Whether the recorded holder may still run (a live or unknown process)."""
        if holder is None:
            return False
        if holder.get('host') != socket.gethostname():
            return True
        try:
            pid = int(holder['pid'])
            if pid == os.getpid():
                return False
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except (PermissionError, KeyError, ValueError, TypeError, OverflowError):
            return True
        return True

    def _refuse(self, holder):
        raise RunLocked(
            'another run is using {} ({}); wait for it to finish or choose another --out '
            '(if no run is active, delete {})'.format(
                self.folder, 'process {} on {}, started {}'.format(
                    holder.get('pid'), holder.get('host'), holder.get('started'))
                if holder else 'holder unknown', self.path))

    def acquire(self):
        os.makedirs(self.folder, exist_ok=True)
        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._record(fd)
                os.close(fd)
                self._refuse(holder)
            except BaseException:
                os.close(fd)
                raise
            try:  # the holder before us may have released (deleted) the file we locked
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            holder = self._record(fd) if same else None
            if not same or self._alive(holder):
                os.close(fd)
                if same:
                    self._refuse(holder)
                continue
            record = json.dumps({'pid': os.getpid(), 'host': socket.gethostname(),
                                 'started': time.strftime('%Y-%m-%d %H:%M:%S')})
            os.ftruncate(fd, 0)
            os.pwrite(fd, record.encode('utf-8'), 0)
            self._fd, self.held = fd, True
            return self
        raise RunLocked('could not take the lock {}'.format(self.path))

    def release(self):
        if self.held:
            # deleted while still locked: a run that opened this file meanwhile
            # sees it is gone once it gets the flock, and takes a new one
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            os.close(self._fd)
            self._fd, self.held = None, False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False


#: npz entries holding the exit rule (not weights): the confidence measure's
#: name and, when set, the thresholds of the early exits.
EXIT_RULE_KEYS = ('_exit_rule/measure', '_exit_rule/thresholds')


def save_npz(path, net):
    """Save the weights (and BatchNorm statistics) of ``net`` as npz, atomically,
    with its exit rule (confidence measure and thresholds, when set).

    This is the recommended way to share a model: loading it runs no code.
    A model with NaN or infinite weights is refused, so it never replaces a
    good file.
    """
    require_finite_params(net, 'write {}'.format(path))
    serializer = chainer.serializers.DictionarySerializer()
    serializer.save(net)
    entries = dict(serializer.target)
    if hasattr(net, 'confidence'):
        entries[EXIT_RULE_KEYS[0]] = numpy.array(net.confidence)
        if getattr(net, 'thresholdExits', None) is not None:
            entries[EXIT_RULE_KEYS[1]] = numpy.array(net.thresholdExits, numpy.float64)
    write_npz(path, lambda f: numpy.savez_compressed(f, **entries))


def load_npz(path, net):
    """Load weights saved by :func:`save_npz` into ``net`` (built by get_network()),
    and the exit rule when the file has one (files written before it was
    saved load as before, leaving the model's thresholds as they are).

    No code runs (``allow_pickle=False``), and every array must match the
    shape and dtype of what it fills and be finite (``branchynet.io.safenpz``).
    """
    from branchynet.io import safenpz
    path = os.fspath(path)
    with safenpz.open_npz(path, 'a BranchyNet weights file (written by save_npz)') as npz:
        rule = [k for k in EXIT_RULE_KEYS if k in npz.files]
        measure, thresholds = _exit_rule(npz, path, net) if rule else (None, None)
        safenpz.load_into(npz, net, path, ignore=rule)
    if rule:
        net.thresholdExits = None
        net.confidence = measure
        net.thresholdExits = thresholds
    return net


def _exit_rule(npz, path, net):
    """``(measure, thresholds)`` stored by ``save_npz``, checked against ``net``."""
    from branchynet.io import safenpz
    from branchynet.measures import confidence
    from branchynet.validation import InputError, validate_thresholds
    if EXIT_RULE_KEYS[0] not in npz.files:
        raise safenpz.ModelFileError('{} has thresholds but no confidence measure ({})'.format(
            path, EXIT_RULE_KEYS[0]))
    # both bounded before they are read: a measure name is a short string,
    # and there is one threshold per early exit
    longest = max(len(name) for name in confidence.MEASURES)
    measure = safenpz.read_array(npz, EXIT_RULE_KEYS[0], path,
                                 max_bytes=numpy.dtype('U{}'.format(longest)).itemsize)
    if measure.dtype.kind != 'U' or measure.shape != () or \
            str(measure) not in confidence.MEASURES:
        raise safenpz.ModelFileError('{}: entry {!r} must name a confidence measure ({}), '
                                     'got {!r}'.format(path, EXIT_RULE_KEYS[0],
                                                       ', '.join(confidence.MEASURES),
                                                       measure.tolist()))
    if EXIT_RULE_KEYS[1] not in npz.files:
        return str(measure), None
    shape, _ = safenpz.entry_header(npz, EXIT_RULE_KEYS[1], path)
    if shape != (net.numexits() - 1,):
        raise safenpz.ModelFileError('{}: its thresholds do not fit this network: entry {!r} '
                                     'has shape {}; expected ({},), one per early exit'.format(
                                         path, EXIT_RULE_KEYS[1], shape, net.numexits() - 1))
    thresholds = safenpz.read_array(npz, EXIT_RULE_KEYS[1], path)
    if thresholds.dtype.kind != 'f' or thresholds.ndim != 1:
        raise safenpz.ModelFileError('{}: entry {!r} must be a list of numbers, got {} {}'
                                     .format(path, EXIT_RULE_KEYS[1], thresholds.dtype,
                                             thresholds.shape))
    try:
        thresholds = validate_thresholds(thresholds.tolist(), net.numexits() - 1,
                                         upper=confidence.get_measure(str(measure)).upper)
    except InputError as e:
        raise safenpz.ModelFileError('{}: its thresholds do not fit this network: {}'.format(
            path, e)) from e
    return str(measure), thresholds


def save_dill(path, net):
    """Pickle the whole model with dill, as the original project did (``.bn``).

    A model on a GPU is moved to the CPU for the dump (as the original did
    before dumping), so the file loads on machines without CuPy, and is moved
    back to its device afterwards. A model with NaN or infinite weights is
    refused, so it never replaces a good file.
    """
    import dill
    require_finite_params(net, 'write {}'.format(path))
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
    if trust is not True:  # exactly True: trust='no' is truthy but means no
        raise PermissionError(
            'loading {} would run code stored in it (dill/pickle); pass trust=True '
            'only for files you trust, or share weights as .npz and use load_npz'
            '{}'.format(path, '' if trust is False else ' (got trust={!r})'.format(trust)))
    import dill
    if os.path.isdir(path):
        raise InvalidValue('{} is a folder; expected a .bn model file written by '
                           'save_dill'.format(path))
    if not os.path.exists(path):
        raise FileNotFoundError('model file {} does not exist'.format(path))
    try:
        with open(path, 'rb') as f:
            return dill.load(f)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError,
            IndexError, TypeError, ValueError) as e:
        raise InvalidValue('{} is not a readable BranchyNet model file (truncated or '
                           'foreign?): {}: {}'.format(path, type(e).__name__, e)) from e
