"""Every module path and public name the documentation shows exists.

Read from README.md and docs/*.md: the imports of each ```python block,
every dotted ``branchynet.…`` name (a module, or a name in one) and every
``branchynet/….py`` path.
"""
import ast
import glob
import importlib
import os
import re

import pytest

from tests.helpers import ROOT

DOCS = [os.path.join(ROOT, 'README.md')] + sorted(glob.glob(os.path.join(ROOT, 'docs', '*.md')))
#: what a ```python block may import without it being this project's name
OUTSIDE = ('numpy', 'chainer', 'cupy', 'onnxruntime', 'sklearn', 'matplotlib', 'dill', 'os',
           'sys', 'time', 'json', 'math', 'pickle', 'glob', 'functools', 'importlib',
           'threadpoolctl')


def _read(path):
    with open(path) as f:
        return f.read()


def _python_imports():
    """(doc, module, name or None) for every import of a ```python block."""
    found = []
    for path in DOCS:
        for block in re.findall(r'```python\n(.*?)```', _read(path), flags=re.S):
            try:
                tree = ast.parse(block)
            except SyntaxError:  # a fragment: its import lines alone
                lines = [ln for ln in block.splitlines()
                         if re.match(r'(from \S+ )?import ', ln.strip())]
                tree = ast.parse('\n'.join(ln.strip() for ln in lines))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    found += [(path, a.name, None) for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    found += [(path, node.module, a.name) for a in node.names]
    return [f for f in found if not f[1].startswith(OUTSIDE)]


def _dotted_names():
    """(doc, 'branchynet.a.b') for every dotted name in the prose and code."""
    names = set()
    for path in DOCS:
        for name in re.findall(r'(?<![\w/.-])branchynet(?:\.[A-Za-z_]\w*)+', _read(path)):
            names.add((path, name))
    return sorted(names)


def _paths():
    """(doc, 'branchynet/…') for every path into the package the docs name."""
    names = set()
    for path in DOCS:
        for name in re.findall(r'(?<![\w/.-])branchynet/[\w/]*\w(?:\.py)?', _read(path)):
            names.add((path, name))
    return sorted(names)


def _resolve(dotted):
    """Import the longest module prefix of ``dotted`` and look the rest up."""
    parts = dotted.split('.')
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module('.'.join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


@pytest.mark.parametrize('doc,module,name', _python_imports(),
                         ids=lambda v: os.path.basename(v) if isinstance(v, str) else str(v))
def test_the_imports_the_docs_show_work(doc, module, name):
    mod = importlib.import_module(module)
    if name is not None and name != '*':
        assert hasattr(mod, name) or importlib.import_module(module + '.' + name)


def test_the_docs_show_imports():
    assert len(_python_imports()) >= 10


@pytest.mark.parametrize('doc,name', _dotted_names(),
                         ids=lambda v: os.path.basename(v) if v.endswith('.md') else v)
def test_every_dotted_name_the_docs_show_exists(doc, name):
    _resolve(name)


@pytest.mark.parametrize('doc,name', _paths(),
                         ids=lambda v: os.path.basename(v) if v.endswith('.md') else v)
def test_every_package_path_the_docs_show_exists(doc, name):
    assert os.path.exists(os.path.join(ROOT, name)), '{} names {}'.format(doc, name)
