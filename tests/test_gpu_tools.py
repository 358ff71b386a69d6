"""tools/gpu_run.sh, tools/gpu_wheelhouse.sh and ensure_env.sh's BRANCHYNET_PYTHON:
argument handling, clear refusals, the environment a command gets, and (slow,
where the stand-in image and the wheelhouse exist) the whole offline install."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(ROOT, 'tools', 'gpu_run.sh')


def _sh(*args, env=None, timeout=300):
    full = dict(os.environ)
    full.pop('BRANCHYNET_PYTHON', None)
    full.update(env or {})
    return subprocess.run(list(args), cwd=ROOT, capture_output=True, text=True, env=full,
                          timeout=timeout)


def test_gpu_run_needs_a_command():
    r = _sh(RUN)
    assert r.returncode == 2 and 'no command given' in r.stderr


def test_gpu_run_rejects_unknown_options_and_interpreters(tmp_path):
    r = _sh(RUN, '--frobnicate', 'true')
    assert r.returncode == 2 and "unknown option '--frobnicate'" in r.stderr
    r = _sh(RUN, '--python', str(tmp_path / 'nopython'), 'true')
    assert r.returncode == 2 and 'no interpreter' in r.stderr


def test_gpu_run_explains_a_missing_wheelhouse(tmp_path):
    r = _sh(RUN, '--wheelhouse', str(tmp_path), '--python', sys.executable, 'true')
    assert r.returncode == 2
    assert 'no chainer wheel' in r.stderr and 'tools/gpu_wheelhouse.sh' in r.stderr


def test_gpu_run_sets_up_the_command_environment(tmp_path):
    """With an interpreter that already has chainer 7.8.1 and dill (this
    one), nothing is installed and the command sees the interpreter as
    python, BRANCHYNET_PYTHON, and the checkout then the site on PYTHONPATH."""
    wheels = tmp_path / 'wheels'
    wheels.mkdir()
    # present but never installed: this interpreter has these very versions
    import chainer
    import dill
    (wheels / 'chainer-{}-py3-none-any.whl'.format(chainer.__version__)).write_bytes(b'')
    (wheels / 'dill-{}-py3-none-any.whl'.format(dill.__version__)).write_bytes(b'')
    site = tmp_path / 'site'
    probe = ('import os, sys, branchynet; print(sys.executable); '
             'print(os.environ["BRANCHYNET_PYTHON"]); print(os.environ["PYTHONPATH"]); '
             'import datasets, branchynet.datasets; print(branchynet.datasets is datasets)')
    r = _sh(RUN, '--wheelhouse', str(wheels), '--site', str(site), '--python', sys.executable,
            '--', 'python', '-c', probe, env={'PIP_NO_INDEX': '1'})
    assert r.returncode == 0, r.stderr
    assert 'installing offline' not in r.stderr  # nothing was missing
    exe, declared, path, same = r.stdout.split('\n')[:4]
    assert os.path.realpath(exe) == os.path.realpath(sys.executable)
    assert declared == sys.executable
    assert path.split(':')[:2] == [ROOT, str(site)]
    assert same == 'True'  # one module for both names, as in any checkout


def test_ensure_env_uses_branchynet_python_as_it_is(tmp_path):
    ensure = os.path.join(ROOT, 'tools', 'ensure_env.sh')
    r = _sh(ensure, 'test', env={'BRANCHYNET_PYTHON': sys.executable,
                                 'BRANCHYNET_VENV': str(tmp_path / 'never')})
    assert r.returncode == 0 and r.stdout.strip() == sys.executable
    assert not (tmp_path / 'never').exists()
    r = _sh(ensure, env={'BRANCHYNET_PYTHON': str(tmp_path / 'nopython')})
    assert r.returncode == 2 and 'is not an interpreter' in r.stderr


def test_gpu_wheelhouse_help_and_bad_options():
    script = os.path.join(ROOT, 'tools', 'gpu_wheelhouse.sh')
    r = _sh(script, '--help')
    assert r.returncode == 0 and 'Usage: tools/gpu_wheelhouse.sh' in r.stdout
    r = _sh(script, '--bogus')
    assert r.returncode == 2 and "unknown option '--bogus'" in r.stderr


MIMIC = os.path.join(ROOT, '.gpu_mimic', 'bin', 'python')
WHEEL = os.path.join(ROOT, '.whl', 'chainer-7.8.1-py3-none-any.whl')


@pytest.mark.slow
@pytest.mark.skipif(not (os.path.exists(MIMIC) and os.path.exists(WHEEL)
                         and os.path.isdir(os.path.join(ROOT, '.gpu_data', 'mnist'))),
                    reason='needs the stand-in image .gpu_mimic/, .whl/ and .gpu_data/ '
                           '(tools/gpu_offline_check.sh creates them, with PyPI access)')
def test_offline_install_into_the_stand_in_image_trains_and_predicts():
    """tools/gpu_offline_check.sh: offline install into Python 3.12 + numpy 2,
    then one training step and a prediction (tools/gpu_smoke.py)."""
    r = _sh(os.path.join(ROOT, 'tools', 'gpu_offline_check.sh'), timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'installing offline' in r.stderr and 'chainer-7.8.1' in r.stderr
    assert 'smoke test passed' in r.stdout
    assert 'python 3.12' in r.stdout and 'numpy 2.' in r.stdout
    # the carried MNIST folder stays gzipped (the loader unpacks a copy)
    assert all(n.endswith('.gz') for n in os.listdir(os.path.join(ROOT, '.gpu_data', 'mnist')))
