"""Which network the driver runs: one of the paper's, or any function returning a BranchyNet.

``--network`` takes a name of ``networks.NETWORKS`` (``lenet_mnist``...),
``PATH.py:FUNCTION`` (a file of one's own) or ``package.module:FUNCTION``
(an importable module). ``load`` returns an object with ``NAME`` (used for
file names), ``EXPERIMENT`` (the settings, see ``networks/lenet_mnist.py``)
and ``get_network()``. A function's module needs no ``EXPERIMENT`` dict:
``default_experiment`` gives schedules by preset, and the threshold grid is
then made from the exits' confidence on the evaluation set
(``experiment.default_threshold_grid``); an ``EXPERIMENT`` dict in the
module, if there is one, overrides these defaults.
"""
import hashlib
import importlib
import importlib.util
import os
import re
import sys
import types

from branchynet import networks
from branchynet.net import BranchyNet
from branchynet.validation import InvalidValue


def default_experiment(title):
    """Settings of a network without an ``EXPERIMENT`` dict."""
    return {
        'title': title, 'dataset': None, 'num_classes': None, 'batchsize': 128,
        'thresholds': None,  # made from the exits' confidence quantiles
        'presets': {
            # the paper's schedule: 50 main-only epochs, then 100 joint epochs
            'paper': {'epochs_main': 50, 'epochs_joint': 100, 'n_val': 0},
            'fast': {'epochs_main': 4, 'epochs_joint': 4, 'n_val': 1000, 'n_timing': 1000},
            # seconds: a data subset, for trying a network out
            'tiny': {'epochs_main': 1, 'epochs_joint': 1, 'n_val': 100, 'n_train': 1000,
                     'n_test': 200, 'n_timing': 200, 'n_cost': 50},
        },
    }


def is_function_spec(spec):
    """Whether ``spec`` names a function (``...:FUNCTION``) rather than a paper network."""
    return ':' in spec


def short_name(spec):
    """The name a network's files and Table I row go by: the paper network's
    name, or the function's."""
    return spec.rpartition(':')[2] if is_function_spec(spec) else spec


def _import_file(path, spec):
    if not os.path.isfile(path):
        raise InvalidValue('--network {}: no such file {}'.format(spec, path))
    stem = os.path.splitext(os.path.basename(path))[0]
    name = stem if re.fullmatch(r'[A-Za-z_]\w*', stem) and stem not in sys.modules \
        else 'branchynet_user_network_{}'.format(abs(hash(os.path.abspath(path))))
    folder = os.path.dirname(os.path.abspath(path))
    if folder not in sys.path:  # the file may import its neighbours
        sys.path.insert(0, folder)
    loader_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[name] = module  # so the model's classes can be found again (dill)
    try:
        loader_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _import(target, spec):
    try:
        if target.endswith('.py') or os.sep in target or '/' in target:
            return _import_file(target, spec)
        return importlib.import_module(target)
    except InvalidValue:
        raise
    except ModuleNotFoundError as e:
        raise InvalidValue('--network {}: cannot import {} ({}); expected PATH.py:FUNCTION or '
                           'package.module:FUNCTION'.format(spec, target, e)) from e
    except SystemExit as e:  # else the driver would end here, at the user's exit status
        raise InvalidValue('--network {}: importing {} called sys.exit({!r}); a network file '
                           'must define a function, not end the program'.format(
                               spec, target, e.code)) from None
    except Exception as e:  # the user's code failed while being imported
        raise InvalidValue('--network {}: importing {} failed: {}: {}'.format(
            spec, target, type(e).__name__, _one_line(e))) from e


def _one_line(e):
    text = ' '.join(str(e).split())
    return text if len(text) <= 300 else text[:300] + '...'


class FunctionNetwork(types.SimpleNamespace):
    """A user's function as the driver sees a network module."""

    def get_network(self):
        return build(self.function, self.SPEC)


def build(function, spec):
    """``function()``, checked: it must return a BranchyNet with an
    ``input_shape`` (the driver's costs, ONNX and numba paths need one);
    an exception or a ``sys.exit`` in it becomes one ``InvalidValue`` line."""
    fname = spec.rpartition(':')[2]
    try:
        net = function()
    except SystemExit as e:
        raise InvalidValue('--network {}: calling {}() called sys.exit({!r}); it must return '
                           'a BranchyNet'.format(spec, fname, e.code)) from None
    except Exception as e:
        raise InvalidValue('--network {}: calling {}() failed: {}: {}'.format(
            spec, fname, type(e).__name__, _one_line(e))) from e
    if not isinstance(net, BranchyNet):
        raise InvalidValue('--network {}: {}() returned a {}, expected a BranchyNet'.format(
            spec, fname, type(net).__name__))
    if net.input_shape is None:
        raise InvalidValue('--network {}: {}() returned a BranchyNet without input_shape; pass '
                           'input_shape=(C, H, W), one sample\'s shape, to BranchyNet(...)'
                           .format(spec, fname))
    return net


def source_record(module):
    """``{'file': path, 'sha256': digest}`` of the file ``module`` was loaded
    from (None when it has none): snapshots record it, so ``--resume`` with
    other code is refused."""
    path = getattr(module, '__file__', None)
    if not path or not os.path.isfile(path):
        return None
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return {'file': os.path.abspath(path), 'sha256': digest.hexdigest()}


def load_function(spec):
    """``spec`` = ``PATH.py:FUNCTION`` or ``package.module:FUNCTION``, imported,
    called once and checked to return a BranchyNet with an input shape.
    FUNCTION must be a plain Python name: it names the run's files."""
    target, _, fname = spec.rpartition(':')
    if not target or not fname:
        raise InvalidValue('--network {!r}: expected PATH.py:FUNCTION or '
                           'package.module:FUNCTION'.format(spec))
    if not fname.isidentifier():
        raise InvalidValue('--network {!r}: FUNCTION must be a Python name (letters, digits '
                           'and _; it names the files in --out), got {!r}'.format(spec, fname))
    module = _import(target, spec)
    function = getattr(module, fname, None)
    if function is None:
        defined = sorted(k for k, v in vars(module).items()
                         if callable(v) and not k.startswith('_') and
                         getattr(v, '__module__', None) == module.__name__)
        raise InvalidValue('--network {}: {} has no function {!r} (it defines: {})'.format(
            spec, target, fname, ', '.join(defined) or 'none'))
    if not callable(function):
        raise InvalidValue('--network {}: {} in {} is a {}, not a function'.format(
            spec, fname, target, type(function).__name__))
    build(function, spec)
    experiment = default_experiment(fname)
    custom = getattr(module, 'EXPERIMENT', None)
    if isinstance(custom, dict):
        presets = {k: dict(v, **custom.get('presets', {}).get(k, {}))
                   for k, v in experiment['presets'].items()}
        presets.update({k: v for k, v in custom.get('presets', {}).items() if k not in presets})
        experiment.update(custom)
        experiment['presets'] = presets
    return FunctionNetwork(NAME=fname, EXPERIMENT=experiment, function=function,
                           SPEC=spec, SOURCE=source_record(module))


def load(spec):
    """The network module (or ``FunctionNetwork``) ``spec`` names."""
    if is_function_spec(spec):
        return load_function(spec)
    return networks.load(spec)
