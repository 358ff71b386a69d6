"""A bundle refuses what it cannot answer, in one line: ``load_bundle`` and
``Bundle.predict`` with a ``BundleError`` (a ValueError), ``python
predict.py`` with that line on stderr and exit status 2.

Before these checks (issue 37): NaN, infinite or huge inputs were answered
(label 0), uint8 pixels answered without a word, thresholds NaN, negative or
above 1 for maxprob used as they were; malformed manifests and damaged graphs
gave tracebacks (KeyError, TypeError, RecursionError, ONNX Runtime errors);
a FIFO named exit1.onnx or manifest.json hung; an input header declaring
10^9 samples gave a MemoryError; graph names with ``..`` or absolute paths
loaded graphs from outside the folder; and ``python DIR/predict.py``
imported a json.py or numpy/ put in the bundle's folder.
"""
import json
import os
import shutil
import subprocess
import sys
import threading

import numpy
import pytest

pytest.importorskip('onnxruntime')
pytest.importorskip('onnx')

from branchynet.engines import bundle_predict, deploy  # noqa: E402
from branchynet.engines.routing import NonFiniteLogits  # noqa: E402
from branchynet.measures import confidence  # noqa: E402
from branchynet.validation import InvalidValue  # noqa: E402
from tests.helpers import make_three_exit_net  # noqa: E402

THRESHOLDS = [0.5, 0.8]


@pytest.fixture(scope='module')
def saved(tmp_path_factory):
    net = make_three_exit_net(seed=3)
    net.thresholdExits = THRESHOLDS
    directory = tmp_path_factory.mktemp('saved') / 'bundle'
    deploy.save_bundle(net, directory)
    return net, directory


@pytest.fixture
def bundle(saved, tmp_path):
    """A fresh copy of the saved bundle (a test may damage it) and inputs."""
    net, source = saved
    directory = tmp_path / 'bundle'
    shutil.copytree(source, directory)
    x = numpy.random.RandomState(0).randn(12, 1, 8, 8).astype(numpy.float32)
    return net, directory, x


def refused(call, *fragments):
    """``call()`` raises a ValueError of one line holding every fragment."""
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    assert '\n' not in message, message
    for f in fragments:
        assert f in message, (f, message)
    return info.value


def run_predict_py(directory, args, cwd, timeout=60):
    return subprocess.run([sys.executable, str(directory / 'predict.py')] + args,
                          cwd=str(cwd), capture_output=True, text=True, timeout=timeout)


def cli_refused(directory, args, cwd, *fragments):
    """``python predict.py args`` ends with status 2 and one line on stderr
    holding every fragment."""
    run = run_predict_py(directory, args, cwd)
    assert run.returncode == 2, (run.returncode, run.stderr)
    assert run.stderr.count('\n') == 1 and run.stderr.startswith('error: '), run.stderr
    for f in fragments:
        assert f in run.stderr, (f, run.stderr)
    return run


def edit_manifest(directory, change):
    path = directory / 'manifest.json'
    m = json.loads(path.read_text())
    replaced = change(m)  # None: m changed in place
    path.write_text(json.dumps(m if replaced is None else replaced))


def test_refusals_are_bundle_errors_and_value_errors(bundle):
    _, directory, x = bundle
    x[3, 0, 2, 2] = numpy.nan
    e = refused(lambda: deploy.load_bundle(directory).predict(x))
    assert isinstance(e, bundle_predict.BundleError)


# ------------------------------------------------------------------ inputs
@pytest.mark.parametrize('value', [numpy.nan, numpy.inf, -numpy.inf])
def test_non_finite_samples_are_refused_by_index(bundle, value, tmp_path):
    """Before: one NaN pixel gave that sample label 0."""
    _, directory, x = bundle
    x[3, 0, 2, 2] = value
    x[7, 0, 0, 0] = value
    loaded = deploy.load_bundle(directory)
    refused(lambda: loaded.predict(x), '2 of 12 samples', 'sample indices 3, 7')
    refused(lambda: loaded.exit_logits(x), 'sample indices 3, 7')
    numpy.save(tmp_path / 'in.npy', x)
    cli_refused(directory, ['in.npy', 'out.npz'], tmp_path, 'sample indices 3, 7')
    assert not (tmp_path / 'out.npz').exists()


def test_float64_beyond_float32_is_refused_as_infinite(bundle):
    _, directory, x = bundle
    x = x.astype(numpy.float64)
    x[5] = 1e39
    refused(lambda: deploy.load_bundle(directory).predict(x), 'sample indices 5')


def test_samples_whose_logits_are_not_finite_are_refused_by_index(bundle, tmp_path):
    """Finite but huge inputs (-3e38 here) make the logits infinite or NaN:
    refused as the library refuses them. Before: answered with label 0."""
    net, directory, x = bundle
    x[4] = -3e38
    with pytest.raises(NonFiniteLogits, match='sample indices 4'):
        net.predict(x)
    refused(lambda: deploy.load_bundle(directory).predict(x), 'logits of 1 of 12',
            'sample indices 4')
    numpy.save(tmp_path / 'in.npy', x)
    cli_refused(directory, ['in.npy', 'out.npz'], tmp_path, 'not finite', 'sample indices 4')


@pytest.mark.parametrize('dtype', [numpy.uint8, numpy.int32, bool])
def test_integer_samples_are_refused_with_how_to_convert(bundle, dtype, tmp_path):
    """uint8 0..255 pixels are refused, not answered in another scale than the
    model's (the bundle cannot know it). Before: answered without a word."""
    _, directory, x = bundle
    pixels = (numpy.clip(x, 0, 1) * 255).astype(dtype)
    refused(lambda: deploy.load_bundle(directory).predict(pixels),
            'dtype {}'.format(numpy.dtype(dtype)), 'astype(numpy.float32)')
    numpy.save(tmp_path / 'in.npy', pixels)
    cli_refused(directory, ['in.npy', 'out.npz'], tmp_path, 'floating-point')


def test_float64_and_float16_samples_are_converted(bundle):
    net, directory, x = bundle
    loaded = deploy.load_bundle(directory)
    for a, b in zip(loaded.predict(x.astype(numpy.float64)), net.predict(x)):
        numpy.testing.assert_array_equal(a, b)
    labels, exits = loaded.predict(x.astype(numpy.float16))
    assert len(labels) == len(exits) == len(x)


def test_an_input_header_declaring_more_than_the_file_holds_is_refused(bundle, tmp_path):
    """Before: a header declaring 10^9 samples was allocated (MemoryError)."""
    _, directory, _ = bundle
    path = tmp_path / 'bomb.npy'
    with open(path, 'wb') as f:
        numpy.lib.format.write_array_header_1_0(f, {'descr': '<f4', 'fortran_order': False,
                                                    'shape': (10 ** 9, 1, 8, 8)})
        f.write(b'\0' * 256)
    refused(lambda: bundle_predict.read_samples(str(path)), 'declares', '256 bytes')
    cli_refused(directory, ['bomb.npy', 'out.npz'], tmp_path, 'declares an array of shape')


@pytest.mark.parametrize('content, fragment', [
    (b'not an array', 'not a .npy file'),
    (b'', 'not a .npy file'),
])
def test_an_input_that_is_no_npy_file_is_refused(bundle, tmp_path, content, fragment):
    _, directory, _ = bundle
    (tmp_path / 'in.npy').write_bytes(content)
    cli_refused(directory, ['in.npy', 'out.npz'], tmp_path, fragment)


def test_an_npz_or_object_input_is_refused(bundle, tmp_path):
    _, directory, x = bundle
    numpy.savez(tmp_path / 'in.npz', x=x)
    cli_refused(directory, ['in.npz', 'out.npz'], tmp_path, 'not a .npy file')
    numpy.save(tmp_path / 'obj.npy', numpy.array([None, 1], dtype=object), allow_pickle=True)
    cli_refused(directory, ['obj.npy', 'out.npz'], tmp_path, 'Python objects')


# -------------------------------------------------------------- thresholds
@pytest.mark.parametrize('measure, thresholds, fragment', [
    ('entropy', [float('nan'), 0.5], 'thresholds[0] is nan'),
    ('entropy', [0.5, -0.1], 'thresholds[1] is -0.1'),
    ('maxprob', [0.5, 1.5], "thresholds[1] is 1.5 for measure 'maxprob'"),
    ('margin', [-0.5, 0.5], "thresholds[0] is -0.5 for measure 'margin'"),
    ('maxprob', [0.5, float('inf')], "thresholds[1] is inf for measure 'maxprob'"),
    ('entropy', [0.5], 'thresholds: 1 given; this bundle has 2 early exits'),
    ('entropy', [0.5, 'high'], "thresholds[1] is 'high'"),
])
def test_thresholds_outside_the_measures_range_are_refused(bundle, tmp_path, measure,
                                                           thresholds, fragment):
    """In ``predict``, in the manifest and on the command line. Before: used
    unchecked (no sample left early), or a TypeError."""
    _, directory, x = bundle
    edit_manifest(directory, lambda m: m.update(measure=measure, thresholds=None))
    loaded = deploy.load_bundle(directory)
    refused(lambda: loaded.predict(x, thresholds), fragment)
    edit_manifest(directory, lambda m: m.update(thresholds=thresholds))
    refused(lambda: deploy.load_bundle(directory), 'manifest.json: ' + fragment)  # as loaded
    if all(isinstance(t, float) for t in thresholds):
        numpy.save(tmp_path / 'in.npy', x)
        edit_manifest(directory, lambda m: m.update(thresholds=None))
        cli_refused(directory, ['in.npy', 'out.npz', '--thresholds=' +
                                ','.join(map(str, thresholds))], tmp_path, fragment)


def test_thresholds_within_range_are_taken(bundle):
    """A number for every early exit, 'inf' and the bounds are answers."""
    net, directory, x = bundle
    loaded = deploy.load_bundle(directory)
    for ts in ([0.0, 0.0], ['inf', 0.5], numpy.array([0.3, 0.6])):
        expected = net.predict(x, [float(t) for t in ts])
        for a, b in zip(loaded.predict(x, ts), expected):
            numpy.testing.assert_array_equal(a, b)
    for a, b in zip(loaded.predict(x, 0.7), net.predict(x, 0.7)):
        numpy.testing.assert_array_equal(a, b)


def test_the_bundles_measures_are_the_librarys():
    """The standalone copy of the measures' ranges and scores agrees with
    ``confidence.MEASURES``; save_bundle refuses a measure it cannot decide."""
    z = numpy.random.RandomState(0).randn(20, 5).astype(numpy.float32) * 3
    for name, upper in bundle_predict.MEASURES.items():
        measure = confidence.MEASURES[name]
        assert measure.upper == upper
        numpy.testing.assert_allclose(bundle_predict.uncertainty(name, z), measure.scores(z))
        assert bundle_predict.limits(name, [0.3]) == [measure.limit(0.3)]


def test_save_bundle_refuses_a_measure_the_bundle_cannot_decide(tmp_path, monkeypatch):
    e = confidence.MEASURES['entropy']
    monkeypatch.setitem(confidence.MEASURES, 'my_entropy', confidence.Measure(
        'my_entropy', 'entropy < T', None, e.scores, e.row_score, e.limit, e.stay_all,
        e.leave_all))
    net = make_three_exit_net()
    net.confidence = 'my_entropy'
    with pytest.raises(InvalidValue, match="'my_entropy'"):
        deploy.save_bundle(net, tmp_path / 'b')
    assert not (tmp_path / 'b').exists()


# ---------------------------------------------------------------- manifest
def _set_exit(n, **fields):
    return lambda m: m['exits'][n].update(fields)


MANIFESTS = {
    'missing measure': (lambda m: m.pop('measure') and None, "has no field 'measure'"),
    'missing exits': (lambda m: m.pop('exits') and None, "has no field 'exits'"),
    'missing thresholds': (lambda m: m.pop('thresholds') and None,
                           "has no field 'thresholds'"),
    'unknown field': (lambda m: m.update(surprise=1), "unknown field 'surprise'"),
    'unknown exit field': (_set_exit(1, hook='x.py'), "exits[1] has an unknown field 'hook'"),
    'unknown input field': (lambda m: m['input'].update(scale=255),
                            "input has an unknown field 'scale'"),
    'exits a string': (lambda m: m.update(exits='exit1.onnx'), 'exits must be a list'),
    'no exits': (lambda m: m.update(exits=[]), 'exits must be a list of 1 to'),
    'exit a string': (lambda m: m['exits'].__setitem__(0, 'exit1.onnx'),
                      'exits[0] must be a JSON object, got a string'),
    'exit without file': (lambda m: m['exits'][0].pop('file') and None,
                          "exits[0] has no field 'file'"),
    'exit file a number': (_set_exit(0, file=1), 'exits[0].file is 1'),
    'exit numbered wrong': (_set_exit(0, number=5), 'exits[0].number is 5'),
    'outputs not strings': (_set_exit(0, outputs=[1]), 'exits[0].outputs must be a list'),
    'unknown measure': (lambda m: m.update(measure='confidence'),
                        "measure is 'confidence'; expected one of entropy, maxprob, margin"),
    'measure a list': (lambda m: m.update(measure=['entropy']), "measure is ['entropy']"),
    'thresholds a string': (lambda m: m.update(thresholds='high'),
                            'thresholds must be a list or null, got a string'),
    'input null': (lambda m: m.update(input=None), 'input must be a JSON object, got null'),
    'no input shape': (lambda m: m['input'].pop('shape') and None,
                       "input has no field 'shape'"),
    'negative input shape': (lambda m: m['input'].update(shape=[1, 8, -8]),
                             'input.shape is [1, 8, -8]'),
    'input shape a string': (lambda m: m['input'].update(shape='1x8x8'), 'input.shape'),
    'input dtype': (lambda m: m['input'].update(dtype='uint8'), "input.dtype is 'uint8'"),
    'format': (lambda m: m.update(format='other'), 'not a BranchyNet bundle manifest'),
    'newer format': (lambda m: m.update(format_version=2), 'format_version is 2'),
    'format version a string': (lambda m: m.update(format_version='1'),
                                "format_version is '1'"),
    'num_classes': (lambda m: m.update(num_classes='ten'), "num_classes is 'ten'"),
    'version a list': (lambda m: m.update(version=[1]), 'version must be a string or null'),
    'files not strings': (lambda m: m.update(files=[1]), 'files must be a list of strings'),
    'a list': (lambda m: [], 'must be a JSON object, got a list'),
    'main outside': (lambda m: m.update(main='../main.onnx'), "main is '../main.onnx'"),
}


@pytest.mark.parametrize('case', sorted(MANIFESTS))
def test_a_manifest_it_cannot_read_is_refused_naming_the_field(bundle, tmp_path, case):
    """Before: KeyError or TypeError tracebacks, or (unknown fields, a wrong
    input dtype, an exit numbered wrong) silently accepted."""
    change, fragment = MANIFESTS[case]
    _, directory, x = bundle
    edit_manifest(directory, change)
    refused(lambda: deploy.load_bundle(directory), 'manifest.json', fragment)
    numpy.save(tmp_path / 'in.npy', x)
    cli_refused(directory, ['in.npy', 'out.npz'], tmp_path, fragment)


@pytest.mark.parametrize('content, fragment', [
    (b'[' * 100000 + b']' * 100000, 'nested too deeply'),
    (b'{"format": ', 'not valid JSON'),
    (b'\xff\xfe{}', 'not valid JSON'),
    (b'{"format_version": ' + b'9' * 5000 + b'}', 'not valid JSON'),
    (b' ' * (4 << 20), 'larger than'),  # 4 MiB: more than MAX_MANIFEST_BYTES
], ids=['deep', 'cut short', 'not utf-8', 'long integer', 'too large'])
def test_a_manifest_that_is_no_json_it_can_read_is_refused(bundle, tmp_path, content,
                                                           fragment):
    """Before: a 100,000-deep manifest raised RecursionError."""
    _, directory, x = bundle
    (directory / 'manifest.json').write_bytes(content)
    refused(lambda: deploy.load_bundle(directory), 'manifest.json', fragment)
    numpy.save(tmp_path / 'in.npy', x)
    cli_refused(directory, ['in.npy', 'out.npz'], tmp_path, fragment)


# ------------------------------------------------------------------ graphs
@pytest.mark.parametrize('where', ['relative', 'absolute'])
def test_graph_names_outside_the_folder_are_refused(bundle, tmp_path, where):
    """Before: ``../elsewhere/exit1.onnx`` and absolute paths were loaded."""
    _, directory, x = bundle
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    shutil.copy(directory / 'exit1.onnx', elsewhere / 'exit1.onnx')
    name = '../elsewhere/exit1.onnx' if where == 'relative' else str(elsewhere / 'exit1.onnx')
    edit_manifest(directory, _set_exit(0, file=name))
    refused(lambda: deploy.load_bundle(directory), 'exits[0].file', 'no folder')
    numpy.save(tmp_path / 'in.npy', x)
    cli_refused(directory, ['in.npy', 'out.npz'], tmp_path, 'exits[0].file')


def test_a_damaged_graph_is_refused_in_one_line(bundle, tmp_path):
    """Before: ONNX Runtime's traceback."""
    _, directory, x = bundle
    data = (directory / 'exit2.onnx').read_bytes()
    (directory / 'exit2.onnx').write_bytes(data[:len(data) // 2])
    refused(lambda: deploy.load_bundle(directory), 'exit2.onnx',
            'not a graph ONNX Runtime can load')
    numpy.save(tmp_path / 'in.npy', x)
    cli_refused(directory, ['in.npy', 'out.npz'], tmp_path, 'exit2.onnx')


def test_graphs_that_do_not_fit_each_other_are_refused_in_one_line(bundle, tmp_path):
    """The last exit's graph in place of the first: one output (no
    features); the second exit's graph in place of the first: refused when
    run, naming the graph. Before: an IndexError or ONNX Runtime traceback."""
    _, directory, x = bundle
    shutil.copy(directory / 'exit3.onnx', directory / 'exit1.onnx')
    refused(lambda: deploy.load_bundle(directory), 'exit1.onnx', 'logits and features')
    shutil.copy(directory / 'exit2.onnx', directory / 'exit1.onnx')
    loaded = deploy.load_bundle(directory)
    refused(lambda: loaded.predict(x), 'exit1.onnx', 'could not be run')
    numpy.save(tmp_path / 'in.npy', x)
    cli_refused(directory, ['in.npy', 'out.npz'], tmp_path, 'exit1.onnx')


def test_a_folder_or_missing_file_as_a_graph_is_refused(bundle):
    _, directory, _ = bundle
    os.remove(directory / 'exit2.onnx')
    refused(lambda: deploy.load_bundle(directory), 'exit2.onnx')
    os.mkdir(directory / 'exit2.onnx')
    refused(lambda: deploy.load_bundle(directory), 'exit2.onnx', 'not a regular file')


def _returns_within(seconds, call, fifo):
    """``call()``'s exception or result, failing (instead of hanging) when
    it does not return in ``seconds``; a reader blocked on ``fifo`` is then
    released by opening its writing end."""
    out = []

    def run():
        try:
            out.append(call())
        except BaseException as e:
            out.append(e)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        os.close(os.open(str(fifo), os.O_WRONLY | os.O_NONBLOCK))
        t.join(10)
        pytest.fail('still reading {} after {} s'.format(fifo, seconds))
    return out[0]


@pytest.mark.skipif(not hasattr(os, 'mkfifo'), reason='no FIFOs here')
@pytest.mark.parametrize('name', ['exit1.onnx', 'manifest.json'])
def test_a_fifo_in_place_of_a_file_is_refused_without_waiting(bundle, tmp_path, name):
    """Before: opening it waited for a writer forever."""
    _, directory, x = bundle
    os.remove(directory / name)
    os.mkfifo(directory / name)
    e = _returns_within(30, lambda: deploy.load_bundle(directory), directory / name)
    assert isinstance(e, ValueError) and 'not a regular file' in str(e), e
    numpy.save(tmp_path / 'in.npy', x)
    cli_refused(directory, ['in.npy', 'out.npz'], tmp_path, name, 'not a regular file')


@pytest.mark.skipif(not hasattr(os, 'mkfifo'), reason='no FIFOs here')
def test_a_fifo_as_the_input_is_refused_without_waiting(bundle, tmp_path):
    _, directory, _ = bundle
    os.mkfifo(tmp_path / 'in.npy')
    cli_refused(directory, ['in.npy', 'out.npz'], tmp_path, 'in.npy', 'not a regular file')


# -------------------------------------------------------------- predict.py
def test_predict_py_imports_no_module_from_the_bundle_folder(bundle, tmp_path):
    """``python DIR/predict.py``: the script's folder is first on sys.path, so a
    planted json.py or numpy/ was imported. Now the folder leaves sys.path
    before any import."""
    net, directory, x = bundle
    (directory / 'json.py').write_text('raise RuntimeError("planted json.py imported")\n')
    (directory / 'numpy').mkdir()
    (directory / 'numpy' / '__init__.py').write_text(
        'raise RuntimeError("planted numpy imported")\n')
    numpy.save(tmp_path / 'in.npy', x)
    run = run_predict_py(directory, ['in.npy', 'out.npz'], tmp_path)
    assert run.returncode == 0, run.stderr
    assert 'planted' not in run.stderr
    with numpy.load(tmp_path / 'out.npz') as out:
        for a, b in zip((out['labels'], out['exits']), net.predict(x)):
            numpy.testing.assert_array_equal(a, b)
    # also run from inside the folder
    run = run_predict_py(directory, [str(tmp_path / 'in.npy'), str(tmp_path / 'o2.npz')],
                         directory)
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize('args, fragment', [
    (['--threads', 'many'], "invalid int value: 'many'"),
    (['--threads', '-2'], 'threads must be a non-negative integer'),
    (['--thresholds', '0.1,x'], "--thresholds must be comma-separated numbers"),
    ([], 'the following arguments are required'),
])
def test_predict_py_refuses_bad_options_in_one_line(bundle, tmp_path, args, fragment):
    _, directory, x = bundle
    numpy.save(tmp_path / 'in.npy', x)
    cli_refused(directory, (['in.npy', 'out.npz'] if args else []) + args, tmp_path,
                fragment)


def test_predict_py_refuses_an_output_it_cannot_write(bundle, tmp_path):
    _, directory, x = bundle
    numpy.save(tmp_path / 'in.npy', x)
    cli_refused(directory, ['in.npy', 'missing/out.npz'], tmp_path, 'cannot write',
                'missing/out.npz')
    assert sorted(os.listdir(tmp_path)) == ['bundle', 'in.npy']  # nothing half-written
