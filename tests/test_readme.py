"""The README's quick start runs as written, in the environment the README
says it runs in: its Python block, then its shell line running the bundle's
predict.py, whose answers are the model's.

That environment is the one ``./get_results.sh`` builds (``tools/ensure_env.sh``
with no extra: ``requirements/base.txt`` and this checkout) or the one the
README's install command gives (``tests/test_packaging.py`` builds that one
from the package index). The test suite itself runs with the test extras
(pytest, hypothesis, mpi4py, ...), so here the quick start runs in a
virtual environment holding only the distributions ``requirements/base.txt``
installs (linked, file by file, from this interpreter's site-packages) and
this checkout: a package the quick start needs beyond the base install
fails it, as it would for a newcomer.
"""
import importlib.metadata
import os
import re
import subprocess
import sys
import time

import numpy
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTION = '## Quick start'

#: Appended to the quick start's Python block: what it left behind, checked,
#: and the model's own answers for the bundle's samples, saved for the test.
CHECK = '''

# --- appended by tests/test_readme.py
assert len(result['thresholds']) == net.numexits() - 1
assert list(net.thresholdExits) == list(result['thresholds'])
_x = numpy.load('x.npy')
numpy.testing.assert_array_equal(_x, x_test[:len(_x)])
_labels, _exits = net.predict(_x)
numpy.savez('expected.npz', labels=_labels, exits=_exits)
'''


def quick_start_blocks():
    """``(python, shell)``: the fenced blocks of the README's quick start."""
    with open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as f:
        text = f.read()
    start = text.index(SECTION)
    end = text.find('\n## ', start + len(SECTION))
    section = text[start:end if end >= 0 else len(text)]
    blocks = dict(re.findall(r'^```(python|sh)\n(.*?)^```', section, re.M | re.S))
    return blocks['python'], blocks['sh']


def run_quick_start(bin_dir, workdir, env=None):
    """The quick start, verbatim, with ``bin_dir``'s ``python`` first on PATH:
    the Python block (with ``CHECK`` after it) run by that interpreter in
    ``workdir``, then the shell block run by the shell there; the bundle's
    answers are then compared with the model's. Returns the wall time (s)."""
    python, shell = quick_start_blocks()
    env = dict(os.environ if env is None else env)
    env.pop('PYTHONPATH', None)
    env['PATH'] = str(bin_dir) + os.pathsep + env.get('PATH', '')
    script = os.path.join(str(workdir), 'quick_start.py')
    with open(script, 'w', encoding='utf-8') as f:
        f.write(python + CHECK)
    start = time.perf_counter()
    run = subprocess.run(['python', script], cwd=str(workdir), env=env, capture_output=True,
                         text=True)
    assert run.returncode == 0, 'the quick start\'s Python block failed:\n' + run.stderr[-3000:]
    assert os.path.isfile(os.path.join(str(workdir), 'my_bundle', 'predict.py'))
    run = subprocess.run(shell, shell=True, cwd=str(workdir), env=env, capture_output=True,
                         text=True)
    seconds = time.perf_counter() - start
    assert run.returncode == 0, 'the quick start\'s shell line failed:\n' + run.stderr[-3000:]
    out_name = shell.split('#')[0].split()[-1]  # predict.py's output file
    with numpy.load(os.path.join(str(workdir), out_name)) as out, \
            numpy.load(os.path.join(str(workdir), 'expected.npz')) as want:
        numpy.testing.assert_array_equal(out['exits'], want['exits'])
        numpy.testing.assert_array_equal(out['labels'], want['labels'])
    return seconds


def base_distributions():
    """The installed distributions ``requirements/base.txt`` brings: its pins
    and, transitively, what they require (markers evaluated for this
    interpreter, extras never). ``{canonical name: Distribution}``."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    with open(os.path.join(ROOT, 'requirements', 'base.txt'), encoding='utf-8') as f:
        todo = [Requirement(line.split('#')[0].strip()).name for line in f
                if line.split('#')[0].strip()]
    found = {}
    while todo:
        name = canonicalize_name(todo.pop())
        if name in found:
            continue
        found[name] = importlib.metadata.distribution(name)
        for text in found[name].requires or ():
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({'extra': ''}):
                todo.append(req.name)
    return found


def base_environment(folder):
    """A virtual environment in ``folder`` with only the base install and this
    checkout (see the module doc); returns its ``bin`` folder."""
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(folder)], check=True)
    bin_dir = os.path.join(str(folder), 'bin')
    site = subprocess.run(
        [os.path.join(bin_dir, 'python'), '-c',
         'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
        check=True, capture_output=True, text=True).stdout.strip()
    for dist in base_distributions().values():
        for path in dist.files or ():
            if str(path).startswith('..'):  # scripts outside site-packages
                continue
            source, target = str(dist.locate_file(path)), os.path.join(site, str(path))
            if os.path.exists(source) and not os.path.lexists(target):
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.symlink(source, target)
    with open(os.path.join(site, 'branchynet_checkout.pth'), 'w') as f:
        f.write(ROOT + '\n')
    return bin_dir


def test_base_environment_lacks_what_the_base_install_lacks(tmp_path):
    """The stand-in holds the base set, not the test extras."""
    bin_dir = base_environment(tmp_path / 'venv')
    probe = ('import importlib.util as u; '
             'print(" ".join(m for m in ("numpy", "chainer", "numba", "onnxruntime", "onnx", '
             '"pytest", "hypothesis", "mpi4py") if u.find_spec(m)))')
    found = subprocess.run([os.path.join(bin_dir, 'python'), '-c', probe], check=True,
                           capture_output=True, text=True).stdout.split()
    assert found == ['numpy', 'chainer', 'numba', 'onnxruntime', 'onnx']


@pytest.mark.slow
@pytest.mark.network
def test_quick_start_runs_in_the_base_install_and_its_bundle_answers_as_the_model(tmp_path):
    bin_dir = base_environment(tmp_path / 'venv')
    work = tmp_path / 'work'
    work.mkdir()  # it writes my_bundle/ and x.npy where it runs
    seconds = run_quick_start(bin_dir, work)
    print('quick start: {:.0f} s in the base install'.format(seconds))
