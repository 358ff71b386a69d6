"""The numba cache runs no code it cannot trust.

numba reads its cached machine code (``__pycache__/*.nbi``) with ``pickle``.
Before the fix a pickle planted in a cache folder that other users may write
ran ``os.system`` when ``NumbaBranchyNet(net)`` was built, without a warning.
"""
import os
import pickle
import shutil
import subprocess
import sys
import textwrap

import numpy
import pytest

pytest.importorskip('numba')
from branchynet.engines import numba as numbapath  # noqa: E402
from branchynet.engines.numba import cache as numba_cache  # noqa: E402
from tests.helpers import make_three_exit_net  # noqa: E402

from tests.helpers import ROOT  # noqa: E402

BUILD = textwrap.dedent('''
    import sys, warnings
    sys.path.insert(0, {root!r})
    from tests.helpers import make_three_exit_net
    from branchynet.engines import numba as numbapath
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        numbapath.NumbaBranchyNet(make_three_exit_net())
    print('WARNINGS:', [str(w.message) for w in caught if 'numba cache' in str(w.message)])
''')


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, ('touch {}'.format(self.marker),))


def _build(folder):
    env = dict(os.environ, BRANCHYNET_NUMBA_CACHE=str(folder))
    env.pop('NUMBA_CACHE_DIR', None)
    return subprocess.run([sys.executable, '-c', BUILD.format(root=ROOT)], env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope='module')
def compiled_cache(tmp_path_factory):
    """A cache folder holding the machine code of ``make_three_exit_net``."""
    folder = tmp_path_factory.mktemp('numba_cache') / 'cache'
    done = _build(folder)
    assert done.returncode == 0, done.stderr
    assert "WARNINGS: []" in done.stdout, done.stdout
    assert list((folder / '__pycache__').glob('*.nbi'))
    return folder


def _planted(compiled_cache, tmp_path):
    """A copy of the cache with every index file replaced by a pickle that
    creates ``marker`` when loaded."""
    folder = tmp_path / 'cache'
    shutil.copytree(compiled_cache, folder)
    marker = tmp_path / 'code-ran'
    for index in (folder / '__pycache__').glob('*.nbi'):
        index.write_bytes(pickle.dumps(_Payload(marker)))
    return folder, marker


@pytest.mark.slow
def test_a_cache_folder_others_may_write_is_not_loaded(compiled_cache, tmp_path):
    folder, marker = _planted(compiled_cache, tmp_path)
    os.chmod(folder / '__pycache__', 0o777)
    done = _build(folder)
    assert done.returncode == 0, done.stderr
    assert not marker.exists(), 'code planted in the cache ran'
    assert 'is writable by other users' in done.stdout


@pytest.mark.slow
def test_a_cache_file_others_may_write_is_not_loaded(compiled_cache, tmp_path):
    folder, marker = _planted(compiled_cache, tmp_path)
    for index in (folder / '__pycache__').glob('*.nbi'):
        os.chmod(index, 0o666)
    done = _build(folder)
    assert not marker.exists(), 'code planted in the cache ran'
    assert 'is writable by other users' in done.stdout


def test_a_cache_of_another_user_is_refused_and_the_answers_stay_right(
        compiled_cache, tmp_path, monkeypatch):
    """Owner check (simulated: the current user id is made to differ), then the
    in-memory compile gives ``predict``'s answers and reads nothing from disk."""
    folder, marker = _planted(compiled_cache, tmp_path)
    monkeypatch.setenv('BRANCHYNET_NUMBA_CACHE', str(folder))
    monkeypatch.setattr(numba_cache, '_current_uid', lambda: os.getuid() + 1)
    net = make_three_exit_net()
    with pytest.warns(RuntimeWarning, match='belongs to user id .* not to the current user'):
        engine = numbapath.NumbaBranchyNet(net)
    assert not marker.exists()
    x = numpy.random.RandomState(0).rand(30, 1, 8, 8).astype(numpy.float32)
    for ts in ([0.0, 0.0], [10.0, 0.0], [0.3, 0.3]):
        for got, want in zip(engine.predict(x, ts), net.predict(x, ts)):
            numpy.testing.assert_array_equal(got, want)


def test_a_symlinked_cache_folder_is_refused(compiled_cache, tmp_path):
    link = tmp_path / 'link'
    link.symlink_to(compiled_cache)
    reason = numbapath.untrusted_cache(str(link), 'branchynet_numba_x')
    assert reason is not None and 'symbolic link' in reason


def test_a_private_cache_is_trusted(compiled_cache):
    name = [p.name for p in compiled_cache.glob('branchynet_numba_*.py')][0][:-3]
    assert numbapath.untrusted_cache(str(compiled_cache), name) is None


@pytest.mark.parametrize('kind', ['deep', 'fifo', 'zero'])
def test_a_kernel_choices_file_that_is_no_record_is_one_warning(tmp_path, kind):
    """A 100,000-deep JSON, a FIFO and a link to /dev/zero as
    kernel_choices.json: a warning and an empty record, not a RecursionError,
    a hang, or memory exhausted (capped here at 1 GiB more)."""
    from tests.helpers import run_python, untrusted_record
    folder = tmp_path / 'cache'
    folder.mkdir(mode=0o700)
    untrusted_record(folder / 'kernel_choices.json', kind)
    done = run_python(textwrap.dedent('''
        import warnings
        from branchynet.engines.numba import cache
        from tests.helpers import limit_memory
        cache.require_numba(), cache.processor()
        limit_memory()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            entries = cache.ChoiceCache().entries
        print(entries, [str(w.message) for w in caught])
    '''), env={'BRANCHYNET_NUMBA_CACHE': str(folder)}, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("{} ['numba cache: ") and \
        'kernel_choices.json is not a record of kernel times' in done.stdout
