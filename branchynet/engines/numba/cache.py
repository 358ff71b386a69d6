"""The numba path's on-disk cache and what it trusts.

The generated module lives in ``cache_dir()`` under a name that is a digest
of its source (every size and offset of the network is a literal there) and
of the numba version, and numba caches its machine code beside it: a network
of the same shape (any weights) compiles once, B-LeNet in seconds. The
module is written atomically; a module file with other content is written
again, and cached machine code that numba cannot read back is deleted and
compiled again, each with a ``RuntimeWarning``. numba reads that machine
code with ``pickle``, so the cache is used only when the folder and its
files belong to the current user and nobody else may write them
(``untrusted_cache``); otherwise the code is compiled in memory, with a
warning saying why. The measured kernel times per layer shape live beside it
in ``kernel_choices.json`` (``ChoiceCache``).
"""


from branchynet.engines.numba.layout import require_numba
from branchynet.engines.numba.kernels import processor


class ChoiceCache:
    """Measured kernel times per layer shape and processor, in
    ``kernel_choices.json`` in ``cache_dir()`` (JSON: read without pickle);
    used only where ``untrusted_cache`` accepts the folder."""

    NAME = 'kernel_choices'

    def __init__(self):
        import os
        self.folder = cache_dir()
        self.path = os.path.join(self.folder, self.NAME + '.json')
        self.entries, self.changed = {}, False
        from branchynet.jit import vector_bits
        self.salt = '{}\n{}\n{}\n'.format(require_numba().__version__, processor(), vector_bits())
        with suppress_os_error():
            os.makedirs(self.folder, mode=0o700, exist_ok=True)
        self.usable = untrusted_cache(self.folder, self.NAME) is None
        if self.usable:
            self.entries = self._read()

    def _read(self):
        """The recorded times, or ``{}`` when there are none; a file that is no
        such record (damaged, not a regular file, over ``fileio.MAX_RECORD_BYTES``,
        nested too deeply) gets a warning and is replaced at the next ``save``."""
        from branchynet.io import fileio
        return fileio.read_record(self.path, 'kernel times', 'measuring again',
                                  prefix='numba cache: ')

    def _digest(self, key):
        import hashlib
        return hashlib.sha256((self.salt + key).encode()).hexdigest()[:32]

    def get(self, key, kernels):
        """The times of ``kernels`` measured for ``key``, or None where one is missing."""
        times = self.entries.get(self._digest(key))
        if isinstance(times, dict) and all(isinstance(times.get(k), (int, float))
                                           for k in kernels):
            return times
        return None

    def put(self, key, times):
        self.entries[self._digest(key)] = times
        self.changed = True

    def save(self):
        import json
        if not (self.usable and self.changed):
            return
        from branchynet.io import fileio
        with suppress_os_error():
            with fileio.atomic_write(self.path) as f:
                f.write(json.dumps(self.entries, sort_keys=True).encode())


def suppress_os_error():
    import contextlib
    return contextlib.suppress(OSError)


def write_source(path, source):
    """``path`` holding ``source``: left alone when it does, else written
    atomically (a temporary file renamed over it; a file with other content,
    e.g. cut short, is replaced with a warning). Rewriting it changes its
    modification time, which makes numba discard its cached machine code."""
    import warnings
    from branchynet.io import fileio
    try:
        with open(path, 'rb') as f:
            current = f.read()
    except FileNotFoundError:
        current = None
    except OSError:
        current = b''
    if current == source.encode():
        return
    if current is not None:
        warnings.warn('numba cache: {} did not hold the generated source; written '
                      'again'.format(path), RuntimeWarning)
    with fileio.atomic_write(path) as f:
        f.write(source.encode())


def cached_files(folder, module_name):
    """numba's cache files (index ``.nbi``, data ``.nbc``) of the generated
    module: numba keeps them in ``__pycache__`` beside the source, or under
    ``$NUMBA_CACHE_DIR`` when that is set."""
    import glob
    import os
    found = []
    roots = [os.path.join(folder, '__pycache__')]
    if os.environ.get('NUMBA_CACHE_DIR'):
        roots.append(os.environ['NUMBA_CACHE_DIR'])
    for root in roots:
        for ext in ('nbi', 'nbc'):
            found += glob.glob(os.path.join(glob.escape(root), '**',
                                            glob.escape(module_name) + '.*.' + ext),
                               recursive=True)
    return found


def _current_uid():
    import os
    return os.getuid()


def untrusted_cache(folder, module_name):
    """Why the numba cache in ``folder`` must not be used, or None when it may.

    numba reads its cached machine code with ``pickle``, and the generated
    module is imported from the folder: whoever can write there can run code
    in this process. So the cache is trusted only when the folder, its
    ``__pycache__`` (and ``$NUMBA_CACHE_DIR`` when set) and this module's
    files in them are not symbolic links, belong to the current user and are
    writable by nobody else (no group or other write bit).
    """
    import os
    import stat
    if not hasattr(os, 'getuid'):  # no owners to check (Windows)
        return None
    if not os.path.isdir(folder):
        return '{} is not a folder that can be created'.format(folder)
    paths = [folder, os.path.join(folder, '__pycache__'),
             os.path.join(folder, module_name + '.py')]
    if os.environ.get('NUMBA_CACHE_DIR'):
        paths.append(os.environ['NUMBA_CACHE_DIR'])
    paths += cached_files(folder, module_name)
    uid = _current_uid()
    for path in paths:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        except OSError as e:
            return 'cannot check {} ({})'.format(path, e.strerror)
        if stat.S_ISLNK(st.st_mode):
            return '{} is a symbolic link'.format(path)
        if st.st_uid != uid:
            return '{} belongs to user id {}, not to the current user ({})'.format(
                path, st.st_uid, uid)
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return '{} is writable by other users (mode {:o}); make it private with ' \
                'chmod go-w'.format(path, stat.S_IMODE(st.st_mode))
    return None


def cache_dir():
    """Where generated modules and numba's cache of them live:
    ``$BRANCHYNET_NUMBA_CACHE``, else ``~/.cache/branchynet/numba`` (the
    training kernels' ``jit.cache_root``)."""
    from branchynet.jit import cache_root
    return cache_root()
