"""What ``pip install .`` puts into site-packages, the checkout's two names
for the bundled data and network code, and the README's install command on a
clean machine."""
import ast
import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import time

import pytest

import branchynet  # noqa: F401  (installs the checkout's aliases)
import datasets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: what a source distribution of the project holds (setup.py and pyproject.toml read these)
SOURCES = ('branchynet', 'datasets', 'networks', 'requirements', 'setup.py', 'pyproject.toml',
           'README.md')


def test_checkout_names_are_one_module_each():
    import branchynet.datasets.mnist
    import branchynet.networks.lenet_mnist
    import datasets.mnist
    import networks.lenet_mnist
    assert branchynet.datasets is datasets
    assert branchynet.datasets.mnist is datasets.mnist
    assert branchynet.networks.lenet_mnist is networks.lenet_mnist
    assert datasets.__spec__.name == 'datasets'  # the module keeps its own spec
    from branchynet.datasets import DataUnavailableError
    assert DataUnavailableError is datasets.DataUnavailableError
    assert networks.load('lenet_mnist') is networks.lenet_mnist


def test_checkout_data_stays_in_the_checkout(monkeypatch):
    monkeypatch.delenv('BRANCHYNET_DATA_DIR', raising=False)
    assert datasets.data_dir('mnist') == os.path.join(ROOT, 'datasets', 'data', 'mnist')


def _absolute_imports_of(path, names):
    """``(line, module)`` of every import in ``path`` of a top-level ``names`` package."""
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules = [node.module or '']
        else:
            continue
        found += [(node.lineno, m) for m in modules if m.split('.')[0] in names]
    return found


def test_installed_code_never_imports_the_top_level_names():
    """Installed, there is no top-level datasets/networks: the library and the
    bundled folders import them as branchynet.datasets/.networks (or relatively)."""
    files = glob.glob(os.path.join(ROOT, 'branchynet', '**', '*.py'), recursive=True) + \
        glob.glob(os.path.join(ROOT, 'datasets', '*.py')) + \
        glob.glob(os.path.join(ROOT, 'networks', '*.py'))
    bad = ['{}:{}: import {}'.format(os.path.relpath(p, ROOT), line, m)
           for p in sorted(files) for line, m in _absolute_imports_of(p, ('datasets', 'networks'))]
    assert not bad, 'use branchynet.datasets/.networks or a relative import:\n' + '\n'.join(bad)


def _copy_sources(dest, fake_data=True):
    """The checkout's sources without data, caches or build output, so that
    building writes nothing into the checkout (with ``fake_data``, a data file
    that must not be installed)."""
    ignore = shutil.ignore_patterns('__pycache__', '*.egg-info', 'build', 'data')
    for name in SOURCES:
        src = os.path.join(ROOT, name)
        if not os.path.exists(src):
            continue
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(dest, name), ignore=ignore)
        else:
            shutil.copy2(src, os.path.join(dest, name))
    if not fake_data:
        return
    # data that a checkout may hold must not be installed
    os.makedirs(os.path.join(dest, 'datasets', 'data', 'mnist'))
    with open(os.path.join(dest, 'datasets', 'data', 'mnist', 'train-images-idx3-ubyte.gz'),
              'wb') as f:
        f.write(b'not data')


@pytest.mark.slow
def test_pip_install_puts_only_branchynet_into_site_packages(tmp_path):
    src, venv, home = tmp_path / 'src', tmp_path / 'venv', tmp_path / 'home'
    src.mkdir()
    home.mkdir()
    _copy_sources(str(src))
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(venv)], check=True)
    python = str(venv / 'bin' / 'python')
    purelib = 'import sysconfig; print(sysconfig.get_paths()["purelib"])'
    site = subprocess.run([python, '-c', purelib], check=True, capture_output=True,
                          text=True).stdout.strip()
    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--no-index',
                    '--no-build-isolation', '--disable-pip-version-check', '--target', site,
                    str(src)], check=True, cwd=str(tmp_path))
    installed = sorted(os.listdir(site))
    assert 'branchynet' in installed
    assert not {'datasets', 'networks'} & set(installed), installed
    assert [n for n in installed if not n.startswith('branchynet')] == [], installed
    bundled = os.path.join(site, 'branchynet', 'datasets')
    assert os.path.isfile(os.path.join(bundled, 'mnist.py'))
    assert not os.path.exists(os.path.join(bundled, 'data'))
    assert os.path.isfile(os.path.join(site, 'branchynet', 'networks', 'resnet_cifar10.py'))
    # the dependencies (chainer, numpy...) from this interpreter's site-packages:
    # a plain path entry, so its .pth files (this checkout's editable install) do not run
    with open(os.path.join(site, 'deps.pth'), 'w') as f:
        f.write(sysconfig.get_paths()['purelib'] + '\n')
    check = textwrap.dedent('''
        import importlib.util, os, sys
        import branchynet
        site = sys.argv[1]
        assert branchynet.__file__.startswith(site), branchynet.__file__
        assert importlib.util.find_spec('datasets') is None
        assert importlib.util.find_spec('networks') is None
        from branchynet import networks
        from branchynet.datasets import data_dir, mnist, mnist32, npz, cifar10gcn, cifar100gcn
        import branchynet.links.resnet
        net = networks.load('lenet_mnist').get_network()
        assert type(net).__name__ == 'BranchyNet'
        folder = mnist.data_dir('mnist')
        assert not folder.startswith(site), folder
        assert folder == os.path.join(os.environ['HOME'], '.cache', 'branchynet', 'data',
                                      'mnist'), folder
        print('ok')
    ''')
    env = {k: v for k, v in os.environ.items()
           if k not in ('PYTHONPATH', 'BRANCHYNET_DATA_DIR', 'XDG_CACHE_HOME')}
    env['HOME'] = str(home)
    out = subprocess.run([python, '-c', check, site], cwd=str(tmp_path), env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == 'ok', out.stdout + out.stderr


INSTALL_SECTION = '## Installing as a package'


def install_command():
    """The first command of the README's install instructions."""
    with open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as f:
        text = f.read()
    start = text.index(INSTALL_SECTION)
    block = re.search(r'^```sh\n(.*?)^```', text[start:], re.M | re.S).group(1)
    lines = [line.split('#')[0].strip() for line in block.splitlines()]
    return [line for line in lines if line][0]


def _index_reachable(python, env, folder):
    """Whether pip reaches its package index (one small download)."""
    probe = subprocess.run([python, '-m', 'pip', 'download', '-q', '--no-deps', '-d', folder,
                            'setuptools==73.0.1'], env=env, capture_output=True, text=True)
    return probe.returncode == 0


@pytest.mark.slow
@pytest.mark.network
def test_readme_install_command_works_on_a_clean_machine(tmp_path):
    """The README's install command, verbatim, in a fresh virtual environment
    (the interpreter's own pip) with pip's cache off, so every package comes
    from the index and chainer 7.8.1 is built from source as on a clean
    machine; then the README's quick start runs in that environment."""
    from tests.test_readme import run_quick_start
    src, venv, work = tmp_path / 'src', tmp_path / 'venv', tmp_path / 'work'
    src.mkdir()
    work.mkdir()
    _copy_sources(str(src), fake_data=False)
    subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=True)
    bin_dir = str(venv / 'bin')
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PIP_CONSTRAINT',
                                                             'PIP_BUILD_CONSTRAINT')}
    env.update(PATH=bin_dir + os.pathsep + env.get('PATH', ''), VIRTUAL_ENV=str(venv),
               PIP_NO_CACHE_DIR='1',
               # MNIST from the checkout's folder: the download is not what is tested here
               BRANCHYNET_DATA_DIR=os.path.join(ROOT, 'datasets', 'data'))
    if not _index_reachable(os.path.join(bin_dir, 'python'), env, str(tmp_path / 'probe')):
        pytest.skip('the package index is not reachable from here')
    command = install_command()
    start = time.perf_counter()
    run = subprocess.run(command, shell=True, cwd=str(src), env=env, capture_output=True,
                         text=True)
    install_s = time.perf_counter() - start
    assert run.returncode == 0, '{} failed:\n{}'.format(command, run.stdout[-2000:] +
                                                        run.stderr[-3000:])
    seconds = run_quick_start(bin_dir, work, env)
    print('install: {:.0f} s ({}); quick start: {:.0f} s'.format(install_s, command, seconds))
