"""The MNIST cache: a planted .gz is never decompressed past the raw file's
size, bad cache files are deleted once, not checked again at every run."""
import gzip
import os

import pytest

from datasets import _fetch, mnist

NAME = 'train-labels-idx1-ubyte'


@pytest.fixture
def inflated(monkeypatch):
    """Bytes decompressed from any .gz (``gzip.GzipFile.read``)."""
    total = {'bytes': 0}
    real = gzip.GzipFile.read

    def read(self, *args):
        data = real(self, *args)
        total['bytes'] += len(data)
        return data
    monkeypatch.setattr(gzip.GzipFile, 'read', read)
    return total


def test_a_planted_gz_bomb_is_capped_and_deleted(tmp_path, inflated):
    gz = tmp_path / (NAME + '.gz')
    with gzip.open(str(gz), 'wb') as f:
        for _ in range(32):
            f.write(bytes(1 << 20))  # 32 MiB of zeros, about 32 kB on disk
    assert gz.stat().st_size < mnist.RAW_BYTES[NAME]
    assert NAME not in mnist._cached_ok(str(tmp_path))
    assert inflated['bytes'] <= mnist.RAW_BYTES[NAME] + (1 << 20)
    assert not gz.exists() and not (tmp_path / NAME).exists()


def test_a_gz_of_the_wrong_content_is_deleted_not_unpacked_at_every_check(tmp_path, inflated):
    gz = tmp_path / (NAME + '.gz')
    with gzip.open(str(gz), 'wb') as f:
        f.write(b'\x01' * mnist.RAW_BYTES[NAME])
    mnist._cached_ok(str(tmp_path))
    first = inflated['bytes']
    mnist._cached_ok(str(tmp_path))
    assert not gz.exists() and inflated['bytes'] == first


def test_a_raw_file_of_the_wrong_size_is_deleted_unhashed(tmp_path, monkeypatch):
    raw = tmp_path / NAME
    with open(str(raw), 'wb') as f:
        f.truncate(1 << 30)  # sparse: 1 GiB named like the 60 kB labels file
    hashed = []
    monkeypatch.setattr(mnist, 'file_digest', lambda path, *a: hashed.append(path) or '')
    assert NAME not in mnist._cached_ok(str(tmp_path))
    assert not raw.exists() and str(raw) not in hashed


def test_a_download_larger_than_expected_stops_and_leaves_nothing(tmp_path):
    src = tmp_path / 'big'
    src.write_bytes(bytes(3 << 20))
    dest = tmp_path / 'got'
    with pytest.raises(_fetch.ChecksumError, match='larger than the'):
        _fetch.download(src.as_uri(), str(dest), max_bytes=1 << 20, progress=False)
    assert not dest.exists()
    assert not [n for n in os.listdir(str(tmp_path)) if n not in ('big',)]
