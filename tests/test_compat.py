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
