"""Early-exit inference of a BranchyNet bundle, with numpy and onnxruntime only.

This file is copied into every bundle written by ``branchynet.engines.deploy.save_bundle``
as ``predict.py``; it needs neither Chainer nor the branchynet package::

    from predict import predict          # with the bundle's folder on sys.path
    labels, exits = predict(x)           # x: float32 (N, C, H, W)

    python predict.py INPUT.npy OUTPUT.npz [--thresholds T1,T2] [--threads N]

``manifest.json`` names the graphs (``exit1.onnx``, ``exit2.onnx``...: input
``x``, outputs ``logits`` and, but the last exit, ``features``), the
confidence measure and the thresholds. A sample leaves at the first early
exit whose uncertainty score is strictly below the exit's limit: for
``entropy``, softmax entropy (nats) < T; for ``maxprob``, largest
probability > T; for ``margin``, largest minus second-largest probability
> T. Scores are computed from the logits in float64. ``exits`` holds the
0-based index of the exit that classified each sample (0 is the file
``exit1.onnx``), as ``BranchyNet.predict`` returns it.
"""
import argparse
import json
import os
import sys

import numpy

MANIFEST = 'manifest.json'


def _probabilities(z):
    d = z.astype(numpy.float64)
    d -= d.max(axis=1, keepdims=True)
    e = numpy.exp(d)
    return e, d, e.sum(axis=1)


def uncertainty(measure, z):
    """Per row of logits ``z``, the measure's score (lower: more confident)."""
    e, d, s = _probabilities(z)
    if measure == 'entropy':
        return numpy.log(s) - (e * d).sum(axis=1) / s
    p = e / s[:, None]
    if measure == 'maxprob':
        return 1.0 - p.max(axis=1)
    if measure == 'margin':
        p.sort(axis=1)
        return 1.0 - (p[:, -1] - p[:, -2])
    raise ValueError('unknown confidence measure {!r}'.format(measure))


def limits(measure, thresholds):
    """The user's thresholds as limits on ``uncertainty`` (leave when below)."""
    return [t if measure == 'entropy' else 1.0 - t for t in thresholds]


class Bundle:
    """The graphs of a bundle folder, loaded into ONNX Runtime sessions.

    ``manifest``: the bundle's description (default: read from the folder's
    ``manifest.json``). ``threads``: ONNX Runtime's intra-op threads.
    """

    def __init__(self, directory=None, manifest=None, threads=1):
        import onnxruntime
        self.directory = os.path.abspath(directory or os.path.dirname(__file__))
        if manifest is None:
            with open(os.path.join(self.directory, MANIFEST)) as f:
                manifest = json.load(f)
        self.manifest = manifest
        self.measure = manifest['measure']
        ts = manifest.get('thresholds')  # "inf" for an exit everybody leaves at
        self.thresholds = None if ts is None else [float(t) for t in ts]
        self.input_shape = tuple(manifest['input']['shape']) \
            if manifest['input'].get('shape') else None
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1

        def session(name):
            return onnxruntime.InferenceSession(os.path.join(self.directory, name), options,
                                                providers=['CPUExecutionProvider'])
        self.sessions = [session(e['file']) for e in manifest['exits']]
        self.inputs = [s.get_inputs()[0].name for s in self.sessions]

    def numexits(self):
        return len(self.sessions)

    def _inputs(self, x):
        x = numpy.ascontiguousarray(x, dtype=numpy.float32)
        if self.input_shape is not None and x.shape[1:] != self.input_shape:
            raise ValueError('x must have shape (N, {}), got {}'.format(
                ', '.join(map(str, self.input_shape)), x.shape))
        if len(x) == 0:
            raise ValueError('x is empty: at least one sample is needed')
        return x

    def _thresholds(self, thresholds):
        ts = self.thresholds if thresholds is None else [float(t) for t in thresholds]
        if ts is None:
            raise ValueError('this bundle stores no thresholds: pass thresholds (one per '
                             'early exit, {})'.format(self.numexits() - 1))
        if len(ts) != self.numexits() - 1:
            raise ValueError('{} thresholds given; this bundle has {} early exits'.format(
                len(ts), self.numexits() - 1))
        return ts

    def predict(self, x, thresholds=None, batchsize=1024):
        """``(labels, exits)``: int32 arrays of length N (``exits`` 0-based)."""
        x = self._inputs(x)
        limit = limits(self.measure, self._thresholds(thresholds))
        labels = numpy.empty(len(x), numpy.int32)
        exits = numpy.empty(len(x), numpy.int32)
        last = self.numexits() - 1
        for start in range(0, len(x), batchsize):
            h = x[start:start + batchsize]
            remaining = numpy.arange(start, start + len(h))
            for n, sess in enumerate(self.sessions):
                out = sess.run(None, {self.inputs[n]: h})
                pred = out[0].argmax(axis=1).astype(numpy.int32)
                leave = numpy.ones(len(h), bool) if n == last else \
                    uncertainty(self.measure, out[0]) < limit[n]
                labels[remaining[leave]], exits[remaining[leave]] = pred[leave], n
                if leave.all():
                    break
                h, remaining = numpy.ascontiguousarray(out[1][~leave]), remaining[~leave]
        return labels, exits

    def exit_logits(self, x):
        """Every exit's logits for every sample (no early exit)."""
        h, out = self._inputs(x), []
        for n, sess in enumerate(self.sessions):
            result = sess.run(None, {self.inputs[n]: h})
            out.append(result[0])
            h = result[1] if len(result) > 1 else None
        return out


_default = []


def predict(x, thresholds=None):
    """``(labels, exits)`` of this folder's bundle (loaded on first use)."""
    if not _default:
        _default.append(Bundle())
    return _default[0].predict(x, thresholds)


def main(argv=None):
    parser = argparse.ArgumentParser(description='Early-exit inference of this BranchyNet '
                                     'bundle: labels and exits of every sample of INPUT.npy '
                                     'written to OUTPUT.npz')
    parser.add_argument('input', metavar='INPUT.npy', help='float32 samples (N, C, H, W)')
    parser.add_argument('output', metavar='OUTPUT.npz', help='gets labels and exits (int32)')
    parser.add_argument('--thresholds', help='comma-separated, one per early exit '
                        '(default: the manifest\'s)')
    parser.add_argument('--threads', type=int, default=1, help='ONNX Runtime threads')
    args = parser.parse_args(argv)
    try:
        ts = None if args.thresholds is None else \
            [float(t) for t in args.thresholds.split(',')]
        x = numpy.load(args.input, allow_pickle=False)
        if not isinstance(x, numpy.ndarray):
            raise ValueError('{} holds several arrays; expected one .npy array of samples'
                             .format(args.input))
        bundle = Bundle(threads=args.threads)
        labels, exits = bundle.predict(x, ts)
        numpy.savez(args.output, labels=labels, exits=exits)
    except (OSError, ValueError) as e:
        print('error: {}'.format(e), file=sys.stderr)
        return 2
    counts = numpy.bincount(exits, minlength=bundle.numexits())
    print('{} samples; per exit (1, 2, ...): {}'.format(len(labels), counts.tolist()))
    return 0


if __name__ == '__main__':
    sys.exit(main())
