"""Training, evaluation, threshold screening and Table I helpers.

The names follow the original project (``train``, ``test``, ``screen_branchy``,
``generate_thresholds``, ``get_inc_points``, ``branchy_table_results``) so its
notebooks read the same; the timings are end to end (see ``measure_branchy``).
"""
import itertools
import time

import chainer
import numpy

from branchynet.progress import Progress
from branchynet.timing import NULL_TIMER, StageTimer, synchronize
from branchynet.validation import validate_inputs, validate_labels, validate_thresholds


# ------------------------------------------------------------------ training
def train(net, x, y, main=False, batchsize=512, num_epoch=20, seed=None, progress=True,
          on_epoch_end=None, augment=False, snapshot=None, resume=False, distributed=None):
    """Train ``net`` for ``num_epoch`` epochs of shuffled mini-batches.

    ``main=True`` trains the main network only (``net.train_main``), otherwise
    every exit jointly (``net.train``). ``on_epoch_end(epoch, losses, accs)``
    is called after each epoch with that epoch's per-exit means.
    ``augment=True`` trains on augmented images (``branchynet.augment``).

    ``snapshot`` names a file written at every epoch end (model, optimizer,
    position, curves, random state; see ``branchynet.checkpoint``); SIGINT or
    SIGTERM then writes it at the current batch and raises
    ``checkpoint.TrainingInterrupted``. ``resume=True`` continues from it, and
    with the same seed ends with the same weights as an uninterrupted run
    (not bit-exact with ``augment``, whose crops are drawn in worker processes).

    ``distributed`` (a ``branchynet.distributed.Distributed``) trains data-
    parallel over MPI ranks: ``batchsize`` stays the global batch, each rank
    steps on its part, only rank 0 reports progress and writes the snapshot.

    Returns ``(losses, accs, seconds)``: ``losses[epoch][exit]`` and
    ``accs[epoch][exit]`` are per-epoch means over the batches (one exit,
    the last, for main-only training) and ``seconds`` the time of this call.
    """
    from branchynet import checkpoint
    validate_inputs(x, net.input_shape)
    validate_labels(y, len(x))
    if batchsize < 1 or num_epoch < 0:
        raise ValueError('batchsize must be >= 1 and num_epoch >= 0, got {} and {}'
                         .format(batchsize, num_epoch))
    rng = numpy.random.RandomState(seed)
    dist, root = distributed, distributed is None or distributed.is_root
    if dist is not None:
        if augment:
            raise ValueError('augment=True is not supported in distributed training (the '
                             'augmented batches are drawn per process, not shared by ranks)')
        dist.setup(net)
        progress = progress and root
    augmenter = None
    if augment:
        from branchynet.augment import AugmentedBatches
        augmenter = AugmentedBatches(x, y, batchsize, seed=rng.randint(2 ** 31 - 1))
    step = net.train_main if main else net.train
    n_batches = (len(x) + batchsize - 1) // batchsize
    losses, accs, first_epoch, order, next_batch = [], [], 0, None, 0
    if resume and dist is not None:
        state = dist.load_snapshot(snapshot, net, rng)
        if state is not None:
            first_epoch, losses, accs, order, next_batch = state
    elif resume and checkpoint.exists(snapshot):
        first_epoch, losses, accs, order, next_batch = checkpoint.load(snapshot, net, rng)
    start = time.perf_counter()
    desc = 'main' if main else 'joint'
    guard = checkpoint.stop_requests() if snapshot else _no_stop_requests()
    with guard as stop:
        for epoch in range(first_epoch, num_epoch):
            if dist is not None:
                dist.epoch_start(epoch, seed)
            if augmenter is None:
                if order is None:
                    order, next_batch = rng.permutation(len(x)), 0
                batches = _index_batches(x, y, order, batchsize, next_batch, n_batches, dist)
            else:
                batches = ((b, xb, yb, len(yb)) for b, (xb, yb) in enumerate(augmenter.epoch()))
            sums_loss, sums_acc, weights = 0., 0., 0
            with Progress(n_batches, '{} epoch {}/{}'.format(desc, epoch + 1, num_epoch),
                          unit='batch', enabled=progress) as bar:
                bar.update(next_batch if augmenter is None else 0)
                for b, xb, yb, count in batches:
                    loss, acc = step(xb, yb)
                    loss, acc = numpy.atleast_1d(loss), numpy.atleast_1d(acc)
                    sums_loss = sums_loss + loss * count
                    sums_acc = sums_acc + acc * count
                    weights += count
                    bar.update(1, loss=float(numpy.nansum(loss)))
                    stopping = stop['signal'] is not None
                    if dist is not None and snapshot:  # every rank stops at the same batch
                        stopping = dist.any_rank(stopping)
                    if stopping:
                        if augmenter is None and root:  # else the epoch-end snapshot stands
                            checkpoint.save(snapshot, net, rng, epoch, losses, accs, order, b + 1)
                        raise checkpoint.TrainingInterrupted(snapshot)
            if dist is not None:
                sums_loss, sums_acc, weights = dist.reduce_sums(sums_loss, sums_acc, weights)
                dist.epoch_end(net)
            losses.append((sums_loss / max(weights, 1)).tolist())
            accs.append((sums_acc / max(weights, 1)).tolist())
            order, next_batch = None, 0
            if snapshot and root:
                checkpoint.save(snapshot, net, rng, epoch + 1, losses, accs)
            if on_epoch_end is not None:
                on_epoch_end(epoch, losses[-1], accs[-1])
    return losses, accs, time.perf_counter() - start


def _index_batches(x, y, order, batchsize, first, n_batches, dist):
    """``(b, x_b, y_b, count)`` of the shuffled batches from ``first`` on; with
    ``dist``, this rank's part of every global batch (``count`` its weight)."""
    for b in range(first, n_batches):
        idx = order[b * batchsize:(b + 1) * batchsize]
        count = len(idx)
        if dist is not None:
            idx, count = dist.local_part(idx)
        yield b, x[idx], y[idx], count


class _no_stop_requests:
    def __enter__(self):
        return {'signal': None}

    def __exit__(self, *exc):
        return False


# ---------------------------------------------------------------- evaluation
def test(net, x, y, main=False, batchsize=1, thresholds=None):
    """Evaluate ``net`` (early exit, or the main network with ``main=True``).

    Returns ``(accuracy, seconds, exit_counts, exit_accuracies)`` as the
    original did; for the main network the exit lists have one entry.
    """
    if main:
        acc, seconds = net.test_main(x, y, batchsize=batchsize)
        return acc, seconds, [len(x)], [acc]
    acc, exit_accs, counts, seconds = net.test(x, y, thresholds, batchsize=batchsize)
    return acc, seconds, counts, exit_accs


def _per_sample_loop(engine, x, run_one, timer):
    """Run ``run_one`` on every sample at batch size 1; time it end to end.

    The clock covers everything a sample costs: host-to-device transfer, the
    trunk, the heads, softmax, entropy, routing and reading the answer back.
    """
    n = len(x)
    labels = numpy.empty(n, numpy.int32)
    exits = numpy.empty(n, numpy.int32)
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        synchronize(engine.xp)
        start = time.perf_counter()
        for i in range(n):
            lab, ex = run_one(engine.send(x[i:i + 1]), timer)
            labels[i] = int(lab[0])
            exits[i] = int(ex[0])
        synchronize(engine.xp)
        seconds = time.perf_counter() - start
    return labels, exits, seconds


def _measure(net, engine, x, y, run_one, trunk_only):
    validate_inputs(x, net.input_shape)
    validate_labels(y, len(x))
    if trunk_only and not getattr(engine, 'stage_timing', True):
        raise ValueError('{} runs each segment and head as one fused call and cannot time '
                         'the trunk alone: pass trunk_only=False'.format(type(engine).__name__))
    labels, exits, seconds = _per_sample_loop(engine, x, run_one, NULL_TIMER)
    result = _summarise(net, y, labels, exits, seconds)
    if trunk_only:  # a second pass with per-stage clocks: the original's timer
        timer = StageTimer(engine.xp)
        _per_sample_loop(engine, x, run_one, timer)
        result['trunk_ms'] = 1000. * timer.totals['trunk'] / len(y)
        result['stage_ms'] = {k: 1000. * v / len(y) for k, v in timer.totals.items()}
    return result


def measure_branchy(net, x, y, thresholds, engine=None, trunk_only=True):
    """Batch-1 early-exit run over ``x``: accuracy, exits and per-sample time.

    Returns a dict with ``acc``, ``exit_counts``, ``exit_accs`` and ``ms``
    (end to end, per sample, timed with no per-stage clock in the way). With
    ``trunk_only``, a second pass times the stages separately: ``trunk_ms``
    is the trunk segments alone, the way the original timed (no heads,
    softmax, entropy or routing). ``engine`` is the inference path: ``net``
    itself (Chainer, the default) or a ``fastpath.FastBranchyNet``.
    """
    engine = engine or net
    ts = validate_thresholds(thresholds, net.numexits() - 1, name='thresholds')
    result = _measure(net, engine, x, y, lambda xb, tm: engine._route(xb, ts, tm), trunk_only)
    result['thresholds'] = list(ts)
    return result


def measure_main(net, x, y, engine=None, trunk_only=True):
    """Batch-1 run of the main network alone (the baseline); as ``measure_branchy``."""
    engine = engine or net
    return _measure(net, engine, x, y, engine._main_route, trunk_only)


def _summarise(net, y, labels, exits, seconds):
    y = chainer.backends.cuda.to_cpu(y)
    correct = labels == y
    counts = numpy.bincount(exits, minlength=net.numexits())
    return {
        'acc': float(correct.mean()),
        'exit_counts': counts.tolist(),
        'exit_accs': [float(correct[exits == n].mean()) if counts[n] else None
                      for n in range(net.numexits())],
        'ms': 1000. * seconds / len(y),
    }


# ---------------------------------------------------------------- screening
def generate_thresholds(base_ts, num_layers):
    """Every threshold vector for ``num_layers`` early exits: the Cartesian
    product of ``base_ts`` with itself (a list of lists)."""
    base_ts = list(base_ts)
    if not base_ts:
        raise ValueError('base_ts must hold at least one threshold')
    validate_thresholds(base_ts, len(base_ts), name='base_ts')
    return [list(t) for t in itertools.product(base_ts, repeat=num_layers)]


class ScreenResult(tuple):
    """``(ts, accs, diffs, exits)`` as the original returned (it unpacks the
    same), plus ``trunk_diffs`` (trunk-only ms) and ``records`` (every
    point's full measurement). ``diffs`` are end-to-end ms per sample and
    ``exits`` per-exit sample counts."""

    def __new__(cls, records):
        obj = super().__new__(cls, (
            [r['thresholds'] for r in records], [r['acc'] for r in records],
            [r['ms'] for r in records], [r['exit_counts'] for r in records]))
        obj.records = records
        obj.trunk_diffs = [r.get('trunk_ms') for r in records]
        return obj


def screen_branchy(net, x, y, base_ts, batchsize=1, enumerate_ts=True, verbose=False,
                   progress=True, trunk_only=True):
    """Measure every threshold setting with a real batch-1 pass over ``x``.

    ``base_ts`` is a list of values tried at every early exit
    (``enumerate_ts=True``: their Cartesian product over the early exits) or,
    with ``enumerate_ts=False``, the list of threshold vectors itself.
    """
    if batchsize != 1:
        raise ValueError('screen_branchy times samples one at a time (batchsize=1); '
                         'got batchsize={}'.format(batchsize))
    settings = generate_thresholds(base_ts, net.numexits() - 1) if enumerate_ts \
        else [validate_thresholds(t, net.numexits() - 1, name='base_ts entry')
              for t in base_ts]
    records = []
    with Progress(len(settings), 'screen', unit='pt', enabled=progress) as bar:
        for ts in settings:
            r = measure_branchy(net, x, y, ts, trunk_only=trunk_only)
            records.append(r)
            if verbose:
                print('T={} acc={:.4f} ms={:.3f} exits={}'.format(
                    ts, r['acc'], r['ms'], r['exit_counts']))
            bar.update(1, acc=r['acc'], ms=r['ms'])
    return ScreenResult(records)


def inc_point_indices(accs, diffs, inc_amt=0.0):
    """Indices of the accuracy-rising curve (Fig. 3), ordered by runtime.

    Walking from the fastest point to the slowest, a point is kept when its
    accuracy exceeds the best accuracy seen so far by more than ``inc_amt``.
    With ``inc_amt=0`` this is the set of points no faster point beats.
    """
    order = sorted(range(len(accs)), key=lambda i: (diffs[i], -accs[i]))
    kept, best = [], -numpy.inf
    for i in order:
        if accs[i] > best + inc_amt:
            kept.append(i)
            best = max(best, accs[i])
    return kept


def get_inc_points(accs, diffs, ts, exits, inc_amt=0.0):
    """Points where accuracy rises as runtime rises: ``(accs, diffs, ts, exits)``
    of those points, ordered by runtime (see ``inc_point_indices``)."""
    idx = inc_point_indices(accs, diffs, inc_amt)
    return ([accs[i] for i in idx], [diffs[i] for i in idx], [ts[i] for i in idx],
            [exits[i] for i in idx])


def select_knee(accs, diffs, baseline_acc):
    """Index of the knee: the fastest point whose accuracy is at least the
    baseline's. If no point reaches the baseline, the most accurate point
    (the fastest among equals) is returned instead."""
    if not accs:
        raise ValueError('no screened points to choose a knee from')
    good = [i for i in range(len(accs)) if accs[i] >= baseline_acc]
    if good:
        return min(good, key=lambda i: (diffs[i], -accs[i]))
    return min(range(len(accs)), key=lambda i: (-accs[i], diffs[i]))


# ------------------------------------------------------------------ Table I
TABLE_COLUMNS = ('Network', 'Acc. (%)', 'Time (ms)', 'Gain', 'Trunk-only (ms)',
                 'Trunk-only gain', 'Fast (ms)', 'Fast gain', 'MAC limit', 'Thrshld. T',
                 'Exit (%)')


def branchy_table_results(network, baseline, branchy, device='CPU', printout=True,
                          baseline_fast=None, branchy_fast=None, mac_limit=None):
    """The Table I block of one network: the baseline row and the BranchyNet row.

    ``baseline`` and ``branchy`` are measurements as returned by
    ``measure_main`` and ``measure_branchy`` (``branchy`` with its
    ``thresholds``). Gain is baseline time / branchy time, end to end; the
    trunk-only columns repeat it with the original's timer for comparison
    with the paper. ``baseline_fast``/``branchy_fast`` are the same
    measurements on the compiled fast path, and ``mac_limit`` the gain in
    multiply-adds (what a runtime without per-call overhead would reach).
    Returns the two rows as dicts keyed by ``TABLE_COLUMNS``.
    """
    total = sum(branchy['exit_counts'])

    def ratio(a, b):
        return a / b if a is not None and b else None

    def get(m, key):
        return m.get(key) if m else None
    rows = [
        {'Device': device, 'Network': network, 'Acc. (%)': 100 * baseline['acc'],
         'Time (ms)': baseline['ms'], 'Trunk-only (ms)': get(baseline, 'trunk_ms'),
         'Fast (ms)': get(baseline_fast, 'ms')},
        {'Device': device, 'Network': 'B-' + network, 'Acc. (%)': 100 * branchy['acc'],
         'Time (ms)': branchy['ms'], 'Gain': ratio(baseline['ms'], branchy['ms']),
         'Trunk-only (ms)': get(branchy, 'trunk_ms'),
         'Trunk-only gain': ratio(get(baseline, 'trunk_ms'), get(branchy, 'trunk_ms')),
         'Fast (ms)': get(branchy_fast, 'ms'),
         'Fast gain': ratio(get(baseline_fast, 'ms'), get(branchy_fast, 'ms')),
         'MAC limit': mac_limit,
         'Thrshld. T': list(branchy['thresholds']),
         'Exit (%)': [100. * c / total for c in branchy['exit_counts']]},
    ]
    if printout:
        print(format_table(rows))
    return rows


def _cell(column, value):
    if value is None:
        return '-'
    if column in ('Gain', 'Trunk-only gain', 'Fast gain', 'MAC limit'):
        return '{:.2f}x'.format(value)
    if column == 'Thrshld. T':
        return ', '.join('{:g}'.format(v) for v in value)
    if column == 'Exit (%)':
        return ', '.join('{:.2f}'.format(v) for v in value)
    if column == 'Acc. (%)':
        return '{:.2f}'.format(value)
    if isinstance(value, float):
        return '{:.3f}'.format(value)
    return str(value)


def format_table(rows, columns=('Device',) + TABLE_COLUMNS):
    """Rows (dicts) as a Markdown table."""
    lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
    for row in rows:
        lines.append('| ' + ' | '.join(_cell(c, row.get(c)) for c in columns) + ' |')
    return '\n'.join(lines)
