"""Image folders as a dataset: ``train/<class>/*.jpg|png`` and ``test/<class>/*``.

The source is a folder or a ``.tar``/``.tar.gz`` archive in that layout
(optionally inside one top folder). Labels follow the class order: the
sorted class folder names, or the ``classes`` given (then the folders must
be exactly those). Archive members are read from the archive in memory,
never extracted; absolute paths, ``..`` and links are refused.

The images are decoded once into a cache, ``imagefolder/<name>-<key>.npz``
under the data folder (``datasets.data_dir``): uint8 pixels, int32 labels,
the classes, the seed and the sha256 of the source, all plain arrays, read
back with ``allow_pickle=False`` and written atomically. On reuse the
source's sha256 is computed again; a changed source, another class list or
a damaged cache rebuilds it.

Order: within a split the images are sorted by (class, file name), then put
in the fixed order ``numpy.random.RandomState(SEED).permutation(n)`` with
``SEED = 0``, so the first N samples of a split (what the driver's presets
take) mix every class, and the order does not depend on how an archive was
packed.

Pixels: grayscale images give 1 channel, colour ones 3 (alpha dropped); a
set with both repeats the grayscale images over 3 channels. All images must
have one size. ``get_data`` returns float32 ``(N, C, H, W)`` in [0, 1] (pixels
/ 255) and int32 labels.
"""
import collections
import hashlib
import io
import os
import sys
import tarfile
import time
import zlib

import numpy

from . import data_dir
from branchynet.io import safenpz
from branchynet.io.fileio import atomic_write
from branchynet.progress import Progress
from branchynet.validation import InvalidValue

SPLITS = ('train', 'test')
EXTENSIONS = ('.jpg', '.jpeg', '.png')
#: The seed of the fixed order of each split (see the module docstring).
SEED = 0
#: The cache's layout; a cache of another version is rebuilt.
CACHE_VERSION = 1
ARCHIVE_SUFFIXES = ('.tar', '.tar.gz', '.tgz')
LAYOUT = 'train/<class>/<image> and test/<class>/<image> (.jpg, .jpeg or .png)'
_TAR_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)
_GRAY_MODES = ('1', 'L', 'LA')
_COLOUR_MODES = ('P', 'PA', 'RGB', 'RGBA', 'RGBX', 'CMYK', 'YCbCr')

Decoded = collections.namedtuple(
    'Decoded', 'x_train y_train x_test y_test classes sha256 formats cache')
Decoded.__doc__ = """The decoded split arrays (uint8 ``(N, C, H, W)`` pixels,
int32 labels), the class names in label order, the source's sha256, the
image formats found (e.g. ``('JPEG',)``) and the cache file."""


class _Folder:
    """A folder source: files by relative posix path."""

    def __init__(self, root):
        self.root = root

    def listing(self):
        """``(files, folders)``: relative posix paths, in walk order."""
        files, folders = [], []
        for here, dirs, names in os.walk(self.root):
            dirs.sort()
            rel = os.path.relpath(here, self.root)
            rel = '' if rel == '.' else rel.replace(os.sep, '/') + '/'
            folders += [rel + d for d in dirs]
            files += [rel + n for n in sorted(names)]
        return files, folders

    def read_all(self, names):
        """``(name, bytes)`` for each of ``names``."""
        for name in names:
            with open(os.path.join(self.root, *name.split('/')), 'rb') as f:
                yield name, f.read()

    def sha256(self, names):
        h = hashlib.sha256()
        for name, data in self.read_all(sorted(names)):
            h.update('{}\0{}\0'.format(name, len(data)).encode())
            h.update(data)
        return h.hexdigest()


class _Archive:
    """A tar archive source (any compression tarfile reads); members are read
    in archive order from the archive itself, never written to disk."""

    def __init__(self, path):
        self.path = path

    def _open(self):
        try:
            return tarfile.open(self.path, 'r:*')
        except _TAR_ERRORS as e:
            raise InvalidValue('{} is not a readable tar archive ({}: {}); expected a folder '
                               'or a .tar/.tar.gz archive holding {}'.format(
                                   self.path, type(e).__name__, e, LAYOUT)) from e

    def _members(self, tar):
        try:
            for member in tar:
                name = _member_name(self.path, member.name)
                if member.isdir():
                    yield name, None
                elif member.isfile():
                    yield name, member
                else:
                    raise InvalidValue('{}: member {} is a {}; only plain files and folders '
                                       'are read'.format(self.path, member.name, 'link'
                                                         if member.issym() or member.islnk()
                                                         else 'special file'))
        except _TAR_ERRORS as e:
            raise InvalidValue('{} is not a readable tar archive (truncated or damaged?): '
                               '{}: {}'.format(self.path, type(e).__name__, e)) from e

    def listing(self):
        files, folders = [], []
        with self._open() as tar:
            for name, member in self._members(tar):
                (folders if member is None else files).append(name)
        return files, folders

    def first_file(self):
        """The first plain file member's name, or None (reads no further)."""
        with self._open() as tar:
            for name, member in self._members(tar):
                if member is not None:
                    return name
        return None

    def read_all(self, names):
        wanted = set(names)
        with self._open() as tar:
            for name, member in self._members(tar):
                if member is not None and name in wanted:
                    try:
                        yield name, tar.extractfile(member).read()
                    except _TAR_ERRORS as e:
                        raise InvalidValue('{}: member {} is unreadable (truncated or damaged '
                                           'archive?): {}: {}'.format(
                                               self.path, name, type(e).__name__, e)) from e

    def sha256(self, names=None):
        h = hashlib.sha256()
        with open(self.path, 'rb') as f:
            for block in iter(lambda: f.read(1 << 20), b''):
                h.update(block)
        return h.hexdigest()


def _member_name(archive, name):
    """A member's path without a leading ``./``; absolute paths and ``..`` refused."""
    if name.startswith('/') or '\\' in name or (len(name) > 1 and name[1] == ':'):
        raise InvalidValue('{}: member {!r} has an absolute path; refused (members must be '
                           'relative: {})'.format(archive, name, LAYOUT))
    parts = [p for p in name.split('/') if p not in ('', '.')]
    if '..' in parts:
        raise InvalidValue("{}: member {!r} has '..' in its path; refused".format(archive, name))
    return '/'.join(parts)


def _source(path):
    path = os.fspath(path)
    if os.path.isdir(path):
        return _Folder(path)
    if not os.path.exists(path):
        raise FileNotFoundError('image folder {} does not exist (expected a folder or a '
                                '.tar/.tar.gz archive holding {})'.format(path, LAYOUT))
    return _Archive(path)


def _is_split_path(parts):
    return len(parts) >= 2 and parts[0] in SPLITS


def is_image_folder(path):
    """Whether ``path`` is a folder or tar archive in the image-folder layout:
    a ``train`` or ``test`` folder at its top or inside one top folder (an
    archive is judged by its first file, so the check reads little)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        if any(os.path.isdir(os.path.join(path, s)) for s in SPLITS):
            return True
        subs = [d for d in os.listdir(path) if not d.startswith('.') and
                os.path.isdir(os.path.join(path, d))]
        return len(subs) == 1 and any(os.path.isdir(os.path.join(path, subs[0], s))
                                      for s in SPLITS)
    if not os.path.isfile(path) or not tarfile.is_tarfile(path):
        return False
    try:
        first = _Archive(path).first_file()
    except InvalidValue:
        return False
    parts = (first or '').split('/')
    return _is_split_path(parts) or _is_split_path(parts[1:])


def _top_folder(files):
    """The one top folder every path lies in when none starts with a split, else ''."""
    if any(_is_split_path(f.split('/')) for f in files):
        return ''
    tops = {f.split('/')[0] for f in files if '/' in f and not f.startswith('.')}
    return tops.pop() + '/' if len(tops) == 1 else ''


def _layout(path, files, folders, classes):
    """``({split: [(relative path, label)]}, classes)`` checked against the layout."""
    top = _top_folder(files)
    found = {s: {} for s in SPLITS}
    for folder in folders:
        parts = folder[len(top):].split('/') if folder.startswith(top) else []
        if len(parts) == 2 and parts[0] in SPLITS and not parts[1].startswith('.'):
            found[parts[0]].setdefault(parts[1], [])
    for name in files:
        if not name.startswith(top):
            continue
        parts = name[len(top):].split('/')
        if parts[0] not in SPLITS or any(p.startswith('.') for p in parts):
            continue  # README files beside the splits; hidden files
        if len(parts) != 3:
            raise InvalidValue('{}: {} is not at {}/<class>/<image>; expected {}'.format(
                path, name, parts[0], LAYOUT))
        if not parts[2].lower().endswith(EXTENSIONS):
            raise InvalidValue('{}: {} is not a .jpg, .jpeg or .png image; expected {}'
                               .format(path, name, LAYOUT))
        found[parts[0]].setdefault(parts[1], []).append(name)
    if not any(found.values()):
        raise InvalidValue('{} is not in the image-folder layout: no train/ or test/ folder '
                           'with class folders found ({}); expected {}'.format(
                               path, 'first member: {}'.format(files[0]) if files
                               else 'no files', LAYOUT))
    for split in SPLITS:
        if not found[split]:
            raise InvalidValue('{} has no {} split: expected {}/<class>/<image> beside '
                               '{}/'.format(path, split, split,
                                            [s for s in SPLITS if s != split][0]))
        for name, images in sorted(found[split].items()):
            if not images:
                raise InvalidValue('{}: the class folder {}{}/{} holds no images (.jpg, '
                                   '.jpeg or .png)'.format(path, top, split, name))
    if classes is None:
        classes = sorted(found['train'])
    classes = [str(c) for c in classes]
    for split in SPLITS:
        _check_classes(path, split, sorted(found[split]), classes)
    index = {c: i for i, c in enumerate(classes)}
    entries = {s: sorted(((name, index[c]) for c, names in found[s].items() for name in names),
                         key=lambda e: (e[1], e[0]))  # by class, then file name
               for s in SPLITS}
    return entries, classes


def _check_classes(path, split, names, classes):
    if set(names) == set(classes):
        return
    missing = sorted(set(classes) - set(names))
    extra = sorted(set(names) - set(classes))
    raise InvalidValue('{}: the class folders of {}/ ({}) differ from the expected classes '
                       '({}){}{}'.format(path, split, ', '.join(names), ', '.join(classes),
                                         '; missing: ' + ', '.join(missing) if missing else '',
                                         '; unexpected: ' + ', '.join(extra) if extra else ''))


def _decode(source_path, name, data):
    """An image's pixels as uint8 ``(H, W, C)`` (C 1 or 3) and its format."""
    from PIL import Image
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt = image.format
            if fmt not in ('JPEG', 'PNG'):
                raise InvalidValue('{}: {} is a {} image; JPEG or PNG expected'.format(
                    source_path, name, fmt))
            if image.mode in _GRAY_MODES:
                pixels = numpy.asarray(image.convert('L'))[:, :, None]
            elif image.mode in _COLOUR_MODES:
                pixels = numpy.asarray(image.convert('RGB'))
            else:
                raise InvalidValue('{}: {} has pixel mode {}; 8-bit grayscale or colour '
                                   'expected'.format(source_path, name, image.mode))
    except InvalidValue:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        raise InvalidValue('{}: {} is not a readable image (corrupt or truncated?): {}: {}'
                           .format(source_path, name, type(e).__name__, e)) from e
    return pixels, fmt


def _decode_all(path, source, entries):
    """The split arrays, decoded in the source's own order (an archive is read
    once, front to back) into each image's place in ``entries``."""
    where = {name: (split, i) for split in SPLITS for i, (name, _) in enumerate(entries[split])}
    pixels = {s: [None] * len(entries[s]) for s in SPLITS}
    shapes, formats = {}, set()
    print('[imagefolder] decoding {:,} images of {} (once; cached afterwards)'.format(
        len(where), path), file=sys.stderr, flush=True)
    start = time.perf_counter()
    with Progress(len(where), '[imagefolder] decoding', 'images') as bar:
        for name, data in source.read_all(list(where)):
            image, fmt = _decode(path, name, data)
            formats.add(fmt)
            shapes.setdefault(image.shape[:2], name)
            if len(shapes) > 1:
                (a, first), (b, other) = list(shapes.items())[:2]
                raise InvalidValue('{}: the images differ in size: {} is {}x{}, {} is {}x{}; '
                                   'all must have one size (resize them first)'.format(
                                       path, first, a[0], a[1], other, b[0], b[1]))
            split, i = where[name]
            pixels[split][i] = image
            bar.update(1)
    channels = max(p.shape[2] for s in SPLITS for p in pixels[s])
    arrays = {}
    for split in SPLITS:
        x = numpy.empty((len(pixels[split]), channels) + next(iter(shapes)), numpy.uint8)
        for i, p in enumerate(pixels[split]):
            x[i] = p.transpose(2, 0, 1)  # a grayscale image broadcasts over 3 channels
        y = numpy.array([label for _, label in entries[split]], numpy.int32)
        order = numpy.random.RandomState(SEED).permutation(len(y))
        arrays[split + '_x'], arrays[split + '_y'] = x[order], y[order]
    print('[imagefolder] decoded {:,} images ({} channel(s), {}x{}) in {:.1f} s'.format(
        len(where), channels, *next(iter(shapes)), time.perf_counter() - start),
        file=sys.stderr, flush=True)
    return arrays, sorted(formats)


def cache_path(path, cache_dir=None):
    """The cache file of the image folder ``path``: named after it and a hash
    of its absolute path, in ``cache_dir`` or ``data_dir('imagefolder')``."""
    absolute = os.path.abspath(os.fspath(path))
    name = os.path.basename(absolute.rstrip(os.sep)) or 'root'
    for suffix in ARCHIVE_SUFFIXES:
        if name.endswith(suffix):
            name = name[:-len(suffix)]
            break
    key = hashlib.sha256(absolute.encode()).hexdigest()[:12]
    return os.path.join(cache_dir or data_dir('imagefolder'), '{}-{}.npz'.format(name, key))


Description = collections.namedtuple('Description', 'classes counts formats sha256')
Description.__doc__ = """An image folder's classes (in label order), images
per split (``{'train': n, 'test': n}``), image formats (e.g. ``('JPEG',)``)
and the sha256 of its bytes (None unless asked for)."""


def _cache_entries(f, cache, sha256, classes):
    """``(Description, None)`` of an open cache made from the source bytes
    ``sha256`` with ``classes`` (None: sorted names), else ``(None, why)``.
    Reads the small entries and the headers of the others."""
    meta = {k: safenpz.read_array(f, k, cache, max_bytes=1 << 20)
            for k in ('version', 'sha256', 'seed', 'classes', 'formats')}
    if int(meta['version']) != CACHE_VERSION or int(meta['seed']) != SEED:
        return None, 'written by another version'
    if str(meta['sha256']) != sha256:
        return None, 'the source changed (sha256 {}..., now {}...)'.format(
            str(meta['sha256'])[:12], sha256[:12])
    stored = [str(c) for c in meta['classes']]
    if stored != (sorted(stored) if classes is None else list(classes)):
        return None, 'it has other classes'
    counts = {}
    for split in SPLITS:
        (n, *image), dtype = safenpz.entry_header(f, split + '_x', cache)
        if dtype != numpy.uint8 or len(image) != 3:
            return None, 'its {}_x is {} {}'.format(split, dtype, (n, *image))
        counts[split] = n
    return Description(tuple(stored), counts, tuple(str(v) for v in meta['formats']),
                       sha256), None


def _read_cache(cache, sha256, classes, arrays=True):
    """``(Decoded, None)`` from a cache that matches (``_cache_entries``) or,
    without ``arrays``, ``(Description, None)``; else ``(None, why)``."""
    if not os.path.exists(cache):
        return None, None
    try:
        with safenpz.open_npz(cache, 'an image-folder cache') as f:
            description, why = _cache_entries(f, cache, sha256, classes)
            if description is None or not arrays:
                return description, why
            read = {}
            for split in SPLITS:
                n = description.counts[split]
                read[split + '_x'] = safenpz.read_array(f, split + '_x', cache)
                y = read[split + '_y'] = safenpz.read_array(
                    f, split + '_y', cache, shape=(n,), max_bytes=4 * n)
                if y.dtype != numpy.int32 or (n and (y.min() < 0 or
                                                     y.max() >= len(description.classes))):
                    return None, 'its {}_y labels are not 0..{}'.format(
                        split, len(description.classes) - 1)
    except safenpz.ModelFileError as e:
        return None, 'it is unreadable ({})'.format(e)
    return Decoded(read['train_x'], read['train_y'], read['test_x'], read['test_y'],
                   description.classes, sha256, description.formats, cache), None


def _scan(path, classes, checksum=True):
    source = _source(path)
    files, folders = source.listing()
    entries, classes = _layout(path, files, folders, classes)
    names = [name for split in SPLITS for name, _ in entries[split]]
    formats = sorted({'PNG' if name.lower().endswith('.png') else 'JPEG' for name in names})
    return source, entries, Description(tuple(classes), {s: len(entries[s]) for s in SPLITS},
                                        tuple(formats),
                                        source.sha256(names) if checksum else None)


def describe(path, classes=None, checksum=True, cache_dir=None):
    """``path``'s layout checked and summed up (``Description``) without
    decoding an image; ``checksum`` reads every byte for the sha256. An
    archive whose decoded cache matches its sha256 is described from the
    cache, without listing its members again."""
    path = os.fspath(path)
    source = _source(path)
    if checksum and isinstance(source, _Archive):
        description, _ = _read_cache(cache_path(path, cache_dir), source.sha256(), classes,
                                     arrays=False)
        if description is not None:
            return description
    return _scan(path, classes, checksum)[2]


def load(path, classes=None, cache_dir=None):
    """The image folder or archive ``path`` decoded (``Decoded``), from its
    cache when that was made from the same source bytes and classes (an
    archive's bytes are its file's: its members are then not listed again)."""
    path = os.fspath(path)
    cache = cache_path(path, cache_dir)
    source = _source(path)
    if isinstance(source, _Archive):
        cached, _ = _read_cache(cache, source.sha256(), classes)
        if cached is not None:
            return cached
    source, entries, description = _scan(path, classes)
    classes, sha256 = list(description.classes), description.sha256
    cached, why = _read_cache(cache, sha256, classes)
    if cached is not None:
        return cached
    if why:
        print('[imagefolder] rebuilding the cache {}: {}'.format(cache, why), file=sys.stderr)
    arrays, formats = _decode_all(path, source, entries)
    meta = {'version': numpy.array(CACHE_VERSION), 'seed': numpy.array(SEED),
            'sha256': numpy.array(sha256), 'classes': numpy.array(classes),
            'formats': numpy.array(formats), 'source': numpy.array(os.path.abspath(path))}
    with atomic_write(cache) as f:
        numpy.savez(f, **arrays, **meta)
    print('[imagefolder] cached in {}'.format(cache), file=sys.stderr)
    return Decoded(arrays['train_x'], arrays['train_y'], arrays['test_x'], arrays['test_y'],
                   tuple(classes), sha256, tuple(formats), cache)


def to_float(x):
    """uint8 pixels as float32 in [0, 1] (pixels / 255)."""
    out = x.astype(numpy.float32)
    out /= 255.
    return out


def get_data(path, classes=None, cache_dir=None):
    """``x_train, y_train, x_test, y_test``: float32 ``(N, C, H, W)`` in [0, 1]
    and int32 labels, in the fixed seeded order (see the module docstring)."""
    d = load(path, classes, cache_dir)
    return to_float(d.x_train), d.y_train, to_float(d.x_test), d.y_test
