"""The package's plan (docs/architecture.md), checked from the code's own imports.

Every module of ``branchynet/`` belongs to a unit: a sub-package
(``engines``, ``measures``, ...) or a module directly in ``branchynet/``.
Each unit has a floor (``FLOORS``); a module may import modules of its own
unit or of units on lower floors, never a unit on its own floor or above.
Imports inside functions count too. The package root (``import branchynet``,
which every import runs first) and the bundled ``datasets``/``networks``
folders are not units.
"""
import ast
import os

from tests.helpers import ROOT

PACKAGE = os.path.join(ROOT, 'branchynet')

#: unit -> floor; the same floor: units that must not import each other
FLOORS = {
    'compat': 0, 'bundled': 0, 'validation': 0, 'augment': 0, 'jit': 0,
    'measures': 1, 'devices': 1, 'links': 1,
    'io': 2, 'functions': 2, 'optimizers': 2,
    'progress': 3,
    'engines': 4,
    'evaluation': 5,
    'net': 6, 'reporting': 6,
    'training': 7,
    'utils': 8, 'visualize': 8, 'placement': 8,
    'driver': 9,
    'experiment': 10, 'report': 10,
}
MAX_LINES = 600
MAX_TOP_MODULES = 15
EXTERNAL = ('branchynet.datasets', 'branchynet.networks')


def _modules():
    """{dotted name: path} of every module under branchynet/."""
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith('.py'):
                path = os.path.join(folder, f)
                rel = os.path.relpath(path, ROOT)[:-3].split(os.sep)
                if rel[-1] == '__init__':
                    rel = rel[:-1]
                found['.'.join(rel)] = path
    return found


MODULES = _modules()


def _imports(path):
    """The branchynet modules that the file at ``path`` imports (anywhere in it)."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + ['{}.{}'.format(node.module, a.name) for a in node.names]
        else:
            continue
        for name in names:
            if name.startswith(EXTERNAL):
                continue
            while name and name not in MODULES:  # a name inside a module: the module
                name = name.rpartition('.')[0]
            if name and name != 'branchynet':
                out.add(name)
    return out


def unit(module):
    """``branchynet.engines.numba.engine`` -> ``engines``; ``branchynet.net`` -> ``net``."""
    return module.split('.')[1]


def test_every_module_has_a_floor():
    assert sorted({unit(m) for m in MODULES if m != 'branchynet'} - set(FLOORS)) == []


def test_imports_run_only_downwards():
    wrong = []
    for module, path in sorted(MODULES.items()):
        if module == 'branchynet':
            continue
        for target in sorted(_imports(path)):
            a, b = unit(module), unit(target)
            if a != b and FLOORS[b] >= FLOORS[a]:
                wrong.append('{} (floor {}) imports {} (floor {})'.format(
                    module, FLOORS[a], target, FLOORS[b]))
    assert wrong == []


def test_no_import_circle_between_modules():
    graph = {m: _imports(p) - {m} for m, p in MODULES.items() if m != 'branchynet'}
    state, circles = {}, []

    def visit(m, stack):
        state[m] = 'open'
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 'open':
                circles.append(' -> '.join(stack[stack.index(n):] + [n]))
            elif n not in state:
                visit(n, stack + [n])
        state[m] = 'done'

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert circles == []


def test_no_module_over_600_lines():
    long = {}
    for module, path in MODULES.items():
        with open(path) as f:
            n = sum(1 for _ in f)
        if n > MAX_LINES:
            long[module] = n
    assert long == {}


def test_at_most_15_modules_directly_in_the_package():
    top = sorted(f for f in os.listdir(PACKAGE) if f.endswith('.py'))
    assert len(top) <= MAX_TOP_MODULES, top


def test_the_original_module_paths_stay():
    for name in ('net', 'utils', 'visualize', 'augment', 'functions', 'links',
                 'links.links', 'links.resnet'):
        assert 'branchynet.' + name in MODULES, name
