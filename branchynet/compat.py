"""Compatibility shims applied before chainer is imported.

Chainer 7.8.1 predates numpy 2 and Python 3.12:

* numpy 2 removed ``numpy.sctypes``, which chainer reads at import time;
* Python 3.12 has no ``numpy.distutils``, which chainer's CUDA probing
  imports (``numpy.distutils.system_info.get_info``).

Both are restored here in a minimal form. On the pinned set (Python 3.11,
numpy 1.26) nothing is changed.
"""
import importlib.util
import sys
import types

import numpy


def _restore_sctypes():
    if hasattr(numpy, 'sctypes'):
        try:
            numpy.sctypes  # numpy 2 raises AttributeError from __getattr__
            return
        except AttributeError:
            pass
    numpy.sctypes = {
        'int': [numpy.int8, numpy.int16, numpy.int32, numpy.int64],
        'uint': [numpy.uint8, numpy.uint16, numpy.uint32, numpy.uint64],
        'float': [numpy.float16, numpy.float32, numpy.float64],
        'complex': [numpy.complex64, numpy.complex128],
        'others': [bool, object, bytes, str, numpy.void],
    }


def _stub_numpy_distutils():
    try:
        if importlib.util.find_spec('numpy.distutils') is not None:
            return
    except (ImportError, ValueError):
        pass
    distutils_mod = types.ModuleType('numpy.distutils')
    system_info = types.ModuleType('numpy.distutils.system_info')
    system_info.get_info = lambda *args, **kwargs: {}
    distutils_mod.system_info = system_info
    sys.modules.setdefault('numpy.distutils', distutils_mod)
    sys.modules.setdefault('numpy.distutils.system_info', system_info)


def apply():
    """Install the shims (idempotent)."""
    _restore_sctypes()
    _stub_numpy_distutils()


apply()
