"""Table I across networks, ours beside the paper's, from ``_results/*_results.json``.

    python -m branchynet.report [--results _results]

Writes ``table1.md`` (with the environment and schedule of every run) and
``table1.csv``.
"""
import argparse
import csv
import glob
import io
import json
import os
import stat
import sys

from branchynet.io.fileio import atomic_write
from branchynet.reporting.tables import TABLE_COLUMNS, format_cell, table_notes
from branchynet.validation import InvalidValue

COLUMNS = ('Device',) + TABLE_COLUMNS + ('Paper Acc. (%)', 'Paper Time (ms)', 'Paper Gain',
                                        'Paper T', 'Paper Exit (%)')


def _paper_cells(published, device, branchy):
    if not published:
        return {}
    key = 'cpu_ms' if device == 'CPU' else 'gpu_ms'
    base_ms, branchy_ms = published[key]
    if not branchy:
        return {'Paper Acc. (%)': published['baseline_acc'], 'Paper Time (ms)': base_ms}
    return {'Paper Acc. (%)': published['branchy_acc'], 'Paper Time (ms)': branchy_ms,
            'Paper Gain': base_ms / branchy_ms, 'Paper T': list(published['T']),
            'Paper Exit (%)': list(published['exits'])}


def table_rows(results):
    rows = []
    for device, block in sorted(results['tables'].items()):
        for i, row in enumerate(block):
            row = dict(row)
            if i < 2:  # the paper has a baseline and a knee row; our calibrated row has no twin
                row.update(_paper_cells(results['config'].get('published'), device, i == 1))
            rows.append(row)
    return rows


def _fmt(column, value):
    if column.startswith('Paper '):
        column = column[len('Paper '):]
        column = {'T': 'Thrshld. T'}.get(column, column)
    if isinstance(value, list):  # standard JSON holds NaN and inf as null
        # a threshold is never NaN (refused everywhere), so its null was inf
        missing = float('inf') if column == 'Thrshld. T' else float('nan')
        value = [missing if v is None else v for v in value]
    return format_cell(column, value)


def render(all_results):
    lines = ['# Table I: ours beside the paper\'s', '',
             'Time (ms): per sample at batch size 1, end to end (trunk, branch heads, '
             'softmax, entropy, routing): the median of the timed repeats with the fastest '
             'and slowest in brackets, each repeat a full pass over the timing samples after '
             'a warm-up, baseline and BranchyNet interleaved round by round. Gain: baseline '
             'time / BranchyNet time (ratio of the medians; in brackets, from the baseline\'s '
             'fastest over BranchyNet\'s slowest to the reverse); "within noise" when '
             'BranchyNet\'s slowest repeat is not faster than the baseline\'s fastest. '
             'Trunk-only: the trunk segments alone, clocked inside the same passes as Time, '
             'as the original timed (comparable with the paper\'s column). Fast: the same '
             'network and weights on the compiled array path (branchynet.engines.fast); Numba: '
             'on the numba-compiled path (branchynet.engines.numba), empty where it cannot '
             'run (said under the table). MAC limit: the gain in multiply-adds, what a runtime '
             'without per-call overhead would reach. Paper: '
             'Table I of Teerapittayanon et al. 2016 (CPU 3.0 GHz, GPU GTX TITAN X).', '',
             '| ' + ' | '.join(COLUMNS) + ' |', '|' + '---|' * len(COLUMNS)]
    notes = []
    for results in all_results:
        rows = table_rows(results)
        for row in rows:
            lines.append('| ' + ' | '.join(_fmt(c, row.get(c)) for c in COLUMNS) + ' |')
        notes += ['{}: {}'.format(results['title'], n) for n in table_notes(rows)]
    if notes:
        lines += [''] + ['- ' + n for n in notes]
    lines += ['', '## Runs', '']
    for r in all_results:
        c, env, tr = r['config'], r['environment'], r['training']
        lines += [
            '### {} ({})'.format(r['title'], r['network']), '',
            '- schedule: preset `{}`, {} main-only + {} joint epochs, batch {}, seed {}'.format(
                c['preset'], c['epochs_main'], c['epochs_joint'], c['batchsize'], r['seed']),
            '- data: {} ({} training / {} test samples; timed and screened on {})'.format(
                c.get('dataset_path') or c['dataset'], r['data']['n_train'],
                r['data']['n_test'], r['data']['n_timing']),
            '- training time: {:.0f} s per main epoch, {:.0f} s per joint epoch{}'.format(
                tr['epoch_seconds_main'], tr['epoch_seconds_joint'],
                ' ({} MPI ranks, global batch {}; timing on rank 0 alone)'.format(
                    r['distributed']['ranks'], r['distributed']['global_batch'])
                if r.get('distributed') else ''),
            '- test accuracy per exit after joint training: {}'.format(', '.join(
                '{:.2f} %'.format(100 * a) for a in r['test']['exit_accs_after_joint'])),
            '- environment: {}'.format(', '.join('{} {}'.format(k, v) for k, v in env.items())),
            '']
    return '\n'.join(lines) + '\n'


#: The largest results file read (a run's is well under 1 MiB).
MAX_RESULTS_BYTES = 32 * 2 ** 20


def _read_regular(path):
    """The text of ``path`` when it is a regular file of at most
    ``MAX_RESULTS_BYTES``; a FIFO, a device (through a symlink too) or a
    larger file is refused with ``ValueError`` before anything is read."""
    limit = MAX_RESULTS_BYTES
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the open
    with os.fdopen(fd, 'rb') as fh:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError('not a regular file')
        if info.st_size > limit:
            raise ValueError('{} bytes, above the {} MiB a results file may have'.format(
                info.st_size, limit >> 20))
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ValueError('above the {} MiB a results file may have'.format(limit >> 20))
    return data.decode('utf-8')


def _readable(path):
    """The results in ``path``, or None (with a warning) when damaged."""
    try:
        results = json.loads(_read_regular(path))
        if not isinstance(results, dict):
            raise ValueError('not a JSON object')
        table_rows(results)
        render([results])
        return results
    except RecursionError:
        reason = 'RecursionError: JSON nested too deeply'
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        reason = '{}: {}'.format(type(e).__name__, e)
    print('warning: skipping {}: not a readable results file ({})'.format(path, reason),
          file=sys.stderr)
    return None


def write(results_dir='_results', networks=None):
    """Write table1.md/.csv from the ``*_results.json`` in ``results_dir``
    (only those of ``networks`` when given); damaged files are skipped."""
    if not os.path.isdir(results_dir):
        raise InvalidValue('--results {}: no such folder (expected the _results folder '
                           'written by branchynet.driver.run)'.format(results_dir))
    if networks is not None:
        files = [os.path.join(results_dir, n + '_results.json') for n in networks]
        files = [f for f in files if os.path.exists(f)]
    else:
        files = sorted(glob.glob(os.path.join(results_dir, '*_results.json')))
    all_results = [r for r in map(_readable, files) if r is not None]
    if not all_results:
        raise InvalidValue('no readable *_results.json in {}{}: run branchynet.driver.run '
                           'first'.format(results_dir, ' for ' + ', '.join(networks)
                                          if networks else ''))
    with atomic_write(os.path.join(results_dir, 'table1.md'), 'w') as f:
        f.write(render(all_results))
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(('Network key',) + COLUMNS)
    for r in all_results:
        for row in table_rows(r):
            writer.writerow([r['network']] + [_fmt(c, row.get(c)) for c in COLUMNS])
    with atomic_write(os.path.join(results_dir, 'table1.csv'), 'w') as f:
        f.write(buf.getvalue())
    return all_results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--results', default='_results')
    parser.add_argument('--networks', default=None,
                        help='comma-separated networks to include (default: every '
                             '*_results.json in the folder)')
    args = parser.parse_args(argv)
    networks = None if args.networks is None else [n for n in args.networks.split(',') if n]
    try:
        written = write(args.results, networks)
    except InvalidValue as e:
        print('error: {}'.format(e), file=sys.stderr)
        return 2
    with open(os.path.join(args.results, 'table1.md')) as f:
        print(f.read())
    left_out = sorted(set(networks or ()) - {r.get('network') for r in written})
    if left_out:
        print('error: Table I lacks {}: their results files are unreadable (see the '
              'warnings above)'.format(', '.join(left_out)), file=sys.stderr)
        return 1
    return 0

