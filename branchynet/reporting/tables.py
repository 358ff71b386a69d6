"""Table I rows and the Markdown/CSV files the driver writes from them."""
import csv
import io

from branchynet.io.fileio import atomic_write


TABLE_COLUMNS = ('Network', 'Acc. (%)', 'Time (ms)', 'Gain', 'Trunk-only (ms)',
                 'Trunk-only gain', 'Fast (ms)', 'Fast gain', 'Numba (ms)', 'Numba gain',
                 'MAC limit', 'Thrshld. T', 'Exit (%)')
GAIN_COLUMNS = ('Gain', 'Trunk-only gain', 'Fast gain', 'Numba gain', 'MAC limit')
#: The verdict of a gain whose ranges overlap (see ``gain_cell``).
WITHIN_NOISE = 'within noise'


def time_cell(measurement, key='ms'):
    """A time of ``measurement`` as a Table I cell: the median with the fastest
    and slowest repeat and every repeat (``{median, min, max, repeats}``)
    when it was timed more than once, else the plain number (or None)."""
    if not measurement or measurement.get(key) is None:
        return None
    repeats = measurement.get(key + '_repeats')
    if not repeats or len(repeats) < 2:
        return measurement[key]
    return {'median': measurement[key], 'min': min(repeats), 'max': max(repeats),
            'repeats': list(repeats)}


def gain_cell(baseline, branchy, key='ms'):
    """Baseline time / branchy time as a Table I cell.

    Timed repeatedly, the cell holds the ratio of the medians, its range
    (baseline's fastest / branchy's slowest to baseline's slowest / branchy's
    fastest) and a ``verdict``: ``faster`` only when the branchy setting's
    slowest repeat beats the baseline's fastest, ``slower`` when the
    reverse holds, else ``WITHIN_NOISE``. Timed once, the plain ratio.
    """
    base, ours = time_cell(baseline, key), time_cell(branchy, key)
    if base is None or ours is None:
        return None
    if not isinstance(base, dict) or not isinstance(ours, dict):
        base, ours = _median(base), _median(ours)
        return base / ours if ours else None
    if not ours['min'] or not ours['median']:
        return None
    verdict = 'faster' if ours['max'] < base['min'] else \
        'slower' if base['max'] < ours['min'] else WITHIN_NOISE
    return {'median': base['median'] / ours['median'], 'min': base['min'] / ours['max'],
            'max': base['max'] / ours['min'], 'verdict': verdict}


def _median(cell):
    return cell['median'] if isinstance(cell, dict) else cell


def is_gain(cell):
    """Whether a gain cell shows a gain beyond the noise of its repeats."""
    if isinstance(cell, dict):
        return cell.get('verdict') == 'faster'
    return cell is not None and cell > 1


def branchy_table_rows(network, baseline, branchy, device='CPU', printout=True,
                       baseline_fast=None, branchy_fast=None, mac_limit=None,
                       baseline_numba=None, branchy_numba=None, notes=()):
    """The Table I block of one network: the baseline row and the BranchyNet row.

    ``baseline`` and ``branchy`` are measurements as returned by
    ``measure_main`` and ``measure_branchy`` or ``time_settings`` (``branchy``
    with its ``thresholds``). Gain is baseline time / branchy time, end to
    end (``gain_cell``); the trunk-only columns repeat it with the original's
    timer for comparison with the paper. ``baseline_fast``/``branchy_fast``
    and ``baseline_numba``/``branchy_numba`` are the same measurements on the
    compiled fast path and the numba path, and ``mac_limit`` the gain in
    multiply-adds (what a runtime without per-call overhead would reach).
    ``notes`` (e.g. why a column is empty) are kept in the baseline row's
    ``Notes`` and printed under the table. Returns the two rows as dicts
    keyed by ``TABLE_COLUMNS``.
    """
    total = sum(branchy['exit_counts'])
    rows = [
        {'Device': device, 'Network': network, 'Acc. (%)': 100 * baseline['acc'],
         'Time (ms)': time_cell(baseline), 'Trunk-only (ms)': time_cell(baseline, 'trunk_ms'),
         'Fast (ms)': time_cell(baseline_fast), 'Numba (ms)': time_cell(baseline_numba)},
        {'Device': device, 'Network': 'B-' + network, 'Acc. (%)': 100 * branchy['acc'],
         'Time (ms)': time_cell(branchy), 'Gain': gain_cell(baseline, branchy),
         'Trunk-only (ms)': time_cell(branchy, 'trunk_ms'),
         'Trunk-only gain': gain_cell(baseline, branchy, 'trunk_ms'),
         'Fast (ms)': time_cell(branchy_fast), 'Fast gain': gain_cell(baseline_fast, branchy_fast),
         'Numba (ms)': time_cell(branchy_numba),
         'Numba gain': gain_cell(baseline_numba, branchy_numba),
         'MAC limit': mac_limit,
         'Thrshld. T': None if branchy.get('thresholds') is None else list(branchy['thresholds']),
         'Exit (%)': [100. * c / total for c in branchy['exit_counts']]},
    ]
    if notes:
        rows[0]['Notes'] = list(notes)
    if printout:
        print(format_table(rows))
    return rows


def format_cell(column, value):
    """One Table I cell as text: gains as ``1.23x``, times as ``0.731``, a
    repeated time as ``median (fastest-slowest)``, a repeated gain as
    ``1.23x (1.20-1.26)`` followed by ``within noise`` when its repeats
    overlap the baseline's; lists comma-separated."""
    if value is None:
        return '-'
    if isinstance(value, dict) and 'median' in value:
        if column in GAIN_COLUMNS:
            text = '{:.2f}x ({:.2f}-{:.2f})'.format(value['median'], value['min'], value['max'])
            return text + (' ' + WITHIN_NOISE if value.get('verdict') == WITHIN_NOISE else '')
        return '{:.3f} ({}-{})'.format(value['median'], _short(value['min']),
                                       _short(value['max']))
    if column in GAIN_COLUMNS:
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


def _short(ms):
    """A range end in three significant digits, trailing zeros kept (``2.00``,
    ``0.0477``), whole milliseconds from 100 up."""
    return '{:.0f}'.format(ms) if ms >= 100 else '{:#.3g}'.format(ms)


def table_notes(rows):
    """The ``Notes`` of ``rows``, each once, in order."""
    notes = []
    for row in rows:
        for note in row.get('Notes') or ():
            if note not in notes:
                notes.append(note)
    return notes


def format_table(rows, columns=('Device',) + TABLE_COLUMNS):
    """Rows (dicts) as a Markdown table, their notes (if any) under it."""
    lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
    for row in rows:
        lines.append('| ' + ' | '.join(format_cell(c, row.get(c)) for c in columns) + ' |')
    notes = table_notes(rows)
    if notes:
        lines += [''] + ['- ' + note for note in notes]
    return '\n'.join(lines)


def write_table(path_base, rows):
    """Rows as ``path_base.md`` (Markdown) and ``path_base.csv``, each written atomically."""
    with atomic_write(path_base + '.md', 'w') as f:
        f.write(format_table(rows) + '\n')
    buf = io.StringIO()
    columns = ('Device',) + TABLE_COLUMNS
    writer = csv.writer(buf)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([format_cell(c, row.get(c)) for c in columns])
    with atomic_write(path_base + '.csv', 'w') as f:
        f.write(buf.getvalue())


def calibration_report(title, label, summary, n_val, n_test):
    """Markdown report of ``experiment.calibrate_and_compare``'s summary."""
    c = summary['calibrated']
    lines = [
        '# B-{}: thresholds calibrated on held-out data ({})'.format(title, label), '',
        'The paper-style knee is chosen on the test set itself (as the original did), so '
        'its accuracy is optimistic. Here thresholds are chosen on {} validation samples '
        'held out of the training set: the cheapest setting whose validation accuracy is '
        'at least the baseline\'s validation accuracy, with times predicted from the '
        'per-exit batch-1 costs on the {} path (the fastest). They are then measured on '
        'the {} test samples (median of {} repeats, interleaved with the baseline).'.format(
            n_val, c.get('cost_path', 'chainer'), n_test, c.get('repeats', 1)), '',
        '- calibrated T = {}: validation accuracy {:.2f} %, predicted {:.3f} ms; test '
        'accuracy {:.2f} %, measured {:.3f} ms (fast path {}, numba path {})'.format(
            ', '.join('{:.4g}'.format(t) for t in c['thresholds']), 100 * c['val_acc'],
            c['val_ms_predicted'], 100 * c['test_acc'], c['test_ms'],
            *('not measured' if c.get(k) is None else '{:.3f} ms'.format(c[k])
              for k in ('test_ms_fast', 'test_ms_numba'))), '',
        '## Confidence measures (each calibrated on validation, evaluated on test)', '',
        '| measure | T | val acc (%) | val ms (pred.) | test acc (%) | test ms (pred.) | '
        'test MACs | exit (%) | AUROC |', '|---|---|---|---|---|---|---|---|---|']
    for m in summary['measures']:
        lines.append('| {} | {} | {:.2f} | {:.3f} | {:.2f} | {:.3f} | {:.0f} | {} | {} |'.format(
            m['measure'], ', '.join('{:.4g}'.format(t) for t in m['thresholds']),
            100 * m['val_acc'], m['val_ms'], 100 * m['test_acc'], m['test_ms_predicted'],
            m['test_macs'], ', '.join('{:.1f}'.format(v) for v in m['test_exit_pct']),
            ', '.join('-' if a is None else '{:.3f}'.format(a) for a in m['test_exit_auroc'])))
    lines += ['', 'AUROC: how well each early exit\'s score separates its right answers from '
              'its wrong ones on the test set (1 = perfectly, 0.5 = not at all).']
    return '\n'.join(lines) + '\n'
