"""A deployable bundle: a trained BranchyNet as ONNX graphs plus everything to run them.

``save_bundle(net, DIR)`` writes::

    DIR/exit1.onnx, exit2.onnx, ...   trunk segment n and exit n's head:
                                      input x -> outputs logits, features
    DIR/main.onnx                     the baseline network: x -> logits
    DIR/manifest.json                 input shape, exits, measure, thresholds,
                                      class count, project version and commit
    DIR/predict.py                    predict(x) -> (labels, exits), and
                                      python predict.py INPUT.npy OUTPUT.npz

``predict.py`` (``branchynet/engines/bundle_predict.py``, copied) needs only numpy
and onnxruntime: the bundle runs where Chainer and this project are absent,
deciding exits exactly as ``BranchyNet.predict``. ``load_bundle(DIR)``
returns the same runtime here (the package's copy of it: loading a bundle
runs no code from the folder), refusing what it cannot answer with a
``bundle_predict.BundleError`` of one line (see ``bundle_predict``). Folders
written by ``OnnxBranchyNet.save`` before exits were numbered from 1
(``exit0.onnx``, no manifest) load with a warning.
"""
import json
import math
import os
import re
import shutil
import warnings

from branchynet import __version__
from branchynet.engines import bundle_predict
from branchynet.io.fileio import atomic_write
from branchynet.engines.onnx_runtime import INPUT_NAME, OUTPUT_NAMES, OnnxBranchyNet, exit_file_stem
from branchynet.validation import InvalidValue

FORMAT = bundle_predict.FORMAT
FORMAT_VERSION = bundle_predict.FORMAT_VERSION


def manifest(net, engine, files):
    """The ``manifest.json`` content of ``net``'s bundle."""
    from branchynet.io import runrecord
    main, exits = engine.models
    last = len(exits) - 1
    num_classes = main.graph.output[0].type.tensor_type.shape.dim[1].dim_value
    return {
        'format': FORMAT, 'format_version': FORMAT_VERSION,
        'input': {'name': INPUT_NAME, 'shape': list(net.input_shape), 'dtype': 'float32'},
        'exits': [{'number': n + 1, 'file': exit_file_stem(n) + '.onnx',
                   'outputs': list(OUTPUT_NAMES[:1 if n == last else 2])}
                  for n in range(len(exits))],
        'main': 'main.onnx',
        'measure': net.confidence,
        # strict JSON: an infinite threshold (everybody leaves) is written "inf"
        'thresholds': None if net.thresholdExits is None else
        [t if math.isfinite(t) else repr(t) for t in net.thresholdExits],
        'num_classes': int(num_classes),
        'exit_index': '0-based in predict\'s exits (0 is exit1.onnx), as BranchyNet.predict',
        'version': __version__, 'commit': runrecord.source_commit(),
        'files': sorted(files + ['predict.py', bundle_predict.MANIFEST]),
    }


def save_bundle(net, directory, engine=None):
    """Write ``net`` (trained, with ``input_shape``) as a bundle in ``directory``.

    The thresholds and measure are the model's (``thresholdExits`` may be
    None: predict then needs thresholds). ``engine``: an ``OnnxBranchyNet``
    of ``net`` already built. Returns the manifest.
    """
    if net.input_shape is None:
        raise InvalidValue('the network has no input_shape: build the BranchyNet with '
                           'input_shape=(C, H, W) to export it')
    if net.confidence not in bundle_predict.MEASURES:
        raise InvalidValue('a bundle decides exits by {} only; the network\'s measure is {!r} '
                           '(set net.confidence to one of them)'.format(
                               ', '.join(bundle_predict.MEASURES), net.confidence))
    engine = engine or OnnxBranchyNet(net)
    files = engine.save(directory)
    source = bundle_predict.__file__
    with atomic_write(os.path.join(directory, 'predict.py')) as f, open(source, 'rb') as src:
        shutil.copyfileobj(src, f)
    content = manifest(net, engine, files)
    with atomic_write(os.path.join(directory, bundle_predict.MANIFEST), 'w') as f:
        json.dump(content, f, indent=1, allow_nan=False)
        f.write('\n')
    return content


def _legacy_manifest(directory):
    """A manifest for a folder of ``exit0.onnx, exit1.onnx, ...`` (no manifest)."""
    numbers = sorted(int(m.group(1)) for m in
                     (re.fullmatch(r'exit(\d{1,6})\.onnx', name) for name in os.listdir(directory))
                     if m)
    if numbers != list(range(len(numbers))):
        raise InvalidValue('{}: exit files {} are not numbered 0, 1, ...'.format(
            directory, numbers))
    warnings.warn('{} was saved before bundles had a manifest (exits numbered from 0 as '
                  'exit0.onnx, no measure or thresholds): read as entropy exits without '
                  'thresholds; save it again with branchynet.engines.deploy.save_bundle'.format(
                      directory), stacklevel=3)
    return {'format': FORMAT, 'format_version': 0, 'input': {'name': INPUT_NAME},
            'exits': [{'number': n + 1, 'file': 'exit{}.onnx'.format(n)} for n in numbers],
            'main': 'main.onnx', 'measure': 'entropy', 'thresholds': None}


def load_bundle(directory, threads=1):
    """The bundle in ``directory`` as a ``bundle_predict.Bundle``: ``.predict(x,
    thresholds=None) -> (labels, exits)``, ``.exit_logits(x)``, ``.manifest``.
    What it cannot load or answer raises ``bundle_predict.BundleError`` (a
    ``ValueError``) with one line."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise InvalidValue('{} is not a folder; expected a bundle written by '
                           'deploy.save_bundle'.format(directory))
    if os.path.lexists(os.path.join(directory, bundle_predict.MANIFEST)):
        content = bundle_predict.read_manifest(directory)  # checked by Bundle
    elif os.path.exists(os.path.join(directory, 'exit0.onnx')):
        content = _legacy_manifest(directory)
    else:
        raise InvalidValue('{} has no {} (nor exit0.onnx of an older bundle); expected a '
                           'bundle written by deploy.save_bundle'.format(
                               directory, bundle_predict.MANIFEST))
    return bundle_predict.Bundle(directory, content, threads=threads)
