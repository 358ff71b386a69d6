"""The original project's ``utils``: its names, arguments and return values.

``train``, ``test``, ``screen_branchy``, ``generate_thresholds``,
``get_inc_points``, ``branchy_table_results``, ``test_suite_A/B``,
``traintest``, ``get_SM``, ``compute_network_times``... take the original's
arguments and return what the original returned, so its scripts run
unchanged; their times are end to end (see ``measurement.measure_branchy``).

The port's own functions live by concern: ``training`` (``train_exits``),
``measurement`` (``measure_branchy``, ``measure_main``), ``screening``
(``screen_thresholds``: milliseconds, full records), ``tradeoff``
(``choose_knee``) and ``tables`` (``branchy_table_rows``). They are
re-exported here under the names earlier versions of the port used.
"""

import numpy

# The port's names, at their earlier address.
from branchynet.evaluation.measurement import measure_branchy, measure_main  # noqa: F401
from branchynet.evaluation.screening import (ScreenResult, generate_thresholds,  # noqa: F401
                                  screen_thresholds)
from branchynet.reporting.tables import TABLE_COLUMNS, branchy_table_rows, format_table  # noqa: F401
from branchynet.evaluation.tradeoff import (NO_GAIN, choose_knee, get_inc_points,  # noqa: F401
                                 inc_point_indices, select_knee)
from branchynet.training.loop import train_exits
from branchynet.validation import InvalidValue, brief, is_real_number


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


# ---------------------------------------------------------------- evaluation
def test(branchyNet, x_test, y_test, batchsize=10000, main=False, thresholds=None):
    """The original's ``test``: early exit, or the main network with ``main=True``.

    Returns ``(accuracy, seconds, num_exits, accuracy_per_exit)``: the overall
    fraction correct, the total wall time of the evaluation, a numpy array of
    how many samples each exit classified and a numpy array of the accuracy
    of each exit's samples (0 where an exit took none, as the original).
    With ``main=True`` both arrays are all zeros, as the original returned
    them (no exit decided anything).
    The thresholds are ``branchyNet.thresholdExits`` unless ``thresholds``
    is given; with neither, each early exit takes the ``percentTestExits``
    share of the samples reaching it (the original's fallback).
    ``BranchyNet.test`` returns the same facts in another order,
    ``(accuracy, exit_accuracies, counts, seconds)``, as the original's did.
    """
    n = branchyNet.numexits()
    if main:
        acc, seconds = branchyNet.test_main(x_test, y_test, batchsize=batchsize)
        return acc, seconds, numpy.zeros(n, dtype=int), numpy.zeros(n)
    acc, exit_accs, counts, seconds = branchyNet.test(x_test, y_test, thresholds,
                                                      batchsize=batchsize)
    return acc, seconds, numpy.array(counts), numpy.array(exit_accs, dtype=float)


def test_suite_A(branchyNet, x_test, y_test, batchsize=10000, ps=numpy.linspace(0.1, 1.0, 10)):
    """Accuracy and total seconds for each exit share ``p`` in ``ps``
    (``percentTestExits``). Returns ``(ps, accs, diffs)``.

    The thresholds are cleared first, so the shares decide: in the original,
    thresholds left set took precedence and every ``p`` gave the same point."""
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


# ---------------------------------------------------------------- screening
def screen_branchy(branchyNet, x_test, y_test, base_ts, batchsize=1, enumerate_ts=True,
                   verbose=False, **options):
    """The original's ``screen_branchy``: ``(ts, accs, diffs, exits)``.

    ``ts`` is the list of threshold vectors, ``accs`` a numpy array of
    accuracies, ``diffs`` a numpy array of **seconds** per sample (end to end,
    at ``batchsize`` samples per pass, 1 by default; ``diffs *= 1000.`` gives
    milliseconds as the original scripts did) and ``exits`` one numpy array
    of per-exit counts per setting.
    ``options`` go to ``screen_thresholds`` (default: no trunk-only pass).
    """
    options.setdefault('trunk_only', False)
    ts, accs, diffs, exits = screen_thresholds(branchyNet, x_test, y_test, base_ts,
                                               batchsize=batchsize, enumerate_ts=enumerate_ts,
                                               verbose=verbose, **options)
    return (ts, numpy.array(accs), numpy.array(diffs) / 1000.,
            [numpy.array(e) for e in exits])


# ------------------------------------------------------------------ Table I
#: Keywords only the older form takes, and only the notebooks' form takes.
_CSV_KEYWORDS = {'c_basediff', 'g_basediff', 'c_accs', 'c_diffs', 'g_accs', 'g_diffs', 'inc_amt'}
_COLUMN_KEYWORDS = {'basediff', 'accs', 'diffs', 'exits', 'ts'}


def branchy_table_results(*args, **kwargs):
    """The original's Table I printout, in either of its two forms; returns the
    printed lines.

    * ``branchy_table_results(network, baseacc, basediff, accs, diffs, exits,
      ts)`` (the notebooks' call; its first argument is the network's name):
      one row per screened point, see ``table_columns``;
    * ``branchy_table_results(baseacc, c_basediff, g_basediff, c_accs,
      c_diffs, g_accs, g_diffs, inc_amt=0.01, network='Orig')`` (the
      scripts' call, from an older version of the original): CSV lines,
      see ``table_csv``.
    """
    if (args and isinstance(args[0], str)) or \
            (not set(kwargs) & _CSV_KEYWORDS and set(kwargs) & _COLUMN_KEYWORDS):
        return table_columns(*args, **kwargs)
    return table_csv(*args, **kwargs)


def _print_lines(lines):
    print('\n'.join(lines))
    return lines


def table_columns(network, baseacc, basediff, accs, diffs, exits, ts):
    """Fixed-width columns ``Network, Acc.(%), Time(ms), Gain, Thrshld.T,
    Exit(%)``: the baseline row, then one row per screened point in the given
    order (``B-<network>``, accuracy, runtime in the unit given, gain =
    baseline runtime / point runtime, the thresholds and the share of the
    samples each exit took, in percent)."""
    def braces(values):
        return '{' + ', '.join(values) + '}'
    if not (len(accs) == len(diffs) == len(exits) == len(ts)):
        raise InvalidValue('accs, diffs, exits and ts must have one entry per screened '
                           'point, got lengths {}, {}, {}, {}'.format(
                               len(accs), len(diffs), len(exits), len(ts)))
    lines = ['{:>15}{:>15}{:>15}{:>15}{:>15}{:>15}'.format(
        'Network', 'Acc.(%)', 'Time(ms)', 'Gain', 'Thrshld.T', 'Exit(%)'),
        '{:>15}{:>15.2f}{:>15.2f}{:>15}{:>15}{:>15}'.format(
            network, baseacc * 100., basediff, '-', '-', '-')]
    for acc, diff, counts, t in zip(accs, diffs, exits, ts):
        counts = numpy.asarray(counts, dtype=float)
        shares = 100. * counts / counts.sum() if counts.sum() else counts
        lines.append('{:>15}{:>15.2f}{:>15.2f}{:>15.2f}{:>15}{:>15}'.format(
            'B-' + network, acc * 100., diff, basediff / diff,
            braces(str(float(v)) for v in t), braces(str(round(float(v), 2)) for v in shares)))
    return _print_lines(lines)


def table_csv(baseacc, c_basediff, g_basediff, c_accs, c_diffs, g_accs, g_diffs,
              inc_amt=0.01, network='Orig'):
    """CSV lines ``Network,Hardware,Accuracy,Runtime,Speedup`` for the baseline
    and for the screened points (in the given order) whose accuracy beats the
    last printed one by more than ``inc_amt``, plus the last point; CPU then
    GPU. Runtimes in the unit given (the scripts pass ms); speed-up is
    baseline runtime / point runtime."""
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
    return _print_lines(lines)


def compute_network_times(exits, branch_times):
    """Predicted milliseconds per sample of each exit-count vector in ``exits``,
    given ``branch_times[i]``, the seconds per sample of a sample leaving at
    exit ``i`` (``compute_branch_times``)."""
    try:
        branch = numpy.asarray(branch_times, dtype=float)
    except (TypeError, ValueError):
        branch = None
    if branch is None or branch.ndim != 1 or not len(branch) or \
            not numpy.isfinite(branch).all() or (branch < 0).any():
        raise InvalidValue('branch_times must be a list of seconds per sample, one finite '
                           'number >= 0 per exit, got {}'.format(brief(branch_times)))
    expected = ('exits must be a list of exit-count vectors (counts >= 0, one per exit: {} '
                'here, with a positive sum), e.g. [[10, 5]]'.format(len(branch)))
    try:
        vectors = [numpy.asarray(counts, dtype=float) for counts in exits]
    except (TypeError, ValueError):
        raise InvalidValue('{}; got {}'.format(expected, brief(exits))) from None
    times = []
    for counts in vectors:
        if counts.shape != branch.shape or not numpy.isfinite(counts).all() or \
                (counts < 0).any() or counts.sum() <= 0:
            raise InvalidValue('{}; got {}'.format(expected, brief(exits)))
        times.append(1000. * float(numpy.dot(counts, branch)) / counts.sum())
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
    if not is_real_number(percentExit) or not 0 <= percentExit <= 1:
        raise InvalidValue('percentExit must be a share in [0, 1], got {!r}'.format(
            percentExit))
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
