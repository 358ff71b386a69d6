"""Reading npz weight files without running code, checked against the model.

Chainer 7's ``serializers.load_npz`` opens files with
``numpy.load(allow_pickle=True)``: an npz holding an object array, or a
pickle named ``.npz``, would run code while loading. Every npz the project
reads goes through :func:`open_npz` (``allow_pickle=False``) and
:class:`CheckedDeserializer`, which refuses an array whose shape or dtype
differs from the parameter or persistent value it fills, or that holds NaN
or infinite values, and names the file and the entry.
"""
import io
import os
import zipfile
import zlib

import chainer
import numpy

from branchynet.validation import InvalidValue


class ModelFileError(InvalidValue):
    """An npz file that cannot be loaded into the model; the message names it."""


# what numpy and zipfile raise on damaged or foreign files
READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


def open_npz(path, what='an npz file', data=None):
    """``numpy.load(path, allow_pickle=False)`` as an ``NpzFile``, or a
    ``ModelFileError`` naming ``path`` and what was expected.

    ``data``: the file's bytes, read elsewhere (e.g. by another MPI rank);
    they are loaded instead of ``path``, which only names them in messages.
    """
    path = os.fspath(path)
    if data is None and os.path.isdir(path):
        raise ModelFileError('{} is a folder; expected {}'.format(path, what))
    if data is None and not os.path.exists(path):
        raise ModelFileError('{} does not exist; expected {}'.format(path, what))
    try:
        npz = numpy.load(path if data is None else io.BytesIO(data), allow_pickle=False)
    except READ_ERRORS as e:
        if 'allow_pickle' in str(e):  # numpy takes anything not zip or .npy for a pickle
            raise ModelFileError('{} is not {}: it is not an npz archive (a pickle or '
                                 'other data; pickles are refused because loading them '
                                 'would run code)'.format(path, what)) from e
        raise ModelFileError('{} is not {} ({}: {})'.format(
            path, what, type(e).__name__, _short(e))) from e
    if not isinstance(npz, numpy.lib.npyio.NpzFile):
        raise ModelFileError('{} holds a single array (.npy), not {}'.format(path, what))
    return npz


def entry_header(npz, key, source):
    """``(shape, dtype)`` of entry ``key`` from its ``.npy`` header alone:
    nothing else of the entry is read or decompressed, so a declared shape can
    be checked before any memory is spent on it. Object arrays, and entries
    that are not ``.npy`` data, give a ``ModelFileError``."""
    if key not in npz.files:
        raise ModelFileError('{} has no entry {!r}'.format(source, key))
    names = npz.zip.NameToInfo
    member = key + '.npy' if key + '.npy' in names else key
    try:
        with npz.zip.open(member) as f:
            version = numpy.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = numpy.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = numpy.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError('.npy format version {} is not supported'.format(version))
    except READ_ERRORS as e:
        raise ModelFileError('{}: entry {!r} is not a readable array (truncated or damaged '
                             'file?): {}: {}'.format(source, key, type(e).__name__,
                                                     _short(e))) from e
    if dtype.hasobject:
        raise ModelFileError('{}: entry {!r} is an object array (pickled Python objects), '
                             'which is refused because loading it would run code'.format(
                                 source, key))
    stored = npz.zip.getinfo(member).file_size
    if declared_bytes(shape, dtype) > stored:
        raise ModelFileError('{}: entry {!r} declares {} {} ({:,} bytes) but holds {:,} bytes '
                             '(a damaged or forged file)'.format(
                                 source, key, dtype, tuple(shape),
                                 declared_bytes(shape, dtype), stored))
    return tuple(shape), dtype


def declared_bytes(shape, dtype):
    """Bytes an entry of ``shape`` and ``dtype`` takes once read."""
    count = 1
    for n in shape:
        count *= int(n)
    return count * dtype.itemsize


def read_array(npz, key, source, shape=None, max_bytes=None):
    """``npz[key]`` after its header is checked: its shape must be ``shape``
    (when given) and its size at most ``max_bytes`` (when given), so a
    declared 3 GiB entry is refused before it is decompressed. Object arrays
    and damaged members give a ``ModelFileError``."""
    declared, dtype = entry_header(npz, key, source)
    if shape is not None and declared != tuple(shape):
        raise ModelFileError('{}: entry {!r} has shape {}; expected {}'.format(
            source, key, declared, tuple(shape)))
    size = declared_bytes(declared, dtype)
    if max_bytes is not None and size > max_bytes:
        raise ModelFileError('{}: entry {!r} declares {} {} ({:,} bytes), more than the '
                             '{:,} bytes it can need here'.format(source, key, dtype, declared,
                                                                 size, max_bytes))
    try:
        return npz[key]
    except ValueError as e:
        raise ModelFileError('{}: entry {!r} is unreadable: {}'.format(
            source, key, _short(e))) from e
    except READ_ERRORS as e:
        raise ModelFileError('{}: entry {!r} is unreadable (truncated or damaged file?): '
                             '{}: {}'.format(source, key, type(e).__name__, _short(e))) from e
    except MemoryError:
        raise ModelFileError('{}: entry {!r} declares {:,} bytes, more than this machine '
                             'has'.format(source, key, size)) from None


def _short(e, limit=200):
    text = str(e)
    return text if len(text) <= limit else text[:limit] + '...'


#: The most an entry filling an uninitialised parameter (no shape to check it
#: against) may declare: far above any layer of the networks here.
MAX_UNSHAPED_BYTES = 1 << 30


class CheckedDeserializer(chainer.serializers.NpzDeserializer):
    """Chainer's npz deserializer with every value checked before it is copied.

    An array must have exactly the shape and dtype of the parameter or
    persistent it fills (no broadcasting, no casting) and, if floating,
    finite values; a scalar (a persistent such as BatchNorm's ``N`` or
    Adam's ``t``) must be a 0-d number. ``used`` collects the keys read,
    so the caller can refuse entries the model has no place for. With
    ``dry_run`` nothing is copied: a first pass checks the whole file, so a
    bad entry leaves the model as it was.
    """

    def __init__(self, npz, path='', strict=True, source='npz file', used=None,
                 dry_run=False):
        super().__init__(npz, path=path, strict=strict)
        self.source = source
        self.used = set() if used is None else used
        self.dry_run = dry_run

    def __getitem__(self, key):
        return CheckedDeserializer(self.npz, self.path + key.strip('/') + '/',
                                   strict=self.strict, source=self.source, used=self.used,
                                   dry_run=self.dry_run)

    def __call__(self, key, value):
        full = self.path + key.lstrip('/')
        if full not in self.npz.files:
            if not self.strict:
                return value
            raise ModelFileError('{} has no entry {!r}: it was not written for this '
                                 'network (or by save_npz)'.format(self.source, full))
        # shape and dtype checked from the header, before anything is decompressed
        declared, dtype = entry_header(self.npz, full, self.source)
        if dtype.kind not in 'biuf':
            raise ModelFileError('{}: entry {!r} has dtype {}; expected numbers'.format(
                self.source, full, dtype))
        if hasattr(value, 'shape') and hasattr(value, 'dtype'):
            if declared != tuple(value.shape) or dtype != value.dtype:
                raise ModelFileError(
                    '{}: entry {!r} is {} {}, but this network expects {} {} (a file '
                    'for another network or configuration?)'.format(
                        self.source, full, dtype, declared, value.dtype, tuple(value.shape)))
        elif value is not None and declared != ():
            raise ModelFileError('{}: entry {!r} has shape {}; expected a single number'
                                 .format(self.source, full, declared))
        data = read_array(self.npz, full, self.source, max_bytes=MAX_UNSHAPED_BYTES
                          if value is None else None)
        self.used.add(full)
        if data.dtype.kind == 'f' and not numpy.isfinite(data).all():
            raise ModelFileError('{}: entry {!r} contains NaN or infinite values'.format(
                self.source, full))
        if value is None:  # an uninitialised parameter takes the stored shape
            return value if self.dry_run else data
        if self.dry_run:
            return value
        return super().__call__(key, value)


def load_into(npz, target, source, path='', strict=True, ignore=()):
    """Fill ``target`` (a link or optimizer) from ``npz`` entries under ``path``.

    With ``strict``, entries under ``path`` that ``target`` has no place for
    (a file for a larger network) are refused too, except those named in
    ``ignore`` (read by the caller). The whole file is checked before
    anything is copied.
    """
    for dry_run in (True, False):
        deserializer = CheckedDeserializer(npz, path=path, strict=strict, source=source,
                                           dry_run=dry_run)
        try:
            deserializer.load(target)
        except ModelFileError:
            raise
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise ModelFileError('{} does not fit this network: {}: {}'.format(
                source, type(e).__name__, _short(e))) from e
        extra = sorted(k for k in npz.files if k.startswith(path) and k not in
                       deserializer.used and k not in ignore)
        if strict and extra:
            raise ModelFileError('{} has entries this network lacks ({}{}): it was written '
                                 'for another network'.format(
                                     source, ', '.join(extra[:3]),
                                     ', ...' if len(extra) > 3 else ''))
    return target
