"""The driver on a network of one's own: ``--network PATH.py:FUNCTION`` (and
``package.module:FUNCTION``) on a user's npz, run as a user would, in a
subprocess from a folder holding their files."""
import json
import os
import subprocess
import sys
import textwrap

import numpy
import pytest

from branchynet.driver import run as experiment, netspec
from branchynet.validation import InvalidValue

from tests.helpers import ROOT  # noqa: E402

USER_NET = textwrap.dedent('''
    import chainer.functions as F
    import chainer.links as L
    from branchynet import FL, Branch, BranchyNet


    def small_net():
        """Two convolutions with BatchNorm, one early exit; 1x12x12 images, 3 classes."""
        return BranchyNet([
            L.Convolution2D(1, 4, 3, pad=1), L.BatchNormalization(4), FL(F.relu),
            Branch([FL(F.max_pooling_2d, 2, 2), L.Linear(4 * 6 * 6, 3)]),
            FL(F.max_pooling_2d, 2, 2),
            L.Convolution2D(4, 8, 3, pad=1), L.BatchNormalization(8), FL(F.relu),
            L.Linear(8 * 6 * 6, 16), FL(F.relu),
            Branch([L.Linear(16, 3)]),
        ], input_shape=(1, 12, 12))


    def not_a_net():
        return [1, 2]


    def broken():
        raise RuntimeError('cannot build')
''')


HOSTILE_NET = USER_NET + textwrap.dedent('''
    import sys


    def exits():
        sys.exit(0)


    def no_shape():
        return BranchyNet([L.Linear(None, 3), Branch([L.Linear(3, 3)]),
                           L.Linear(3, 3), Branch([L.Linear(3, 3)])])


    globals()['../../escaped_name'] = small_net
''')


def _user_data(path, seed=0):
    rng = numpy.random.RandomState(seed)

    def make(n):
        y = rng.randint(0, 3, n).astype(numpy.int32)
        x = (rng.randn(n, 1, 12, 12) * 0.5).astype(numpy.float32)
        for c in range(3):
            x[y == c, 0, 4 * c:4 * c + 4, :] += 1.0
        return x, y
    (a, b), (c, d) = make(500), make(150)
    numpy.savez(path, train_x=a, train_y=b, test_x=c, test_y=d)


@pytest.fixture(scope='module')
def user_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp('user')
    (folder / 'mynet.py').write_text(USER_NET)
    (folder / 'hostile.py').write_text(HOSTILE_NET)
    (folder / 'exitmod.py').write_text('import sys\nsys.exit(0)\n')
    (folder / 'userpkg').mkdir()
    (folder / 'userpkg' / '__init__.py').write_text('')
    (folder / 'userpkg' / 'nets.py').write_text(USER_NET)
    _user_data(folder / 'mydata.npz')
    return folder


def driver(folder, *args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, '-m', 'branchynet.experiment', '--preset', 'tiny',
                           '--dataset', 'mydata.npz'] + list(args), cwd=str(folder), env=env,
                          capture_output=True, text=True, timeout=600)


def test_driver_runs_a_users_function_on_a_users_npz(user_dir):
    run = driver(user_dir, '--networks', 'mynet.py:small_net', '--out', 'out')
    assert run.returncode == 0, run.stderr[-3000:]
    out = user_dir / 'out'
    results = json.loads((out / '_results' / 'small_net_results.json').read_text())
    assert results['network'] == 'small_net' and results['title'] == 'small_net'
    assert results['config']['network_spec'] == 'mynet.py:small_net'
    grid = results['config']['thresholds']  # from the exits' entropy quantiles
    assert len(grid) >= 3 and grid == sorted(grid) and all(t > 0 for t in grid)
    rows = results['tables']['CPU']
    assert [r['Network'].split(' (')[0] for r in rows] == ['small_net', 'B-small_net',
                                                           'B-small_net']
    table1 = (out / '_results' / 'table1.md').read_text()
    assert '| small_net |' in table1 and '### small_net (small_net)' in table1
    for name in ('small_net_cpu_tradeoff.png', 'small_net_cpu_measures.png',
                 'small_net_entropy.png', 'small_net_training.png'):
        assert (out / '_figs' / name).exists(), name
    assert (out / '_results' / 'small_net_cpu_calibration.md').exists()
    assert (out / '_models' / 'small_net.npz').exists()

    # --resume continues from its snapshots; --init times the saved weights
    run = driver(user_dir, '--network', 'mynet.py:small_net', '--out', 'out', '--resume')
    assert run.returncode == 0, run.stderr[-3000:]
    run = driver(user_dir, '--network', 'userpkg.nets:small_net', '--out', 'out2', '--init',
                 'out/_models/small_net.npz', '--epochs-main', '0', '--epochs-joint', '0',
                 '--title', 'Mine')
    assert run.returncode == 0, run.stderr[-3000:]
    again = json.loads((user_dir / 'out2' / '_results' / 'small_net_results.json').read_text())
    assert again['title'] == 'Mine' and again['init'] == 'out/_models/small_net.npz'
    assert again['test']['exit_accs_after_joint'] == results['test']['exit_accs_after_joint']
    assert again['tables']['CPU'][0]['Network'] == 'Mine'


@pytest.mark.parametrize('spec, message', [
    ('missing.py:small_net', 'no such file missing.py'),
    ('mynet.py:nope', "mynet.py has no function 'nope' (it defines: broken, not_a_net, "
                      'small_net)'),
    ('mynet.py:not_a_net', 'not_a_net() returned a list, expected a BranchyNet'),
    ('mynet.py:broken', 'calling broken() failed: RuntimeError: cannot build'),
    ('mynet.py', 'mynet.py:FUNCTION'),
    ('nosuchpkg.mod:fn', "cannot import nosuchpkg.mod (No module named 'nosuchpkg')"),
    # user code ending the program: not the driver's exit at status 0, silently
    ('hostile.py:exits', 'calling exits() called sys.exit(0); it must return a BranchyNet'),
    ('exitmod.py:f', 'importing exitmod.py called sys.exit(0)'),
    # no input_shape: refused before training, not a traceback after it
    ('hostile.py:no_shape', 'without input_shape; pass input_shape=(C, H, W)'),
    # a name that would put files outside --out
    ('hostile.py:../../escaped_name', "FUNCTION must be a Python name (letters, digits and _; "
                                      "it names the files in --out), got '../../escaped_name'"),
])
def test_bad_network_specs_are_one_line_and_exit_2(user_dir, spec, message):
    run = driver(user_dir, '--network', spec, '--out', 'bad')
    assert run.returncode == 2
    assert run.stderr.count('\n') == 1 and message in run.stderr, run.stderr
    assert not (user_dir / 'bad').exists()


def test_nothing_is_written_outside_out_for_an_escaping_name(user_dir):
    run = driver(user_dir, '--network', 'hostile.py:../../escaped_name', '--out', 'o/a/b')
    assert run.returncode == 2
    assert not list(user_dir.glob('o/**/escaped_name*')) and not (user_dir / 'o').exists()


def test_snapshots_record_the_networks_source_file_and_hash(user_dir, monkeypatch, tmp_path):
    import hashlib
    monkeypatch.chdir(user_dir)
    seen = {}

    def train_exits(net, x, y, settings=None, **kwargs):
        seen.update(settings)
        raise KeyboardInterrupt  # stop the run here
    monkeypatch.setattr(experiment.training, 'train_exits', train_exits)
    with pytest.raises(KeyboardInterrupt):
        experiment.run('mynet.py:small_net', 'tiny', out_dir=str(tmp_path / 'out'),
                       overrides={'dataset_path': 'mydata.npz'}, time_devices=['cpu'])
    source = user_dir / 'mynet.py'
    assert seen['network_source'] == {'file': str(source),
                                      'sha256': hashlib.sha256(source.read_bytes()).hexdigest()}


def test_a_users_function_needs_a_dataset(user_dir, monkeypatch):
    monkeypatch.chdir(user_dir)
    with pytest.raises(InvalidValue, match='needs --dataset'):
        experiment.resolve_config('mynet.py:small_net', 'tiny')


def test_an_experiment_dict_beside_the_function_overrides_the_defaults(tmp_path, monkeypatch):
    (tmp_path / 'withcfg.py').write_text(USER_NET + textwrap.dedent('''
        EXPERIMENT = {'title': 'Small', 'dataset': 'mnist', 'thresholds': [0.1, 1.0],
                      'presets': {'tiny': {'n_train': 50}, 'mine': {'epochs_main': 7}}}
    '''))
    monkeypatch.chdir(tmp_path)
    module, config = experiment.resolve_config('withcfg.py:small_net', 'tiny')
    assert config['title'] == 'Small' and config['thresholds'] == [0.1, 1.0]
    assert config['n_train'] == 50 and config['epochs_joint'] == 1  # the default's, kept
    assert experiment.resolve_config('withcfg.py:small_net', 'mine')[1]['epochs_main'] == 7
    assert netspec.short_name('withcfg.py:small_net') == 'small_net'
    assert type(module.get_network()).__name__ == 'BranchyNet'


def test_default_grid_spans_each_exits_scores():
    from tests.helpers import make_three_exit_net
    net = make_three_exit_net()
    x = numpy.random.RandomState(0).randn(80, 1, 8, 8).astype(numpy.float32)
    grid = experiment.default_threshold_grid(net, x)
    ent = experiment.screening.exit_outputs(net, x)[0]
    for n in range(2):  # values inside every early exit's score range
        assert any(ent[:, n].min() < t < ent[:, n].max() for t in grid)
    assert grid == sorted(set(grid))
    net.confidence = 'maxprob'
    assert all(0 <= t <= 1 for t in experiment.default_threshold_grid(net, x))
