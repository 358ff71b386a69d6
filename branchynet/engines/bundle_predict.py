"""Early-exit inference of a BranchyNet bundle, with numpy and onnxruntime only.

This file is copied into every bundle written by ``branchynet.engines.deploy.save_bundle``
as ``predict.py``; it needs neither Chainer nor the branchynet package::

    from predict import predict          # with the bundle's folder on sys.path
    labels, exits = predict(x)           # x: float32 (N, C, H, W)

    python predict.py INPUT.npy OUTPUT.npz [--thresholds T1,T2] [--threads N]

``manifest.json`` names the graphs (``exit1.onnx``, ``exit2.onnx``...: input
``x``, outputs ``logits`` and, but the last exit, ``features``), the
confidence measure and the thresholds. A sample leaves at the first early
exit whose uncertainty score is strictly below the exit's limit: for
``entropy``, softmax entropy (nats) < T; for ``maxprob``, largest
probability > T; for ``margin``, largest minus second-largest probability
> T. Scores are computed from the logits in float64. ``exits`` holds the
0-based index of the exit that classified each sample (0 is the file
``exit1.onnx``), as ``BranchyNet.predict`` returns it.

What it cannot answer it refuses with a ``BundleError`` of one line (the
script: that line on stderr and exit status 2): a manifest with a field
missing, unknown or of the wrong kind, graph names that leave the folder,
files that are not regular files (a FIFO would block), graphs ONNX Runtime
cannot load or run, thresholds outside the measure's range, samples that are
not floating point (uint8 pixels: convert and scale them as in training),
not finite, or whose logits are not finite (named by index), and an input
file whose header declares more data than it holds.
"""
import sys  # built in: never looked up on sys.path

# Run as a script, the script's folder (the bundle's; with -m the current
# folder) is first on sys.path, so a json.py or numpy/ put there would be
# imported instead of the real modules: it goes before any other import
# (-P and -I never add it).
if __name__ == '__main__' and sys.path and not getattr(sys.flags, 'safe_path', False):
    del sys.path[0]

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import stat  # noqa: E402

import numpy  # noqa: E402

MANIFEST = 'manifest.json'
FORMAT = 'branchynet-bundle'
#: the newest manifest layout this file reads (0: the in-memory one of a
#: folder from before manifests, ``deploy.load_bundle``)
FORMAT_VERSION = 1
#: the confidence measures a bundle decides, and the largest threshold each
#: takes (None: no upper bound); the library's ``confidence.MEASURES`` agree
MEASURES = {'entropy': None, 'maxprob': 1.0, 'margin': 1.0}
#: the largest manifest read, in bytes (a written one has a few hundred)
MAX_MANIFEST_BYTES = 1 << 20
#: the most exits and sample dimensions a manifest may declare
MAX_EXITS = 1024
MAX_DIMS = 8
#: samples checked for finite values at a time (bounds the temporary mask)
CHUNK = 1024

# manifest fields: name -> whether required
_FIELDS = {'format': True, 'format_version': True, 'input': True, 'exits': True,
           'measure': True, 'thresholds': True, 'main': False, 'num_classes': False,
           'exit_index': False, 'version': False, 'commit': False, 'files': False}
_INPUT_FIELDS = {'name': True, 'shape': False, 'dtype': False}
_EXIT_FIELDS = {'file': True, 'number': False, 'outputs': False}


class BundleError(ValueError):
    """What the bundle cannot answer; the message (one line) says what was
    wrong and what is expected."""


def _is_int(v):
    return isinstance(v, (int, numpy.integer)) and not isinstance(v, (bool, numpy.bool_))


def _kind(v):
    return {dict: 'an object', list: 'a list', str: 'a string', bool: 'a boolean',
            type(None): 'null'}.get(type(v), 'a number' if isinstance(v, (int, float))
                                    else type(v).__name__)


def _shown(indices):
    indices = list(indices)
    return ', '.join(map(str, indices[:10])) + (', ...' if len(indices) > 10 else '')


def _first_line(e):
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


# ------------------------------------------------------------------ files
@contextlib.contextmanager
def regular_file(path, what):
    """``path`` opened for reading in binary mode, refused (``BundleError``)
    unless it is a regular file: a FIFO or a device would block or never end.
    Checked with ``os.stat`` before opening, opened without blocking, and
    checked again on the open file (it may have been replaced between)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise BundleError('{} is not a regular file; expected {}'.format(path, what))
        fd = os.open(path, os.O_RDONLY | getattr(os, 'O_NONBLOCK', 0))
    except OSError as e:
        raise BundleError('cannot read {} ({}): {}'.format(path, what, e.strerror or e)) \
            from None
    with os.fdopen(fd, 'rb') as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BundleError('{} is not a regular file; expected {}'.format(path, what))
        yield f


def read_manifest(directory):
    """The parsed ``manifest.json`` of ``directory`` (checked by ``Bundle``):
    a regular file of at most ``MAX_MANIFEST_BYTES``, UTF-8 JSON, not nested
    deeper than the JSON parser can follow."""
    path = os.path.join(directory, MANIFEST)
    with regular_file(path, "the bundle's manifest") as f:
        text = f.read(MAX_MANIFEST_BYTES + 1)
    if len(text) > MAX_MANIFEST_BYTES:
        raise BundleError('{} is larger than {} bytes; a bundle manifest has a few '
                          'hundred'.format(path, MAX_MANIFEST_BYTES))
    try:
        return json.loads(text.decode('utf-8'))
    except RecursionError:
        raise BundleError('{} is nested too deeply to be a bundle manifest'.format(path)) \
            from None
    except ValueError as e:  # JSON, UTF-8 or an integer of too many digits
        raise BundleError('{} is not valid JSON: {}'.format(path, _first_line(e))) from None


def read_samples(path):
    """The array of the ``.npy`` file ``path``, allocated only once its header
    (read with ``numpy.lib.format``) declares no more data than the file
    holds and no Python objects."""
    what = 'a .npy array of samples (numpy.save)'
    with regular_file(path, what) as f:
        size = os.fstat(f.fileno()).st_size
        try:
            version = numpy.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = numpy.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = numpy.lib.format.read_array_header_2_0(f)
            else:
                raise BundleError('{} is a .npy file of format version {}.{}, which this '
                                  'file does not read; expected {}'.format(path, *version, what))
        except (ValueError, SyntaxError) as e:
            if isinstance(e, BundleError):
                raise
            raise BundleError('{} is not a .npy file ({}); expected {}'.format(
                path, _first_line(e), what)) from None
        if dtype.hasobject:
            raise BundleError('{} holds Python objects ({}); expected {}'.format(path, dtype, what))
        declared = math.prod(shape) * dtype.itemsize
        if declared > size - f.tell():
            raise BundleError('{} declares an array of shape {} and dtype {} ({} bytes) but '
                              'holds {} bytes of data; expected {}'.format(
                                  path, shape, dtype, declared, size - f.tell(), what))
        f.seek(0)
        return numpy.lib.format.read_array(f, allow_pickle=False)


# --------------------------------------------------------------- manifest
def _fields(value, known, where):
    if not isinstance(value, dict):
        raise BundleError('{} must be a JSON object, got {}'.format(where, _kind(value)))
    for name in value:
        if name not in known:
            raise BundleError('{} has an unknown field {!r}; expected only {}'.format(
                where, name, ', '.join(known)))
    for name, required in known.items():
        if required and name not in value:
            raise BundleError('{} has no field {!r}'.format(where, name))


def _file_name(name, where):
    """``name`` if it names a file in the bundle's folder itself."""
    if not isinstance(name, str) or name in ('', '.', '..') or \
            any(c in name for c in '/\\\0') or os.path.isabs(name) or \
            os.path.splitdrive(name)[0] or name != os.path.basename(name):
        raise BundleError('{} is {!r}; expected the name of a file in the bundle\'s folder '
                          '(no folder, no "..", not an absolute path)'.format(where, name))
    return name


def _string(value, where, allow_none=False):
    if not (isinstance(value, str) or (value is None and allow_none)):
        raise BundleError('{} must be a string{}, got {}'.format(
            where, ' or null' if allow_none else '', _kind(value)))


def _strings(value, where):
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise BundleError('{} must be a list of strings, got {}'.format(where, _kind(value)))


def check_manifest(m, where=MANIFEST):
    """Refuse (``BundleError``, naming the field) a manifest this file cannot
    answer by: a field missing, unknown or of the wrong kind, a format or
    version it does not read, a graph name outside the folder, an unknown
    measure, thresholds outside its range."""
    _fields(m, _FIELDS, where)
    if m['format'] != FORMAT:
        raise BundleError('{}: format is {!r}, not {!r}: not a BranchyNet bundle '
                          'manifest'.format(where, m['format'], FORMAT))
    version = m['format_version']
    if not _is_int(version) or not 0 <= version <= FORMAT_VERSION:
        raise BundleError('{}: format_version is {!r}; this file reads 0 to {} (a newer '
                          'bundle needs its own predict.py or a newer branchynet)'.format(
                              where, version, FORMAT_VERSION))
    _fields(m['input'], _INPUT_FIELDS, where + ': input')
    _string(m['input']['name'], where + ': input.name')
    shape = m['input'].get('shape')
    if shape is None and version >= 1:
        raise BundleError('{}: input has no field \'shape\''.format(where))
    if shape is not None and not (isinstance(shape, list) and 1 <= len(shape) <= MAX_DIMS and
                                  all(_is_int(d) and 1 <= d <= 2 ** 31 for d in shape)):
        raise BundleError('{}: input.shape is {!r}; expected a list of 1 to {} positive '
                          'integers (one sample\'s shape)'.format(where, shape, MAX_DIMS))
    if m['input'].get('dtype', 'float32') != 'float32':
        raise BundleError('{}: input.dtype is {!r}; expected \'float32\''.format(
            where, m['input']['dtype']))
    exits = m['exits']
    if not isinstance(exits, list) or not 1 <= len(exits) <= MAX_EXITS:
        raise BundleError('{}: exits must be a list of 1 to {} exits, got {}'.format(
            where, MAX_EXITS, _kind(exits) if not isinstance(exits, list) else
            '{} entries'.format(len(exits))))
    for n, e in enumerate(exits):
        at = '{}: exits[{}]'.format(where, n)
        _fields(e, _EXIT_FIELDS, at)
        _file_name(e['file'], at + '.file')
        if 'number' in e and (not _is_int(e['number']) or e['number'] != n + 1):
            raise BundleError('{}.number is {!r}; expected {} (exits are numbered from 1 '
                              'in order)'.format(at, e['number'], n + 1))
        if 'outputs' in e:
            _strings(e['outputs'], at + '.outputs')
    if 'main' in m:
        _file_name(m['main'], where + ': main')
    if not isinstance(m['measure'], str) or m['measure'] not in MEASURES:
        raise BundleError('{}: measure is {!r}; expected one of {}'.format(
            where, m['measure'], ', '.join(MEASURES)))
    if m['thresholds'] is not None:
        if not isinstance(m['thresholds'], list):
            raise BundleError('{}: thresholds must be a list or null, got {}'.format(
                where, _kind(m['thresholds'])))
        check_thresholds(m['measure'], m['thresholds'], len(exits) - 1,
                         where + ': thresholds')
    if 'num_classes' in m and not (_is_int(m['num_classes']) and m['num_classes'] >= 1):
        raise BundleError('{}: num_classes is {!r}; expected a positive integer'.format(
            where, m['num_classes']))
    for name in ('exit_index', 'version', 'commit'):
        if name in m:
            _string(m[name], '{}: {}'.format(where, name), allow_none=True)
    if 'files' in m:
        _strings(m['files'], where + ': files')
    return m


def check_thresholds(measure, values, count, where='thresholds'):
    """``values`` (one per early exit, or one number for every early exit) as
    a list of ``count`` floats, each within ``measure``'s range: not NaN,
    at least 0, at most the measure's bound (1 for maxprob and margin;
    entropy has none: ``inf`` or the string ``'inf'`` sends every sample out)."""
    upper = MEASURES[measure]
    expected = 'one number per early exit ({}), each {}'.format(
        count, 'at least 0 (nats; inf: every sample leaves)' if upper is None else
        'in [0, {:g}]'.format(upper))
    if isinstance(values, numpy.ndarray) and values.ndim == 0:
        values = values.item()
    if (_is_int(values) or isinstance(values, (float, numpy.floating))) and count:
        values = [values] * count
    if isinstance(values, (str, bytes, dict, set)) or not hasattr(values, '__len__'):
        raise BundleError('{} must be {}, got {}'.format(where, expected, _kind(values)))
    values = list(values)
    if len(values) != count:
        raise BundleError('{}: {} given; this bundle has {} early exit{}: expected {}'.format(
            where, len(values), count, '' if count == 1 else 's', expected))
    out = []
    for i, v in enumerate(values):
        if isinstance(v, numpy.ndarray) and v.ndim == 0:
            v = v.item()
        if isinstance(v, str) and v == 'inf':  # a manifest's infinity (strict JSON)
            v = math.inf
        if not (_is_int(v) or isinstance(v, (float, numpy.floating))):
            raise BundleError('{}[{}] is {!r}; expected {}'.format(where, i, v, expected))
        try:
            v = float(v)
        except OverflowError:
            v = math.inf
        if math.isnan(v) or v < 0 or (upper is not None and v > upper):
            raise BundleError('{}[{}] is {!r} for measure {!r}; expected {}'.format(
                where, i, v, measure, expected))
        out.append(v)
    return out


# -------------------------------------------------------------- decisions
def _probabilities(z):
    d = z.astype(numpy.float64)
    d -= d.max(axis=1, keepdims=True)
    e = numpy.exp(d)
    return e, d, e.sum(axis=1)


def uncertainty(measure, z):
    """Per row of logits ``z``, the measure's score (lower: more confident)."""
    e, d, s = _probabilities(z)
    if measure == 'entropy':
        return numpy.log(s) - (e * d).sum(axis=1) / s
    p = e / s[:, None]
    if measure == 'maxprob':
        return 1.0 - p.max(axis=1)
    if measure == 'margin':
        p.sort(axis=1)
        return 1.0 - (p[:, -1] - p[:, -2])
    raise BundleError('unknown confidence measure {!r}; expected one of {}'.format(
        measure, ', '.join(MEASURES)))


def limits(measure, thresholds):
    """The user's thresholds as limits on ``uncertainty`` (leave when below)."""
    return [t if measure == 'entropy' else 1.0 - t for t in thresholds]


class Bundle:
    """The graphs of a bundle folder, loaded into ONNX Runtime sessions.

    ``manifest``: the bundle's description (default: read from the folder's
    ``manifest.json``); checked by ``check_manifest`` either way.
    ``threads``: ONNX Runtime's intra-op threads (0: its default). One
    Bundle may be called from several threads at once.
    """

    def __init__(self, directory=None, manifest=None, threads=1):
        try:
            import onnxruntime
        except ImportError as e:
            raise ImportError('the bundle runs on ONNX Runtime: pip install onnxruntime '
                              '({})'.format(e)) from None
        self.directory = os.path.abspath(directory or os.path.dirname(os.path.abspath(__file__)))
        if manifest is None:
            manifest = read_manifest(self.directory)
        self.manifest = check_manifest(manifest, os.path.join(self.directory, MANIFEST))
        self.measure = manifest['measure']
        ts = manifest['thresholds']
        self.thresholds = None if ts is None else \
            check_thresholds(self.measure, ts, len(manifest['exits']) - 1)
        self.input_shape = tuple(manifest['input']['shape']) \
            if manifest['input'].get('shape') else None
        if not _is_int(threads) or threads < 0:
            raise BundleError('threads must be a non-negative integer (0: ONNX Runtime\'s '
                              'default), got {!r}'.format(threads))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        self.files = [e['file'] for e in manifest['exits']]
        self.sessions = [self._session(onnxruntime, options, name) for name in self.files]
        self.inputs = [s.get_inputs()[0].name for s in self.sessions]
        for n, s in enumerate(self.sessions):
            need = 1 if n == len(self.sessions) - 1 else 2
            if len(s.get_inputs()) != 1 or len(s.get_outputs()) < need:
                raise BundleError('{} has {} inputs and {} outputs; an exit\'s graph takes one '
                                  'input and gives logits{}'.format(
                                      self._path(n), len(s.get_inputs()),
                                      len(s.get_outputs()),
                                      '' if need == 1 else ' and features'))

    def _path(self, n):
        return os.path.join(self.directory, self.files[n])

    def _session(self, onnxruntime, options, name):
        path = os.path.join(self.directory, name)
        with regular_file(path, 'an ONNX graph of the bundle') as f:
            graph = f.read()
        try:
            return onnxruntime.InferenceSession(graph, options,
                                                providers=['CPUExecutionProvider'])
        except Exception as e:  # ONNX Runtime's errors derive from Exception only
            raise BundleError('{} is not a graph ONNX Runtime can load ({}: {})'.format(
                path, type(e).__name__, _first_line(e))) from None

    def _run(self, n, h):
        """Exit ``n``'s graph on ``h``: (logits, features or None), checked."""
        try:
            out = self.sessions[n].run(None, {self.inputs[n]: h})
        except Exception as e:  # ONNX Runtime's errors derive from Exception only
            raise BundleError('{} could not be run on a batch of shape {} ({}: {})'.format(
                self._path(n), h.shape, type(e).__name__, _first_line(e))) from None
        z = out[0]
        features = out[1] if n < len(self.sessions) - 1 else None
        if z.ndim != 2 or len(z) != len(h) or not z.shape[1] or \
                (features is not None and len(features) != len(h)):
            raise BundleError('{} gave outputs of shapes {} for {} samples; expected logits '
                              '(N, classes){}'.format(self._path(n), [o.shape for o in out],
                                                      len(h), '' if features is None else
                                                      ' and features (N, ...)'))
        return z, features

    def numexits(self):
        return len(self.sessions)

    def _inputs(self, x):
        """``x`` as float32 samples, refused unless floating point (uint8
        pixels would be answered in another scale than the model was trained
        on), of the bundle's sample shape, not empty and finite."""
        if not isinstance(x, numpy.ndarray):
            try:
                x = numpy.asarray(x)
            except (TypeError, ValueError) as e:
                raise BundleError('x must be an array of samples: {}'.format(
                    _first_line(e))) from None
        if x.dtype.kind != 'f':
            raise BundleError('x has dtype {}; the bundle takes floating-point samples, '
                              'scaled as the model\'s training data were (0..255 pixels of '
                              'a model trained on 0..1: x.astype(numpy.float32) / 255)'.format(
                                  x.dtype))
        if self.input_shape is not None and (x.ndim != len(self.input_shape) + 1 or
                                             x.shape[1:] != self.input_shape):
            raise BundleError('x must have shape (N, {}), got {}'.format(
                ', '.join(map(str, self.input_shape)), x.shape))
        if x.ndim < 2 or len(x) == 0:
            raise BundleError('x is empty or has no sample axis (shape {}): at least one '
                              'sample is needed'.format(x.shape))
        with numpy.errstate(over='ignore'):  # a float64 beyond float32's range: inf, refused
            x = numpy.ascontiguousarray(x, dtype=numpy.float32)
        bad = [start + i for start in range(0, len(x), CHUNK) for i in numpy.flatnonzero(
            ~numpy.isfinite(x[start:start + CHUNK].reshape(len(x[start:start + CHUNK]), -1))
            .all(axis=1)).tolist()]
        if bad:
            raise BundleError('x: {} of {} samples hold NaN or infinite values (as float32): '
                              'sample indices {}; the bundle answers finite samples only'
                              .format(len(bad), len(x), _shown(bad)))
        return x

    def _thresholds(self, thresholds):
        if thresholds is None:
            if self.thresholds is None:
                raise BundleError('this bundle stores no thresholds: pass thresholds (one '
                                  'per early exit, {})'.format(self.numexits() - 1))
            return self.thresholds
        return check_thresholds(self.measure, thresholds, self.numexits() - 1)

    def predict(self, x, thresholds=None, batchsize=1024):
        """``(labels, exits)``: int32 arrays of length N (``exits`` 0-based).
        Samples whose logits at an exit they reach are not finite are refused
        by index (``BundleError``), never answered."""
        x = self._inputs(x)
        limit = limits(self.measure, self._thresholds(thresholds))
        if not _is_int(batchsize) or batchsize < 1:
            raise BundleError('batchsize must be a positive integer, got {!r}'.format(batchsize))
        labels = numpy.empty(len(x), numpy.int32)
        exits = numpy.empty(len(x), numpy.int32)
        last, bad = self.numexits() - 1, []
        for start in range(0, len(x), batchsize):
            h = x[start:start + batchsize]
            remaining = numpy.arange(start, start + len(h))
            for n in range(self.numexits()):
                z, features = self._run(n, h)
                finite = numpy.isfinite(z).all(axis=1)
                bad.extend(remaining[~finite].tolist())
                pred = z.argmax(axis=1).astype(numpy.int32)
                leave = numpy.ones(len(h), bool) if n == last else \
                    uncertainty(self.measure, z) < limit[n]
                leave &= finite
                labels[remaining[leave]], exits[remaining[leave]] = pred[leave], n
                stay = ~leave & finite
                if not stay.any():
                    break
                h, remaining = numpy.ascontiguousarray(features[stay]), remaining[stay]
        if bad:
            bad.sort()
            raise BundleError('the logits of {} of {} samples are not finite (NaN or '
                              'infinite), so no exit can classify them: sample indices {}; '
                              'check those inputs for huge values'.format(
                                  len(bad), len(x), _shown(bad)))
        return labels, exits

    def exit_logits(self, x):
        """Every exit's logits for every sample (no early exit)."""
        h, out = self._inputs(x), []
        for n in range(self.numexits()):
            z, h = self._run(n, h)
            out.append(z)
        return out


_default = []


def predict(x, thresholds=None):
    """``(labels, exits)`` of this folder's bundle (loaded on first use)."""
    if not _default:
        _default.append(Bundle())
    return _default[0].predict(x, thresholds)


def save_outputs(path, labels, exits):
    """``labels`` and ``exits`` in the npz ``path`` (``.npz`` added as
    ``numpy.savez`` adds it), written to a temporary file first and renamed:
    never left half-written."""
    path = os.fspath(path)
    if not path.endswith('.npz'):
        path += '.npz'
    part = '{}.{}.part'.format(path, os.getpid())
    try:
        with open(part, 'wb') as f:
            numpy.savez(f, labels=labels, exits=exits)
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(part)
        raise BundleError('cannot write {}: {}'.format(path, e.strerror or e)) from None


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage text
        print('error: {} (see --help)'.format(message), file=sys.stderr)
        sys.exit(2)


def _parse_thresholds(text):
    try:
        return [float(t) for t in text.split(',')]
    except ValueError:
        raise BundleError('--thresholds must be comma-separated numbers, one per early exit, '
                          'got {!r}'.format(text)) from None


def main(argv=None):
    parser = _Parser(description='Early-exit inference of this BranchyNet bundle: labels '
                     'and exits of every sample of INPUT.npy written to OUTPUT.npz')
    parser.add_argument('input', metavar='INPUT.npy', help='float32 samples (N, C, H, W)')
    parser.add_argument('output', metavar='OUTPUT.npz', help='gets labels and exits (int32)')
    parser.add_argument('--thresholds', help='comma-separated, one per early exit '
                        '(default: the manifest\'s)')
    parser.add_argument('--threads', type=int, default=1, help='ONNX Runtime threads')
    args = parser.parse_args(argv)
    try:
        ts = None if args.thresholds is None else _parse_thresholds(args.thresholds)
        x = read_samples(args.input)
        bundle = Bundle(threads=args.threads)
        labels, exits = bundle.predict(x, ts)
        save_outputs(args.output, labels, exits)
    except (OSError, ValueError, ImportError, MemoryError) as e:  # BundleError is a ValueError
        print('error: {}'.format(_first_line(e) if not isinstance(e, BundleError) else e),
              file=sys.stderr)
        return 2
    counts = numpy.bincount(exits, minlength=bundle.numexits())
    print('{} samples; per exit (1, 2, ...): {}'.format(len(labels), counts.tolist()))
    return 0


if __name__ == '__main__':
    sys.exit(main())
