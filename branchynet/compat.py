"""Compatibility shims applied before chainer is imported.

Chainer 7.8.1 predates numpy 2, Python 3.12 and recent setuptools:

* numpy 2 removed ``numpy.sctypes``, which chainer reads at import time;
* chainer's environment check imports ``numpy.distutils.system_info``
  (for ``get_info``), which is gone under Python 3.12 / numpy 2 and fails to
  import beside setuptools >= 74 (no ``distutils.msvccompiler``);
* it also imports ``pkg_resources``, which setuptools >= 82 no longer ships
  (installing torch, for one, upgrades setuptools).

Each is restored here in a minimal form, only where it is missing or
broken. On the pinned set (Python 3.11, numpy 1.26, setuptools 73) nothing
is changed.
"""
import importlib.util
import sys
import types
import warnings

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


def _numpy_distutils_imports():
    try:
        if importlib.util.find_spec('numpy.distutils') is None:
            return False
    except (ImportError, ValueError):
        return False
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        try:
            import numpy.distutils.system_info  # noqa: F401
            return True
        except Exception:
            return False


def _stub_numpy_distutils():
    if _numpy_distutils_imports():
        return
    distutils_mod = types.ModuleType('numpy.distutils')
    system_info = types.ModuleType('numpy.distutils.system_info')
    system_info.get_info = lambda *args, **kwargs: {}
    distutils_mod.system_info = system_info
    sys.modules['numpy.distutils'] = distutils_mod
    sys.modules['numpy.distutils.system_info'] = system_info


def _stub_pkg_resources():
    """Enough of pkg_resources for chainer's optional-dependency check."""
    try:
        import pkg_resources  # noqa: F401
        return
    except Exception:
        pass
    import importlib.metadata as metadata
    import re
    mod = types.ModuleType('pkg_resources')

    class DistributionNotFound(Exception):
        pass

    class VersionConflict(Exception):
        pass

    def get_distribution(name):
        try:
            return types.SimpleNamespace(version=metadata.version(name))
        except metadata.PackageNotFoundError:
            raise DistributionNotFound(name) from None

    def require(requirement):
        name = re.match(r'[A-Za-z0-9_.\-]+', requirement).group(0)
        get_distribution(name)  # versions are not checked
        return []
    mod.DistributionNotFound = DistributionNotFound
    mod.VersionConflict = VersionConflict
    mod.get_distribution = get_distribution
    mod.require = require
    sys.modules['pkg_resources'] = mod


def apply():
    """Install the shims (idempotent)."""
    _restore_sctypes()
    _stub_numpy_distutils()
    _stub_pkg_resources()


apply()
