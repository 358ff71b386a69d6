"""Threshold screening from cached exit outputs, without re-running the network.

The original measured every threshold setting with a full batch-1 pass over
the evaluation set (``utils.screen_branchy``): days for B-ResNet-110's
17 x 17 grid on a CPU. Yet a sample's exit and label depend only on its
entropies and predictions at the exits, and its cost only on where it leaves.
So:

1. ``exit_outputs``: every exit's entropy and prediction for every sample,
   in one batched pass (``get_SM``);
2. ``path_costs``: the batch-1 end-to-end cost of leaving at each exit,
   measured by forcing every sample out there (real runs, no per-stage clock);
3. ``evaluate``: accuracy and exit counts of any number of threshold
   vectors at once, exactly, in array operations; time predicted as
   ``sum_n fraction_n * path_ms[n]`` and multiply-adds likewise.

The drivers then confirm the chosen point(s) with real batch-1 runs.
"""
import numpy

from branchynet import confidence
from branchynet.timing import NULL_TIMER
from branchynet.utils import _per_sample_loop, generate_thresholds
from branchynet.validation import validate_labels, validate_thresholds


def exit_outputs(net, x, measure=None, batchsize=256):
    """``(scores, predictions)``: arrays ``(N, exits)`` from one batched pass.

    ``scores`` are the uncertainty scores of ``measure`` (default the net's
    ``confidence``; for entropy, the entropies), computed from the logits
    exactly as the routing computes them."""
    measure = confidence.get_measure(measure or net.confidence)
    logits = net.get_logits(x, batchsize=batchsize)
    scores = numpy.stack([measure.scores(z) for z in logits], axis=1)
    predictions = numpy.stack([z.argmax(axis=1) for z in logits], axis=1).astype(numpy.int32)
    return scores, predictions


def path_costs(net, x, engine=None):
    """Batch-1 end-to-end ms per sample of leaving at each exit.

    Exit n is forced with the network's confidence measure: thresholds with
    which nobody leaves before it (entropy: 0, as entropy is never < 0;
    maxprob and margin: 1) and everybody leaves at it (entropy: infinity).
    The samples of ``x`` (a few hundred suffice) are run for real, end to
    end, for every exit.
    """
    engine = engine or net
    measure = confidence.get_measure(net.confidence)
    early = net.numexits() - 1
    costs = []
    for n in range(net.numexits()):
        ts = [measure.stay_all] * n + [measure.leave_all] * (early - n)
        _, exits, seconds = _per_sample_loop(
            engine, x, lambda xb, tm: engine._route(xb, ts, tm), NULL_TIMER)
        if not (exits == n).all():
            raise RuntimeError(
                'forcing every sample out at exit {} with {} thresholds {} sent samples to '
                'exits {}: the routing does not follow the measure'.format(
                    n, measure.name, ts, sorted(set(numpy.asarray(exits).tolist()))))
        costs.append(1000. * seconds / len(x))
    return costs


def exits_for(entropies, thresholds, measure='entropy'):
    """Exit index of every sample for each threshold vector: ``(K, N)``.

    ``entropies`` holds the scores of ``measure`` (N, exits); ``thresholds``
    is ``(K, exits - 1)`` in the measure's own units. A sample leaves at the
    first early exit whose score is strictly below the limit (for entropy:
    entropy < T), else at the last.
    """
    measure = confidence.get_measure(measure)
    thresholds = numpy.vectorize(measure.limit, otypes=[numpy.float64])(
        numpy.asarray(thresholds, dtype=numpy.float64))
    k = len(thresholds)
    early = entropies.shape[1] - 1
    leave = numpy.empty((k, len(entropies), early + 1), dtype=bool)
    leave[:, :, :early] = entropies[None, :, :early] < thresholds[:, None, :]
    leave[:, :, early] = True
    return leave.argmax(axis=2)


def evaluate(entropies, predictions, y, thresholds, path_ms=None, path_macs=None,
             chunk=64, measure='entropy'):
    """Accuracy, exit counts and predicted costs of many threshold vectors.

    Returns a dict of arrays over the K vectors: ``acc`` (K,), ``exit_counts``
    (K, exits) and, when the per-exit costs are given, ``ms`` and ``macs``
    (expected per-sample cost).
    """
    validate_labels(y, len(entropies))
    thresholds = numpy.asarray(thresholds, dtype=numpy.float64).reshape(len(thresholds), -1)
    correct = predictions == numpy.asarray(y)[:, None]
    num_exits = entropies.shape[1]
    accs, counts = [], []
    for i in range(0, len(thresholds), chunk):
        ex = exits_for(entropies, thresholds[i:i + chunk], measure)
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
    entropies, predictions = exit_outputs(net, x) if outputs is None else outputs
    xs = x[:cost_samples or 200]
    costs = {name: path_costs(net, xs, engine) for name, engine in engines.items()}
    results = {name: evaluate(entropies, predictions, y, settings, path_ms=c,
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
