"""The shims that let chainer 7.8.1 import under numpy 2 and Python 3.12."""
import importlib.util
import sys

import numpy

from branchynet import compat


def test_sctypes_restored_when_missing(monkeypatch):
    monkeypatch.delattr(numpy, 'sctypes', raising=False)
    compat._restore_sctypes()
    assert numpy.float32 in numpy.sctypes['float']
    assert numpy.int64 in numpy.sctypes['int']


def test_numpy_distutils_stub_when_missing(monkeypatch):
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name: None)
    monkeypatch.delitem(sys.modules, 'numpy.distutils', raising=False)
    monkeypatch.delitem(sys.modules, 'numpy.distutils.system_info', raising=False)
    compat._stub_numpy_distutils()
    from numpy.distutils.system_info import get_info
    assert get_info('blas_opt') == {}


def test_pkg_resources_stub_when_setuptools_dropped_it(monkeypatch):
    monkeypatch.setitem(sys.modules, 'pkg_resources', None)  # import now fails
    compat._stub_pkg_resources()
    stub = sys.modules['pkg_resources']
    assert stub is not None
    assert stub.require('numpy>=1.0') == []
    assert stub.get_distribution('numpy').version == numpy.__version__
    try:
        stub.require('no-such-distribution-here>=1')
    except stub.DistributionNotFound:
        pass
    else:
        raise AssertionError('expected DistributionNotFound')


def test_chainer_imports_beside_setuptools_without_pkg_resources(tmp_path):
    """A fresh interpreter where pkg_resources and numpy.distutils are broken
    (as beside setuptools >= 82) still imports chainer through branchynet."""
    import subprocess
    (tmp_path / 'pkg_resources.py').write_text('raise ImportError("gone")\n')
    code = ('import sys; sys.path.insert(0, sys.argv[1]); import branchynet, chainer; '
            'print(chainer.__version__)')
    root = __import__('os').path.dirname(__import__('os').path.dirname(__file__))
    out = subprocess.run([sys.executable, '-c', code, str(tmp_path)], cwd=root,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '7.8.1'
