"""Figures: training curves per exit and the accuracy/runtime trade-off (Fig. 3).

The original project's functions (``plot_layers``, ``plot_tradeoff``,
``plot_roc``, ``plot_line_tradeoff``, ``plot_layer_entropy``, ``plot_exits``,
``plot_runtimes``) take its arguments and draw what it drew. The port's own
figures (``plot_training``, ``plot_tradeoff_curve``, ``plot_entropy_sweep``,
``plot_measures``) draw on a fresh figure and, given ``path`` (without
extension), write it as PNG and PDF atomically. All return the Figure.
"""
import sys

import matplotlib

if 'ipykernel' not in sys.modules:  # notebooks keep their inline backend
    matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from branchynet.io.fileio import atomic_path  # noqa: E402
import numpy  # noqa: E402

from branchynet.evaluation.tradeoff import get_inc_points, inc_point_indices  # noqa: E402


def save_figure(fig, path, formats=('png', 'pdf')):
    """Write ``fig`` to ``path.<fmt>`` for every format, atomically."""
    for fmt in formats:
        with atomic_path('{}.{}'.format(path, fmt)) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150, bbox_inches='tight')
    plt.close(fig)


def exit_names(num_exits):
    return ['exit {}'.format(n + 1) if n < num_exits - 1 else 'exit {} (main)'.format(n + 1)
            for n in range(num_exits)]


def plot_training(losses, accs, title='', path=None, phase_labels=None):
    """Training loss and accuracy per exit per epoch.

    ``losses[epoch][exit]``/``accs[epoch][exit]``; ``phase_labels`` may be a
    list of (first_epoch, label) pairs drawn as vertical markers (e.g. where
    joint training starts).
    """
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    num_exits = max(len(row) for row in losses)
    names = exit_names(num_exits)
    for n in range(num_exits):
        xs = [e + 1 for e, row in enumerate(losses) if len(row) > n]
        ax_loss.plot(xs, [row[n] for row in losses if len(row) > n], marker='.', label=names[n])
        ax_acc.plot(xs, [100 * row[n] for row in accs if len(row) > n], marker='.',
                    label=names[n])
    for first, label in phase_labels or ():
        for ax in (ax_loss, ax_acc):
            ax.axvline(first + 0.5, color='grey', ls=':', lw=1)
            ax.text(first + 0.6, 0.98, label, transform=ax.get_xaxis_transform(),
                    va='top', fontsize=8, color='grey')
    ax_loss.set(xlabel='epoch', ylabel='training loss (softmax cross-entropy)', yscale='log')
    ax_acc.set(xlabel='epoch', ylabel='training accuracy (%)')
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=.3)
        ax.legend()
    fig.suptitle(title)
    if path:
        save_figure(fig, path)
    return fig


def plot_tradeoff_curve(accs, ms, base_acc, base_ms, knee=None, title='', path=None,
                       xlabel='runtime (ms per sample, batch size 1, end to end)',
                       all_points=True, extra_series=(), series_label='BranchyNet'):
    """Fig. 3: accuracy against runtime of every screened threshold setting.

    The baseline is a diamond, the accuracy-rising curve a line and the knee
    (index ``knee`` into ``accs``) a star. ``extra_series`` adds the same for
    other inference paths: dicts with ``label, accs, ms, base_acc,
    base_ms, knee``.
    """
    fig, ax = plt.subplots(figsize=(7, 4.8))
    series = [{'label': series_label, 'accs': accs, 'ms': ms, 'base_acc': base_acc,
               'base_ms': base_ms, 'knee': knee}] + list(extra_series)
    colors = ['tab:blue', 'tab:purple', 'tab:orange']
    for i, sr in enumerate(series):
        color = colors[i % len(colors)]
        a, d = sr['accs'], sr['ms']
        if all_points:
            ax.scatter(d, [100 * v for v in a], s=8, color=color, alpha=.25)
        curve = inc_point_indices(a, d)
        ax.plot([d[j] for j in curve], [100 * a[j] for j in curve], '-o', color=color, ms=3,
                label='{}: accuracy-rising points'.format(sr['label']))
        ax.plot([sr['base_ms']], [100 * sr['base_acc']], 'D', color='tab:red', ms=9,
                markeredgecolor=color, markeredgewidth=2,
                label='{}: baseline network'.format(sr['label']))
        if sr['knee'] is not None:
            ax.plot([d[sr['knee']]], [100 * a[sr['knee']]], '*', color='tab:green', ms=16,
                    markeredgecolor=color, label='{}: knee'.format(sr['label']), zorder=5)
    ax.set(xlabel=xlabel, ylabel='classification accuracy (%)', title=title)
    ax.grid(alpha=.3)
    ax.legend(loc='lower right', fontsize=7)
    if path:
        save_figure(fig, path)
    return fig


def plot_entropy_sweep(sms, y, title='', path=None, grid=None):
    """Fig. 4 style: for each early exit alone, as its entropy threshold T grows,
    the share of samples leaving there and the overall accuracy (the others
    classified by the last exit).

    ``sms`` is ``net.get_SM(x)`` (one softmax array per exit) and ``y`` the labels.
    """
    from branchynet.measures.confidence import entropy
    grid = numpy.logspace(-5, numpy.log10(numpy.log(sms[0].shape[1])), 200) \
        if grid is None else numpy.asarray(grid)
    last_correct = sms[-1].argmax(axis=1) == y
    fig, (ax_acc, ax_exit) = plt.subplots(1, 2, figsize=(11, 4))
    names = exit_names(len(sms))
    for n, sm in enumerate(sms[:-1]):
        ent = entropy(sm)
        correct = sm.argmax(axis=1) == y
        leave = ent[None, :] < grid[:, None]
        acc = numpy.where(leave, correct[None, :], last_correct[None, :]).mean(axis=1)
        ax_acc.plot(grid, 100 * acc, label='{} then last exit'.format(names[n]))
        ax_exit.plot(grid, 100 * leave.mean(axis=1), label=names[n])
    ax_acc.axhline(100 * last_correct.mean(), color='tab:red', ls='--', lw=1,
                   label='last exit alone')
    ax_acc.set(xscale='log', xlabel='entropy threshold T (nats)',
               ylabel='overall accuracy (%)')
    ax_exit.set(xscale='log', xlabel='entropy threshold T (nats)',
                ylabel='samples leaving at this exit (%)')
    for ax in (ax_acc, ax_exit):
        ax.grid(alpha=.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    if path:
        save_figure(fig, path)
    return fig


def plot_measures(curves, base_acc, base_ms, title='', path=None):
    """Accuracy against predicted batch-1 time for each confidence measure:
    ``curves[measure] = (accs, ms)`` over a threshold sweep; the
    accuracy-rising points of each are drawn, the baseline as a diamond."""
    fig, ax = plt.subplots(figsize=(7, 4.8))
    for measure, (accs, ms) in curves.items():
        idx = inc_point_indices(accs, ms)
        ax.plot([ms[i] for i in idx], [100 * accs[i] for i in idx], '-o', ms=3, label=measure)
    ax.plot([base_ms], [100 * base_acc], 'D', color='tab:red', ms=9, label='baseline network')
    ax.set(xlabel='predicted runtime (ms per sample, batch size 1, Chainer path)',
           ylabel='test accuracy (%)', title=title)
    ax.grid(alpha=.3)
    ax.legend(loc='lower right', fontsize=8)
    if path:
        save_figure(fig, path)
    return fig


def plot_exit_roc(rocs, title='', path=None):
    """ROC curves of the early-exit decision, one per confidence measure:
    ``rocs[measure] = (fpr, tpr, auroc)`` from ``calibration.exit_roc`` (a
    right answer is a positive; a low score flags it). The diagonal is a
    score that knows nothing."""
    fig, ax = plt.subplots(figsize=(5, 4.8))
    for measure, (fpr, tpr, auroc) in rocs.items():
        label = measure if auroc is None else '{} (AUROC {:.3f})'.format(measure, auroc)
        ax.plot(fpr, tpr, label=label)
    ax.plot([0, 1], [0, 1], ':', color='grey')
    ax.set(xlabel='wrong answers let out (false positive rate)',
           ylabel='right answers let out (true positive rate)', title=title,
           xlim=(0, 1), ylim=(0, 1.01))
    ax.grid(alpha=.3)
    ax.legend(loc='lower right', fontsize=8)
    if path:
        save_figure(fig, path)
    return fig


# ------------------------------------------------------- the original's figures
def _save_original(fig, output_path):
    """The original saved to the exact path given (its extension picks the format)."""
    if output_path:
        with atomic_path(output_path) as tmp:
            fig.savefig(tmp, bbox_inches='tight')  # tmp keeps the extension


def plot_layers(values, save_name=None, xlabel='', ylabel=''):
    """One curve per exit when ``values`` is a list of per-exit sequences
    (``list(zip(*losses))``), else a single 'Last Layer' curve; with
    ``save_name`` the figure is titled by it and saved as ``save_name.png``."""
    values = list(values)
    if not values:
        raise ValueError('plot_layers needs at least one value')
    fig = plt.figure(figsize=(12, 10))
    if isinstance(values[0], (tuple, list, numpy.ndarray)) and numpy.ndim(values[0]) == 1:
        for i, val in enumerate(values):
            plt.plot(val, label='Layer ' + str(i), linewidth=4.0)
    else:
        plt.plot(values, label='Last Layer', linewidth=4.0)
    plt.legend(loc='best')
    plt.xlabel(xlabel)
    plt.ylabel(ylabel)
    if save_name is not None:
        plt.title(save_name)
        _save_original(fig, save_name + '.png')
    return fig


def plot_tradeoff(ps, accs, diffs, baseacc, basediff):
    """Accuracy (%, left axis) and runtime (right axis) against the exit
    factor ``ps``, each with its baseline as a dashed line."""
    fig = plt.figure(figsize=(12, 10))
    ax = fig.add_subplot(111)
    lines = ax.plot(ps, numpy.array(accs) * 100., '-g', label='Accuracy', linewidth=5.0)
    lines += ax.plot(ps, [baseacc] * len(ps), '--g', label='Baseline Accuracy', linewidth=5.0)
    ax.set_xlabel('Percentage Exit Factor')
    ax.set_ylabel('Accuracy')
    ax2 = ax.twinx()
    lines += ax2.plot(ps, diffs, '-r', label='Time', linewidth=5.0)
    lines += ax2.plot(ps, [basediff] * len(ps), '--r', label='Baseline Time', linewidth=5.0)
    ax2.set_ylabel('Runtime (s)')
    ax.legend(lines, [ln.get_label() for ln in lines], loc='best')
    return fig


def plot_roc(ps, accs, diffs, baseacc, basediff):
    """Accuracy against runtime of every point, the baseline as a diamond.

    Despite its name (the original's) this is not a receiver operating
    characteristic; the ROC of the exit decision is ``plot_exit_roc``."""
    fig = plt.figure(figsize=(12, 10))
    plt.plot(diffs, accs, linewidth=4, label='Our Method')
    plt.plot(basediff, baseacc, 'D', linewidth=4, label='Baseline')
    plt.xlabel('Runtime (s)')
    plt.ylabel('Overall Accuracy')
    plt.legend(loc=0)
    return fig


def plot_line_tradeoff(accs, diffs, ps, exits, baseacc, basediff, orig_label='Baseline',
                       title=None, our_label='Our Method', xlabel='Runtime (s)',
                       ylabel='Classification Accuracy', all_samples=False, knee_idx=None,
                       xlim=None, ylim=None, inc_amt=-0.0005, output_path=None):
    """Fig. 3 as the original drew it: the ``get_inc_points(..., inc_amt)``
    curve (accuracy in %), the baseline as a diamond, every point with
    ``all_samples``, and the curve's point ``knee_idx`` as a star; saved to
    ``output_path`` (format from its extension) when given."""
    inc_accs, inc_rts, _, _ = get_inc_points(list(accs), list(diffs), ps, exits,
                                             inc_amt=inc_amt)
    fig = plt.figure(figsize=(4.5, 3.5))
    if all_samples:
        plt.plot(diffs, numpy.array(accs) * 100., 'go', linewidth=4, label=our_label)
    plt.xlabel(xlabel)
    plt.ylabel(ylabel)
    if xlim:
        plt.xlim(xlim)
    if ylim:
        plt.ylim(ylim)
    curve = numpy.array(inc_accs) * 100.
    plt.plot(inc_rts, curve, '-o', color='#5163d3', ms=6, linewidth=4, label=our_label)
    if knee_idx is not None:
        plt.plot(inc_rts[knee_idx], curve[knee_idx], '*', color='#50d350', ms=16,
                 label=our_label + ' knee')
    plt.plot(basediff, baseacc * 100., 'D', color='#d3515a', ms=8, label=orig_label)
    plt.legend(loc='best')
    if title:
        plt.title(title)
    _save_original(fig, output_path)
    return fig


def plot_layer_entropy(leakyNet, x):
    """Each exit's entropies of the samples ``x``, sorted (every sample
    evaluated at every exit). Moves the network to the CPU, as the original."""
    from branchynet.measures.confidence import entropy
    leakyNet.to_cpu()
    fig = plt.figure(figsize=(12, 10))
    for i, sm in enumerate(leakyNet.get_SM(numpy.asarray(x, dtype=numpy.float32))):
        plt.plot(numpy.sort(entropy(sm)), linewidth=4, label='Exit ' + str(i + 1))
    plt.legend(loc='best')
    plt.xlabel('Sorted Samples by Entropy')
    plt.ylabel('Entropy')
    return fig


def plot_exits(g_exits, g_accs, g_exits2, g_accs2, i=0, labels=('Joint', 'Separate')):
    """Accuracy (%) against the number of samples leaving at exit ``i``, for
    two screenings (e.g. joint and separate training)."""
    fig = plt.figure(figsize=(4.5, 3.5))
    plt.plot(numpy.array(g_exits)[:, i], numpy.array(g_accs) * 100, linewidth=4,
             label=labels[0])
    plt.plot(numpy.array(g_exits2)[:, i], numpy.array(g_accs2) * 100, linewidth=4,
             label=labels[1])
    plt.legend(loc='best')
    plt.ylabel('Accuracy (%)')
    plt.xlabel('Num Exits')
    return fig


def plot_runtimes(g_diffs, g_accs, g_diffs2, g_accs2, i=0, labels=('Joint', 'Separate')):
    """Accuracy (%) against runtime (ms) for two screenings; ``i`` is unused,
    as in the original."""
    fig = plt.figure(figsize=(4.5, 3.5))
    plt.plot(g_diffs, numpy.array(g_accs) * 100, linewidth=4, label=labels[0])
    plt.plot(g_diffs2, numpy.array(g_accs2) * 100, linewidth=4, label=labels[1])
    plt.legend(loc='best')
    plt.ylabel('Accuracy (%)')
    plt.xlabel('Runtime (ms)')
    return fig
