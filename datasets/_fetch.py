"""Downloading with checksums, retries and atomic writes."""
import hashlib
import os
import shutil
import time
import urllib.request

from branchynet.io.fileio import atomic_write
from branchynet.progress import Progress


def file_digest(path, algorithm='md5'):
    h = hashlib.new(algorithm)
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


class ChecksumError(ValueError):
    pass


def download(url, dest, digest=None, algorithm='md5', retries=3, timeout=30,
             progress=True, max_bytes=None):
    """Download ``url`` to ``dest`` atomically; verify ``digest`` if given;
    stop with ``ChecksumError`` past ``max_bytes`` when given.

    A failed or corrupt download leaves nothing at ``dest``. Network errors
    are retried ``retries`` times with a short back-off; a checksum mismatch
    is not retried (the source is serving something else).
    """
    last_error = None
    for attempt in range(1, retries + 1):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, \
                    atomic_write(dest) as out:
                total = int(response.headers.get('Content-Length') or 0)
                h = hashlib.new(algorithm)
                done = 0
                bar = Progress.auto(round(total / 1e6, 1), '  ' + os.path.basename(dest), 'MB',
                                    None if progress else False)
                for block in iter(lambda: response.read(1 << 20), b''):
                    out.write(block)
                    h.update(block)
                    bar.update(len(block) / 1e6)
                    done += len(block)
                    if max_bytes is not None and done > max_bytes:
                        raise ChecksumError('{} from {} is larger than the {:,} bytes '
                                            'expected'.format(os.path.basename(dest), url,
                                                              max_bytes))
                bar.close()
                if digest is not None and h.hexdigest() != digest:
                    raise ChecksumError('{} from {} has {} {}, expected {}'.format(
                        os.path.basename(dest), url, algorithm, h.hexdigest(), digest))
            return dest
        except ChecksumError:
            raise
        except OSError as e:  # URLError, timeouts, connection resets
            last_error = e
            reason = getattr(e, 'reason', e)
            if 'Name or service not known' in str(reason) or attempt == retries:
                break  # no DNS: retrying cannot help
            time.sleep(min(2 ** attempt, 10))
    raise OSError('could not download {}: {}'.format(url, getattr(last_error, 'reason',
                                                                   last_error)))


def copy_verified(src, dest, digest, algorithm='md5'):
    """Copy ``src`` to ``dest`` atomically if its checksum matches."""
    actual = file_digest(src, algorithm)
    if actual != digest:
        raise ChecksumError('{} has {} {}, expected {}'.format(src, algorithm, actual,
                                                                digest))
    with open(src, 'rb') as f, atomic_write(dest) as out:
        shutil.copyfileobj(f, out)
    return dest
