"""Training, evaluation, threshold screening and Table I helpers.

The original project's names (``train``, ``test``, ``screen_branchy``,
``generate_thresholds``, ``get_inc_points``, ``branchy_table_results``,
``test_suite_A/B``, ``traintest``, ``get_SM``, ``compute_network_times``...)
take the original's arguments and return what the original returned, so its
scripts run unchanged; their times are end to end (see ``measure_branchy``).
The port's own richer variants have their own names: ``train_exits``,
``screen_thresholds`` (milliseconds, full records), ``branchy_table_rows``.
"""
import itertools
import sys
import time

import chainer
import numpy

from branchynet.progress import Progress
from branchynet.timing import NULL_TIMER, StageTimer, synchronize
from branchynet.validation import (InvalidValue, validate_inputs, validate_labels,
                                   validate_thresholds)


# ------------------------------------------------------------------ training
def train(branchyNet, x_train, y_train, batchsize=10000, num_epoch=20, main=False, **options):
    """The original's ``train``: ``(losses, accuracies, seconds)``.

    ``losses[epoch]`` is, with ``main=True``, that epoch's mean loss of the
    main network (a number); otherwise the list of every exit's mean loss
    (so ``zip(*losses)`` gives one curve per exit). ``options`` are those of
    ``train_exits`` (``seed``, ``progress``, ``snapshot``, ``augment``...).
    """
    losses, accs, seconds = train_exits(branchyNet, x_train, y_train, main=main,
                                        batchsize=batchsize, num_epoch=num_epoch, **options)
    if main:
        losses, accs = [row[0] for row in losses], [row[0] for row in accs]
    return losses, accs, seconds


def train_exits(net, x, y, main=False, batchsize=512, num_epoch=20, seed=None, progress=True,
                on_epoch_end=None, augment=False, snapshot=None, resume=False, settings=None,
                distributed=None):
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
    (not bit-exact with ``augment``, whose crops are drawn in worker processes;
    an augmented epoch resumes from its start). The snapshot records the
    run's ``settings`` (a dict; the driver passes network, seed, data and
    schedule) together with the batch size, epochs, seed and a digest of the
    data, and a snapshot recording others is refused.

    ``distributed`` (a ``branchynet.distributed.Distributed``) trains data-
    parallel over MPI ranks: ``batchsize`` stays the global batch, each rank
    steps on its part, the curves are summed over ranks, only rank 0 reports
    progress and writes the snapshot (which records the number of ranks: a
    resume with another number is refused), and every rank resumes from rank
    0's snapshot.

    Returns ``(losses, accs, seconds)``: ``losses[epoch][exit]`` and
    ``accs[epoch][exit]`` are per-epoch means over the batches (one exit,
    the last, for main-only training) and ``seconds`` the time of this call.
    """
    from branchynet import checkpoint
    validate_inputs(x, net.input_shape)
    validate_labels(y, len(x))
    if batchsize < 1 or num_epoch < 0:
        raise InvalidValue('batchsize must be >= 1 and num_epoch >= 0, got {} and {}'
                         .format(batchsize, num_epoch))
    dist, root = distributed, distributed is None or distributed.is_root
    if dist is not None and augment:
        raise InvalidValue('augment=True is not supported in distributed training (the '
                           'augmented batches are drawn per process, not shared by ranks)')
    settings = dict(settings or {}, phase='main' if main else 'joint', batchsize=batchsize,
                    seed=seed, augment=bool(augment), mpi_ranks=1 if dist is None else dist.size,
                    data=checkpoint.data_digest(x, y))
    rng = numpy.random.RandomState(seed)
    if dist is not None:
        dist.setup(net)
        progress = progress and root
    augmenter = None
    if augment:
        from branchynet.augment import AugmentedBatches
        augmenter = AugmentedBatches(x, y, batchsize, seed=rng.randint(2 ** 31 - 1))
    step = net.train_main if main else net.train
    n_batches = (len(x) + batchsize - 1) // batchsize
    losses, accs, first_epoch, order, next_batch, sums = [], [], 0, None, 0, None
    checks = dict(settings=settings, num_epoch=num_epoch, n_samples=len(x), batchsize=batchsize)
    at = None
    if resume and dist is not None:
        at = dist.load_snapshot(snapshot, net, rng, **checks)
    elif resume and checkpoint.exists(snapshot):
        at = checkpoint.load(snapshot, net, rng, **checks)
    if at is not None:
        first_epoch, losses, accs, order, next_batch, sums = (
            at.epoch, at.losses, at.accs, at.order, at.next_batch, at.sums)
        if root:
            print('resuming {} training from epoch {}, batch {} ({})'.format(
                'main' if main else 'joint', at.epoch + 1, at.next_batch + 1, snapshot),
                file=sys.stderr, flush=True)
    elif augment and snapshot:  # an interrupted augmented epoch resumes from its start
        checkpoint.save(snapshot, net, rng, 0, [], [], settings=settings)
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
            sums_loss, sums_acc, weights = sums if sums is not None else (0., 0., 0)
            sums = None
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
                        if augmenter is not None:  # the last epoch-start snapshot stands
                            raise checkpoint.TrainingInterrupted(
                                snapshot, ' at the start of epoch {} (an augmented epoch '
                                'restarts from its beginning)'.format(epoch + 1))
                        sums = (sums_loss, sums_acc, weights)
                        if dist is not None:  # the epoch's sums so far over all ranks
                            sums = dist.reduce_sums(*sums)
                        if root:
                            checkpoint.save(snapshot, net, rng, epoch, losses, accs, order,
                                            b + 1, sums=sums, settings=settings)
                        raise checkpoint.TrainingInterrupted(snapshot)
            if dist is not None:
                sums_loss, sums_acc, weights = dist.reduce_sums(sums_loss, sums_acc, weights)
                dist.epoch_end(net)
            losses.append((sums_loss / max(weights, 1)).tolist())
            accs.append((sums_acc / max(weights, 1)).tolist())
            order, next_batch = None, 0
            if snapshot and root:
                checkpoint.save(snapshot, net, rng, epoch + 1, losses, accs, settings=settings)
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
def test(branchyNet, x_test, y_test, batchsize=10000, main=False, thresholds=None):
    """The original's ``test``: early exit, or the main network with ``main=True``.

    Returns ``(accuracy, seconds, num_exits, accuracy_per_exit)``: the overall
    fraction correct, the total wall time of the evaluation, a numpy array of
    how many samples each exit classified and a numpy array of the accuracy
    of each exit's samples (0 where an exit took none, as the original).
    The thresholds are ``branchyNet.thresholdExits`` unless ``thresholds``
    is given; with neither, each early exit takes the ``percentTestExits``
    share of the samples reaching it (the original's fallback).
    """
    n = branchyNet.numexits()
    if main:
        acc, seconds = branchyNet.test_main(x_test, y_test, batchsize=batchsize)
        counts = numpy.zeros(n, dtype=int)
        counts[-1] = len(x_test)
        accs = numpy.zeros(n)
        accs[-1] = acc
        return acc, seconds, counts, accs
    acc, exit_accs, counts, seconds = branchyNet.test(x_test, y_test, thresholds,
                                                      batchsize=batchsize)
    return acc, seconds, numpy.array(counts), numpy.nan_to_num(numpy.array(exit_accs), nan=0.)


def test_suite_A(branchyNet, x_test, y_test, batchsize=10000, ps=numpy.linspace(0.1, 1.0, 10)):
    """Accuracy and total seconds for each exit share ``p`` in ``ps``
    (``percentTestExits``; the thresholds are cleared). Returns ``(ps, accs, diffs)``."""
    accs, diffs = [], []
    branchyNet.thresholdExits = None
    for p in ps:
        branchyNet.percentTestExits = p
        acc, diff, _, _ = test(branchyNet, x_test, y_test, batchsize=batchsize)
        accs.append(acc)
        diffs.append(diff)
    return ps, accs, diffs


def test_suite_B(branchyNet, x_test, y_test, batchsize=10000, ps=numpy.linspace(0.1, 2.0, 10)):
    """Accuracy, seconds per sample and exit counts for each threshold setting
    in ``ps`` (a number for every early exit, or one list per setting); leaves
    ``thresholdExits`` at the last. Returns ``(ps, accs, diffs, num_exits)``."""
    accs, diffs, num_exits = [], [], []
    for p in ps:
        branchyNet.thresholdExits = p
        acc, diff, num_exit, _ = test(branchyNet, x_test, y_test, batchsize=batchsize)
        accs.append(acc)
        diffs.append(diff)
        num_exits.append(num_exit)
    return ps, numpy.array(accs), numpy.array(diffs) / float(len(y_test)), num_exits


def get_SM(branchyNet, x_test, batchsize=10000):
    """Softmax of every exit for every sample: a list of one ``(N, classes)``
    array per exit. (The original interleaved exits and batches when
    ``x_test`` spanned several batches; here the batches are concatenated.)"""
    return branchyNet.get_SM(x_test, batchsize=batchsize)


def traintest(branchyNet, x_train, y_train, x_test, y_test, batchsize=10000, num_epoch=20,
              main=False, verbose=False):
    """Alternate one training epoch and one evaluation, ``num_epoch`` times.

    Returns ``(losses, accs, train_seconds, test_accs, test_seconds,
    test_num_exits, test_acc_per_exit)`` with one entry per epoch in the lists.
    """
    total_time, test_time = 0.0, 0.0
    losses, accs, t_accs, t_exits, t_breakdowns = [], [], [], [], []
    for _ in range(num_epoch):
        branchyNet.training()
        tr_loss, tr_acc, seconds = train(branchyNet, x_train, y_train, batchsize=batchsize,
                                         num_epoch=1, main=main, progress=False)
        if verbose:
            print('train losses', tr_loss[0])
            print('train accuracy', tr_acc[0])
        total_time += seconds
        losses.append(tr_loss[0])
        accs.append(tr_acc[0])
        branchyNet.testing()
        acc, seconds, exits, breakdown = test(branchyNet, x_test, y_test, batchsize=batchsize,
                                              main=main)
        if verbose:
            print('test accuracy', breakdown)
            print('test exits', exits)
            print('test accuracy overall', acc)
        test_time += seconds
        t_accs.append(acc)
        t_exits.append(exits)
        t_breakdowns.append(breakdown)
    return losses, accs, total_time, t_accs, test_time, t_exits, t_breakdowns


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
    validate_labels(y, len(x), net.num_classes(x))
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
    ts = net._resolve_thresholds(thresholds)  # within the confidence measure's bounds
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


def screen_branchy(branchyNet, x_test, y_test, base_ts, batchsize=1, enumerate_ts=True,
                   verbose=False, **options):
    """The original's ``screen_branchy``: ``(ts, accs, diffs, exits)``.

    ``ts`` is the list of threshold vectors, ``accs`` a numpy array of
    accuracies, ``diffs`` a numpy array of **seconds** per sample (end to end,
    batch size 1; ``diffs *= 1000.`` gives milliseconds as the original
    scripts did) and ``exits`` one numpy array of per-exit counts per setting.
    ``options`` go to ``screen_thresholds`` (default: no trunk-only pass).
    """
    options.setdefault('trunk_only', False)
    ts, accs, diffs, exits = screen_thresholds(branchyNet, x_test, y_test, base_ts,
                                               batchsize=batchsize, enumerate_ts=enumerate_ts,
                                               verbose=verbose, **options)
    return (ts, numpy.array(accs), numpy.array(diffs) / 1000.,
            [numpy.array(e) for e in exits])


def screen_thresholds(net, x, y, base_ts, batchsize=1, enumerate_ts=True, verbose=False,
                      progress=True, trunk_only=True):
    """Measure every threshold setting with a real batch-1 pass over ``x``.

    ``base_ts`` is a list of values tried at every early exit
    (``enumerate_ts=True``: their Cartesian product over the early exits) or,
    with ``enumerate_ts=False``, the list of threshold vectors itself.
    Returns a ``ScreenResult`` (times in milliseconds per sample).
    """
    if batchsize != 1:
        raise ValueError('screen_branchy times samples one at a time (batchsize=1); '
                         'got batchsize={}'.format(batchsize))
    settings = generate_thresholds(base_ts, net.numexits()) if enumerate_ts \
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


def get_inc_points(accs, diffs, ts, exits, inc_amt=-0.0005):
    """The original's curve points: ``(accs, diffs, ts, exits)`` of the kept points.

    Walking from the fastest point to the slowest, the fastest is kept and
    then every point more accurate than the *last kept* one plus ``inc_amt``;
    the default (-0.0005) lets the curve dip by up to 0.05 points of accuracy.
    ``inc_point_indices`` is the strictly rising variant the port draws.
    """
    if not len(accs):
        raise ValueError('get_inc_points needs at least one point')
    order = numpy.argsort(numpy.asarray(diffs), kind='stable')
    kept = [order[0]]
    for i in order[1:]:
        if accs[i] > accs[kept[-1]] + inc_amt:
            kept.append(i)
    return ([accs[i] for i in kept], [diffs[i] for i in kept], [ts[i] for i in kept],
            [exits[i] for i in kept])


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


NO_GAIN = 'no early-exit gain at baseline accuracy'


def choose_knee(accs, ms, baseline_acc, baseline_ms, min_gain=1.05, tolerance=0.005):
    """The knee, if early exit really pays: a dict ``index, gain, note``.

    The knee is the fastest point at least as accurate as the baseline and
    faster than it beyond measurement noise (predicted time <= baseline time
    / ``min_gain``). When no point qualifies there is no knee
    (``gain=False``, ``note=NO_GAIN``): the point returned is then the fastest
    one within ``tolerance`` (a fraction: 0.005 = half a percentage point)
    of the baseline's accuracy that is faster beyond noise, or, failing that,
    the most accurate point, and the note says which.
    """
    if not accs:
        raise ValueError('no screened points to choose a knee from')
    if not min_gain >= 1 or not tolerance >= 0:
        raise ValueError('min_gain must be >= 1 and tolerance >= 0, got {} and {}'.format(
            min_gain, tolerance))
    fast_enough = [i for i in range(len(accs)) if ms[i] * min_gain <= baseline_ms]

    def fastest(indices):
        return min(indices, key=lambda i: (ms[i], -accs[i]))
    knees = [i for i in fast_enough if accs[i] >= baseline_acc]
    if knees:
        return {'index': fastest(knees), 'gain': True, 'note': ''}
    close = [i for i in fast_enough if accs[i] >= baseline_acc - tolerance]
    if close:
        return {'index': fastest(close), 'gain': False,
                'note': '{}; fastest within {:g} points'.format(NO_GAIN, 100 * tolerance)}
    return {'index': select_knee(accs, ms, float('inf')), 'gain': False,
            'note': '{}; none within {:g} points: most accurate setting'.format(
                NO_GAIN, 100 * tolerance)}


# ------------------------------------------------------------------ Table I
TABLE_COLUMNS = ('Network', 'Acc. (%)', 'Time (ms)', 'Gain', 'Trunk-only (ms)',
                 'Trunk-only gain', 'Fast (ms)', 'Fast gain', 'MAC limit', 'Thrshld. T',
                 'Exit (%)')


def branchy_table_results(baseacc, c_basediff, g_basediff, c_accs, c_diffs, g_accs, g_diffs,
                          inc_amt=0.01, network='Orig'):
    """The original's Table I printout: CSV lines
    ``Network,Hardware,Accuracy,Runtime,Speedup`` for the baseline and for the
    screened points (in the given order) whose accuracy beats the last
    printed one by more than ``inc_amt``, plus the last point; CPU then GPU.
    Runtimes in the unit given (the scripts pass ms); speed-up is baseline
    runtime / point runtime. Returns the printed lines.
    """
    lines = ['Network,Hardware,Accuracy,Runtime,Speedup']
    fmt = '{},{},{:1.3f},{:1.3f},{:1.2f}'
    for hw, basediff, accs, diffs in (('cpu', c_basediff, c_accs, c_diffs),
                                      ('gpu', g_basediff, g_accs, g_diffs)):
        lines.append(fmt.format(network, hw, baseacc * 100, basediff, 1.0))
        prev = 0.
        for i, (acc, diff) in enumerate(zip(accs, diffs)):
            if acc - prev > inc_amt or i == len(accs) - 1:
                prev = acc
                lines.append(fmt.format('Branchy ' + network, hw, acc * 100, diff,
                                        basediff / diff))
    print('\n'.join(lines))
    return lines


def compute_network_times(exits, branch_times):
    """Predicted milliseconds per sample of each exit-count vector in ``exits``,
    given ``branch_times[i]``, the seconds per sample of a sample leaving at
    exit ``i`` (``compute_branch_times``)."""
    times = []
    for counts in exits:
        counts = numpy.asarray(counts, dtype=float)
        if len(counts) != len(branch_times) or counts.sum() <= 0:
            raise ValueError('each exit-count vector needs {} counts with a positive '
                             'sum, got {!r}'.format(len(branch_times), counts.tolist()))
        times.append(1000. * float(numpy.dot(counts, branch_times)) / counts.sum())
    return times


def compute_branch_times(net, x_test, y_test, batchsize=1, num_samples=200):
    """Seconds per sample when every sample leaves at exit ``i``, for each exit,
    measured on the first ``num_samples`` samples (threshold infinity at exit
    ``i``, 0 before it). Leaves ``thresholdExits`` unchanged."""
    x, y = x_test[:num_samples], y_test[:num_samples]
    early = net.numexits() - 1
    times = []
    for i in range(net.numexits()):
        ts = [0.0] * min(i, early) + [float('inf')] * (early - min(i, early))
        _, seconds, _, _ = test(net, x, y, batchsize=batchsize, thresholds=ts)
        times.append(seconds / float(len(y)))
    return times


def get_ent_setdiff(old_ent_vals, ent_vals, percentExit=0.5):
    """How differently two sets of per-exit entropies route samples.

    At each exit in turn (samples routed away at earlier exits removed, per
    set), the ``percentExit`` share of the remaining samples with the lowest
    entropy leaves; returns, per exit, the fraction of the samples leaving
    under ``old_ent_vals`` that do not leave under ``ent_vals``.
    """
    diffs = []
    gone_old, gone_new = numpy.empty(0, int), numpy.empty(0, int)
    for i, (vo, vn) in enumerate(zip(old_ent_vals, ent_vals)):
        old_idx, new_idx = numpy.argsort(vo, kind='stable'), numpy.argsort(vn, kind='stable')
        if i:
            old_idx = old_idx[~numpy.isin(old_idx, gone_old)]
            new_idx = new_idx[~numpy.isin(new_idx, gone_new)]
        end = int(len(old_idx) * percentExit)
        old_exits, new_exits = old_idx[:end], new_idx[:end]
        gone_old = numpy.concatenate((gone_old, old_exits))
        gone_new = numpy.concatenate((gone_new, new_exits))
        diffs.append(len(numpy.setdiff1d(old_exits, new_exits)) / float(end) if end else 0.)
    return diffs


def branchy_table_rows(network, baseline, branchy, device='CPU', printout=True,
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
