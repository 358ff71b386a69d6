"""Table I rows and the Markdown/CSV files the driver writes from them."""
import csv
import io

from branchynet.fileio import atomic_write


TABLE_COLUMNS = ('Network', 'Acc. (%)', 'Time (ms)', 'Gain', 'Trunk-only (ms)',
                 'Trunk-only gain', 'Fast (ms)', 'Fast gain', 'MAC limit', 'Thrshld. T',
                 'Exit (%)')


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


def format_cell(column, value):
    """One Table I cell as text (gains as ``1.23x``, lists comma-separated)."""
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
        lines.append('| ' + ' | '.join(format_cell(c, row.get(c)) for c in columns) + ' |')
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
        'per-exit batch-1 costs. They are then measured once on the {} test samples.'.format(
            n_val, n_test), '',
        '- calibrated T = {}: validation accuracy {:.2f} %, predicted {:.3f} ms; test '
        'accuracy {:.2f} %, measured {:.3f} ms (fast path {:.3f} ms)'.format(
            ', '.join('{:.4g}'.format(t) for t in c['thresholds']), 100 * c['val_acc'],
            c['val_ms_predicted'], 100 * c['test_acc'], c['test_ms'], c['test_ms_fast']), '',
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
