"""``branchynet.datasets`` and ``branchynet.networks``, installed or in a checkout.

An installed copy holds the data loaders and the paper's networks as the
subpackages ``branchynet.datasets`` and ``branchynet.networks`` (``setup.py``
maps the top-level folders ``datasets/`` and ``networks/`` there), so it puts
no top-level ``datasets`` package into site-packages beside the widely used
one of that name. A checkout keeps the folders at the top, where the
original's scripts import them as ``datasets`` and ``networks``; there
``alias_checkout()`` makes each pair of names one module object
(``branchynet.datasets.mnist is datasets.mnist``), so a patched function or an
exception class is the same whichever name reached it.
"""
import importlib
import importlib.abc
import importlib.util
import os
import sys

#: the top-level folders that install as subpackages of ``branchynet``
NAMES = ('datasets', 'networks')
#: the folder holding ``branchynet/``: the checkout's root, or site-packages
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def in_checkout(root=ROOT):
    """True when ``branchynet/`` sits in a source checkout (beside
    ``pyproject.toml`` and the ``datasets/`` and ``networks/`` folders)."""
    return os.path.isfile(os.path.join(root, 'pyproject.toml')) and all(
        os.path.isfile(os.path.join(root, name, '__init__.py')) for name in NAMES)


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports ``branchynet.<name>[.sub]`` as the checkout's ``<name>[.sub]``."""

    PREFIX = 'branchynet.'

    def __init__(self, names):
        self.names = tuple(names)
        self._specs = {}

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith(self.PREFIX):
            return None
        real = fullname[len(self.PREFIX):]
        if real.partition('.')[0] not in self.names:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        module = importlib.import_module(spec.name[len(self.PREFIX):])
        self._specs[spec.name] = module.__spec__
        return module

    def exec_module(self, module):
        # the import system set __spec__ to the alias's: give the module its own back
        for name, spec in list(self._specs.items()):
            if spec is not None and spec.name == module.__name__:
                module.__spec__ = self._specs.pop(name)


def checkout_names(root=ROOT):
    """The names of ``NAMES`` that import as this checkout's folders (none
    outside a checkout, or where another package of that name comes first)."""
    if not in_checkout(root):
        return ()
    found = []
    for name in NAMES:
        spec = importlib.util.find_spec(name) if name not in sys.modules else \
            sys.modules[name].__spec__
        origin = getattr(spec, 'origin', None)
        if origin and os.path.abspath(origin) == os.path.join(root, name, '__init__.py'):
            found.append(name)
    return tuple(found)


def alias_checkout():
    """In a checkout, make ``branchynet.datasets``/``branchynet.networks`` the
    top-level ``datasets``/``networks`` (done once, on ``import branchynet``).
    An installed copy has the real subpackages; an editable install used from
    another folder, where the top-level names do not import, loads the folders
    under the ``branchynet.`` names alone."""
    if any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        return
    names = checkout_names()
    if names:
        sys.meta_path.insert(0, _AliasFinder(names))
