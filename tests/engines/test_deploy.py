"""Deployable bundles: ONNX graphs, a manifest and a predict.py that runs
without Chainer, deciding exits exactly as ``BranchyNet.predict``."""
import json
import os
import subprocess
import sys
import textwrap

import numpy
import pytest

pytest.importorskip('onnxruntime')
pytest.importorskip('onnx')

from branchynet import __version__  # noqa: E402
from branchynet.engines import deploy  # noqa: E402
from branchynet.measures import confidence  # noqa: E402
from branchynet.validation import InvalidValue  # noqa: E402
from tests.helpers import make_three_exit_net  # noqa: E402


def _data(n, seed):
    rng = numpy.random.RandomState(seed)
    x = rng.randn(n, 1, 8, 8).astype(numpy.float32)
    y = (x[:, 0, :4].sum(axis=(1, 2)) > 0).astype(numpy.int32)
    return x, y


@pytest.fixture(scope='module')
def trained():
    net = make_three_exit_net(seed=4)
    x, y = _data(400, 5)
    for _ in range(30):
        net.train(x, y)
    return net


def spreading_thresholds(net, x, measure):
    """Thresholds (between two samples' scores, far from ties) with which
    about a third of ``x`` leaves at each exit."""
    scores = [confidence.get_measure(measure).scores(z) for z in net.get_logits(x)[:-1]]
    ts, stay = [], numpy.ones(len(x), bool)
    for n, s in enumerate(scores):
        values = numpy.sort(s[stay])
        k = len(values) // (len(scores) + 1 - n)
        limit = (values[k - 1] + values[k]) / 2
        ts.append(float(confidence.get_measure(measure).limit(limit)))
        stay &= s >= limit
    return ts


@pytest.fixture
def bundle(tmp_path, trained):
    net = trained.copy(mode='copy')
    x, _ = _data(90, 6)
    net.thresholdExits = spreading_thresholds(net, x, 'entropy')
    directory = tmp_path / 'bundle'
    deploy.save_bundle(net, directory)
    return net, directory, x


def test_bundle_files_and_manifest(bundle):
    net, directory, _ = bundle
    names = sorted(os.listdir(directory))
    assert names == ['exit1.onnx', 'exit2.onnx', 'exit3.onnx', 'main.onnx', 'manifest.json',
                     'predict.py']
    with open(directory / 'manifest.json') as f:
        m = json.load(f)
    assert m['input'] == {'name': 'x', 'shape': [1, 8, 8], 'dtype': 'float32'}
    assert [e['file'] for e in m['exits']] == ['exit1.onnx', 'exit2.onnx', 'exit3.onnx']
    assert m['exits'][0]['outputs'] == ['logits', 'features']
    assert m['exits'][-1]['outputs'] == ['logits']
    assert m['measure'] == 'entropy' and m['thresholds'] == net.thresholdExits
    assert m['num_classes'] == 5 and m['version'] == __version__
    assert sorted(m['files']) == names
    assert m['commit'] is None or len(m['commit'].split('+')[0]) == 40


@pytest.mark.parametrize('measure', ['entropy', 'maxprob', 'margin'])
def test_loaded_bundle_predicts_as_the_model(tmp_path, trained, measure):
    net = trained.copy(mode='copy')
    x, _ = _data(90, 7)
    net.confidence = measure
    net.thresholdExits = spreading_thresholds(net, x, measure)
    labels, exits = net.predict(x)
    assert (numpy.bincount(exits, minlength=3) > 0).all()  # every exit takes samples
    deploy.save_bundle(net, tmp_path)
    loaded = deploy.load_bundle(tmp_path)
    for bs in (1, 7, 1024):
        got = loaded.predict(x, batchsize=bs)
        numpy.testing.assert_array_equal(got[0], labels)
        numpy.testing.assert_array_equal(got[1], exits)
    for a, b in zip(loaded.exit_logits(x), net.get_logits(x)):
        numpy.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


BLOCK_CHAINER = textwrap.dedent('''
    import builtins
    _real = builtins.__import__
    def _blocked(name, *args, **kwargs):
        if name.split('.')[0] in ('chainer', 'branchynet', 'cupy'):
            raise ImportError('blocked for this test: ' + name)
        return _real(name, *args, **kwargs)
    builtins.__import__ = _blocked
''')


def _without_chainer(tmp_path, args, cwd):
    """Run ``python args`` with imports of chainer and branchynet refused
    (a sitecustomize on PYTHONPATH) from ``cwd``."""
    shim = tmp_path / 'shim'
    shim.mkdir(exist_ok=True)
    (shim / 'sitecustomize.py').write_text(BLOCK_CHAINER)
    env = dict(os.environ, PYTHONPATH=str(shim))
    return subprocess.run([sys.executable] + args, cwd=str(cwd), env=env,
                          capture_output=True, text=True, timeout=120)


def test_predict_py_runs_without_chainer(tmp_path, bundle):
    net, directory, x = bundle
    labels, exits = net.predict(x)
    assert (numpy.bincount(exits, minlength=3) > 0).all()
    numpy.save(tmp_path / 'in.npy', x)
    check = _without_chainer(tmp_path, ['-c', 'import chainer'], tmp_path)
    assert check.returncode != 0 and 'blocked for this test' in check.stderr
    run = _without_chainer(tmp_path, [str(directory / 'predict.py'), 'in.npy', 'out.npz'],
                           tmp_path)
    assert run.returncode == 0, run.stderr
    assert 'per exit' in run.stdout
    with numpy.load(tmp_path / 'out.npz') as out:
        numpy.testing.assert_array_equal(out['labels'], labels)
        numpy.testing.assert_array_equal(out['exits'], exits)
    # as a module: predict(x) -> (labels, exits)
    code = ('import sys, numpy; sys.path.insert(0, {!r}); from predict import predict; '
            'l, e = predict(numpy.load("in.npy")); numpy.savez("mod.npz", l=l, e=e)'
            .format(str(directory)))
    run = _without_chainer(tmp_path, ['-c', code], tmp_path)
    assert run.returncode == 0, run.stderr
    with numpy.load(tmp_path / 'mod.npz') as out:
        numpy.testing.assert_array_equal(out['l'], labels)
        numpy.testing.assert_array_equal(out['e'], exits)


def test_predict_py_refuses_bad_input_in_one_line(tmp_path, bundle):
    _, directory, x = bundle
    numpy.save(tmp_path / 'bad.npy', x[:, :, :4])
    run = _without_chainer(tmp_path, [str(directory / 'predict.py'), 'bad.npy', 'o.npz'],
                           tmp_path)
    assert run.returncode == 2 and run.stderr.count('\n') == 1
    assert 'shape (N, 1, 8, 8)' in run.stderr
    run = _without_chainer(tmp_path, [str(directory / 'predict.py'), 'missing.npy', 'o.npz'],
                           tmp_path)
    assert run.returncode == 2 and 'missing.npy' in run.stderr


def test_folders_saved_with_exits_numbered_from_0_load_with_a_warning(tmp_path, bundle):
    net, directory, x = bundle
    os.remove(directory / 'manifest.json')
    for n in (1, 2, 3):  # the layout OnnxBranchyNet.save wrote before
        os.rename(directory / 'exit{}.onnx'.format(n), directory / 'exit{}.onnx'.format(n - 1))
    with pytest.warns(UserWarning, match='exit0.onnx'):
        old = deploy.load_bundle(directory)
    with pytest.raises(ValueError, match='no thresholds'):
        old.predict(x)
    for a, b in zip(old.predict(x, net.thresholdExits), net.predict(x)):
        numpy.testing.assert_array_equal(a, b)


def test_infinite_thresholds_are_strict_json(tmp_path, trained):
    net = trained.copy(mode='copy')
    net.thresholdExits = [float('inf'), 0.5]  # everybody leaves at exit 1
    deploy.save_bundle(net, tmp_path)
    text = (tmp_path / 'manifest.json').read_text()
    assert json.loads(text, parse_constant=pytest.fail)['thresholds'] == ['inf', 0.5]
    x, _ = _data(20, 8)
    labels, exits = deploy.load_bundle(tmp_path).predict(x)
    assert (exits == 0).all()
    numpy.testing.assert_array_equal(labels, net.predict(x)[0])


def test_bundles_need_an_input_shape_and_a_bundle_folder(tmp_path, trained):
    net = trained.copy(mode='copy')
    net.input_shape = None
    with pytest.raises(InvalidValue, match='input_shape'):
        deploy.save_bundle(net, tmp_path / 'b')
    with pytest.raises(InvalidValue, match='manifest.json'):
        deploy.load_bundle(tmp_path)
