"""Threshold screening from cached exit outputs, without re-running the network.

The original measured every threshold setting with a full batch-1 pass over
the evaluation set (``utils.screen_branchy``): days for B-ResNet-110's
17 x 17 grid on a CPU. Yet a sample's exit and label depend only on its
confidence scores (entropies, by default) and predictions at the exits, and
its cost only on where it leaves. So:

1. ``exit_outputs``: every exit's score and prediction for every sample,
   in one batched pass;
2. ``path_costs``: the batch-1 end-to-end cost of leaving at each exit,
   measured by forcing every sample out there (real runs, no per-stage clock);
3. ``evaluate``: accuracy and exit counts of any number of threshold
   vectors at once, exactly, in array operations; time predicted as
   ``sum_n fraction_n * path_ms[n]`` and multiply-adds likewise.

The drivers then confirm the chosen point(s) with real batch-1 runs.
``screen_thresholds`` (and the original's ``utils.screen_branchy`` on top of
it) is the measured way: one real batch-1 pass per threshold setting.
"""
import itertools

import numpy

from branchynet.measures import confidence
from branchynet.engines.base import as_engine
from branchynet.measures.timing import NULL_TIMER
from branchynet.evaluation.measurement import measure_branchy, per_sample_loop
from branchynet.progress import Progress
from branchynet.validation import (validate_batchsize, validate_inputs, validate_labels,
                                   validate_thresholds)


def exit_outputs(net, x, measure=None, batchsize=256, progress=None):
    """``(scores, predictions)``: arrays ``(N, exits)`` from one batched pass.

    ``scores`` are the uncertainty scores of ``measure`` (default the net's
    ``confidence``; for entropy, the entropies), computed from the logits
    exactly as the routing computes them. ``progress``: a bar over the
    samples (None: on a terminal only)."""
    measure = confidence.get_measure(measure or net.confidence)
    validate_inputs(x, net.input_shape)
    scores, predictions = [], []
    with Progress.auto(len(x), 'exit outputs', 'sample', progress) as bar:
        for i in range(0, len(x), 8 * batchsize):
            logits = net.get_logits(x[i:i + 8 * batchsize], batchsize=batchsize)
            part = outputs_from_logits(logits, measure)
            scores.append(part[0])
            predictions.append(part[1])
            bar.update(len(logits[0]))
    return numpy.concatenate(scores), numpy.concatenate(predictions)


def outputs_from_logits(logits, measure):
    """``(scores, predictions)`` of ``exit_outputs`` from every exit's logits
    (host arrays, one per exit, e.g. ``net.get_logits(x)``): another measure
    over the same logits needs no second forward pass."""
    measure = confidence.get_measure(measure)
    return (numpy.stack([measure.scores(z) for z in logits], axis=1),
            numpy.stack([z.argmax(axis=1) for z in logits], axis=1).astype(numpy.int32))


def path_costs(net, x, engine=None, progress=None):
    """Batch-1 end-to-end ms per sample of leaving at each exit.

    Exit n is forced with the network's confidence measure: thresholds with
    which nobody leaves before it (entropy: 0, as entropy is never < 0;
    maxprob and margin: 1) and everybody leaves at it (entropy: infinity).
    The samples of ``x`` (a few hundred suffice) are run for real, end to
    end, for every exit. ``progress``: a bar over the samples run (None: on
    a terminal only).
    """
    engine = as_engine(net, engine)
    measure = confidence.get_measure(net.confidence)
    early = net.numexits() - 1
    costs = []
    bar = Progress.auto(len(x) * net.numexits(), 'path costs', 'sample', progress)
    for n in range(net.numexits()):
        ts = [measure.stay_all] * n + [measure.leave_all] * (early - n)
        _, exits, seconds = per_sample_loop(
            engine, x, lambda xb, tm: engine.route(xb, ts, tm), NULL_TIMER, progress=bar)
        if not (exits == n).all():
            raise RuntimeError(
                'forcing every sample out at exit {} with {} thresholds {} sent samples to '
                'exits {}: the routing does not follow the measure'.format(
                    n, measure.name, ts, sorted(set(numpy.asarray(exits).tolist()))))
        costs.append(1000. * seconds / len(x))
    bar.close()
    return costs


def exits_for(scores, thresholds, measure='entropy'):
    """Exit index of every sample for each threshold vector: ``(K, N)``.

    ``scores`` holds the uncertainty scores of ``measure`` (N, exits); ``thresholds``
    is ``(K, exits - 1)`` in the measure's own units. A sample leaves at the
    first early exit whose score is strictly below the limit (for entropy:
    entropy < T), else at the last.
    """
    measure = confidence.get_measure(measure)
    thresholds = numpy.vectorize(measure.limit, otypes=[numpy.float64])(
        numpy.asarray(thresholds, dtype=numpy.float64))
    k = len(thresholds)
    early = scores.shape[1] - 1
    leave = numpy.empty((k, len(scores), early + 1), dtype=bool)
    leave[:, :, :early] = scores[None, :, :early] < thresholds[:, None, :]
    leave[:, :, early] = True
    return leave.argmax(axis=2)


def evaluate(scores, predictions, y, thresholds, path_ms=None, path_macs=None,
             chunk=64, measure='entropy'):
    """Accuracy, exit counts and predicted costs of many threshold vectors.

    Returns a dict of arrays over the K vectors: ``acc`` (K,), ``exit_counts``
    (K, exits) and, when the per-exit costs are given, ``ms`` and ``macs``
    (expected per-sample cost).
    """
    validate_labels(y, len(scores))
    thresholds = numpy.asarray(thresholds, dtype=numpy.float64).reshape(len(thresholds), -1)
    correct = predictions == numpy.asarray(y)[:, None]
    num_exits = scores.shape[1]
    accs, counts = [], []
    for i in range(0, len(thresholds), chunk):
        ex = exits_for(scores, thresholds[i:i + chunk], measure)
        accs.append(correct[numpy.arange(len(y))[None, :], ex].mean(axis=1))
        counts.append(numpy.stack([(ex == n).sum(axis=1) for n in range(num_exits)], axis=1))
    result = {'acc': numpy.concatenate(accs), 'exit_counts': numpy.concatenate(counts)}
    fractions = result['exit_counts'] / len(y)
    if path_ms is not None:
        result['ms'] = fractions @ numpy.asarray(path_ms, dtype=float)
    if path_macs is not None:
        result['macs'] = fractions @ numpy.asarray(path_macs, dtype=float)
    return result


def screen_cached(net, x, y, base_ts, enumerate_ts=True, engines=None, cost_samples=None,
                  path_macs=None, outputs=None):
    """Screen a threshold grid from cached exit outputs.

    Args:
        base_ts: values tried at every early exit (Cartesian product when
            ``enumerate_ts``), or a list of threshold vectors.
        engines: ``{name: engine}`` whose per-exit costs predict times
            (default ``{'chainer': net}``); ``ms_<name>`` in every record.
        cost_samples: samples of ``x`` used to measure the per-exit costs
            (default 200).
        path_macs: per-exit multiply-adds (``costs.exit_costs``) to report
            the expected ``macs`` of every point.
        outputs: ``exit_outputs(net, x)`` when already computed (e.g. on the
            shards of MPI ranks, ``distributed.Distributed.exit_outputs``).

    Returns ``(records, info)``: one dict per threshold vector
    (``thresholds``, ``acc``, ``exit_counts``, ``ms_<engine>``, ``macs``)
    and ``info`` with the per-exit path costs.
    """
    early = net.numexits() - 1
    upper = confidence.get_measure(net.confidence).upper
    settings = generate_thresholds(base_ts, early + 1) if enumerate_ts \
        else [validate_thresholds(t, early, name='base_ts entry', upper=upper) for t in base_ts]
    engines = engines or {'chainer': net}
    scores, predictions = exit_outputs(net, x) if outputs is None else outputs
    xs = x[:cost_samples or 200]
    costs = {name: path_costs(net, xs, engine) for name, engine in engines.items()}
    results = {name: evaluate(scores, predictions, y, settings, path_ms=c,
                              path_macs=path_macs, measure=net.confidence)
               for name, c in costs.items()}
    first = next(iter(results.values()))
    records = []
    for k, ts in enumerate(settings):
        record = {'thresholds': list(ts), 'acc': float(first['acc'][k]),
                  'exit_counts': first['exit_counts'][k].tolist()}
        for name, r in results.items():
            record['ms_' + name] = float(r['ms'][k])
        if path_macs is not None:
            record['macs'] = float(first['macs'][k])
        records.append(record)
    return records, {'path_ms': costs, 'cost_samples': len(xs)}


# ------------------------------------------------------- measured screening
def generate_thresholds(base_ts, num_layers):
    """Every threshold vector of a network with ``num_layers`` exits (the final
    one included, as ``numexits()`` counts them): the Cartesian product of
    ``base_ts`` over its ``num_layers - 1`` early exits (a list of lists)."""
    base_ts = list(base_ts)
    if not base_ts:
        raise ValueError('base_ts must hold at least one threshold')
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 2:
        raise ValueError('num_layers is the number of exits, final exit included '
                         '(at least 2), got {!r}'.format(num_layers))
    validate_thresholds(base_ts, len(base_ts), name='base_ts')
    return [list(t) for t in itertools.product(base_ts, repeat=num_layers - 1)]


class ScreenResult(tuple):
    """``(ts, accs, diffs, exits)`` as the original returned (it unpacks the
    same), plus ``trunk_ms`` (trunk-only ms) and ``records`` (every
    point's full measurement). ``diffs`` are end-to-end ms per sample and
    ``exits`` per-exit sample counts."""

    def __new__(cls, records):
        obj = super().__new__(cls, (
            [r['thresholds'] for r in records], [r['acc'] for r in records],
            [r['ms'] for r in records], [r['exit_counts'] for r in records]))
        obj.records = records
        obj.trunk_ms = [r.get('trunk_ms') for r in records]
        return obj


def _measure_batched(net, x, y, ts, batchsize):
    """One setting evaluated ``batchsize`` samples at a time, as the original's
    ``test_suite_B`` did: the same record keys as ``measure_branchy`` (no
    trunk-only time), ``ms`` the total wall time over the number of samples."""
    acc, exit_accs, counts, seconds = net.test(x, y, ts, batchsize=batchsize)
    return {'thresholds': list(ts), 'acc': acc, 'exit_counts': list(counts),
            'exit_accs': [a if c else None for a, c in zip(exit_accs, counts)],
            'ms': 1000. * seconds / len(y)}


def screen_thresholds(net, x, y, base_ts, batchsize=1, enumerate_ts=True, verbose=False,
                      progress=True, trunk_only=True):
    """Measure every threshold setting with a real pass over ``x``.

    ``base_ts`` is a list of values tried at every early exit
    (``enumerate_ts=True``: their Cartesian product over the early exits) or,
    with ``enumerate_ts=False``, the list of threshold vectors itself.
    With ``batchsize=1`` (the paper's setting) each sample is timed end to
    end on its own (``measure_branchy``); with a larger ``batchsize`` the
    samples are routed that many at a time and the time per sample is the
    total over their number, as the original's ``test_suite_B`` measured (no
    trunk-only column then). Returns a ``ScreenResult`` (times in
    milliseconds per sample).
    """
    batchsize = validate_batchsize(batchsize)
    settings = generate_thresholds(base_ts, net.numexits()) if enumerate_ts \
        else [validate_thresholds(t, net.numexits() - 1, name='base_ts entry')
              for t in base_ts]
    records = []
    with Progress(len(settings), 'screen', unit='pt', enabled=progress) as bar:
        for ts in settings:
            r = measure_branchy(net, x, y, ts, trunk_only=trunk_only) if batchsize == 1 \
                else _measure_batched(net, x, y, ts, batchsize)
            records.append(r)
            if verbose:
                print('T={} acc={:.4f} ms={:.3f} exits={}'.format(
                    ts, r['acc'], r['ms'], r['exit_counts']))
            bar.update(1, acc=r['acc'], ms=r['ms'])
    return ScreenResult(records)
