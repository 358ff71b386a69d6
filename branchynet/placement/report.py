"""What ``place_exits`` found, as a table, a JSON record and a figure.

``PlacementReport`` is a dict (strict JSON once saved) with:

* ``candidates``: per candidate boundary: ``point``, ``layer`` (the trunk
  layer it follows), ``mac_share``, ``head`` (kind and MACs), ``probe_acc``
  (held-out accuracy of its probe head alone), ``exit_share`` and ``acc``,
  ``predicted_ms`` of the best network with that exit alone, ``prefix_ms``
  and ``head_ms`` (the cost model);
* ``chosen``: the exit set chosen, its thresholds, predicted and measured
  time and accuracy; ``baselines``: the same for the main network alone,
  the fixed-fraction (SDN) set and any set given to compare;
* ``best_at_most``: ``{n: the best set of at most n exits}`` for n up to
  ``k``, as the search priced it (after a save, n is a string);
* ``additivity``: predicted against measured forced-exit times of a few
  networks built for real; ``settings``.

``markdown()`` renders it; ``save(folder, stem)`` writes ``stem.md``,
``stem.json`` and the figure ``stem.png``.
"""
import os
import sys

import matplotlib

if 'ipykernel' not in sys.modules:  # notebooks keep their inline backend
    matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

from branchynet.io.fileio import atomic_path, atomic_write  # noqa: E402
from branchynet.io.runrecord import write_json  # noqa: E402


def _pct(v):
    return '' if v is None else '{:.2f}'.format(100 * v)


def _ms(v):
    return '' if v is None else '{:.4g}'.format(v)


def _goal(s):
    if s.get('budget') is not None:
        return 'budget {:.4g} ms'.format(s['budget'])
    goal = 'target accuracy {:.2%}'.format(s['target_acc'])
    if s.get('probe_joint_epochs'):
        goal += (' (the probes were trained jointly with a copy of the trunk for {} epoch(s): '
                 'every predicted accuracy below, the main network\'s included, is that '
                 'copy\'s, searched at {:.2%})'.format(s['probe_joint_epochs'],
                                                     s['search_target_acc']))
    return goal


def _features(s):
    kind = s.get('probe_features', 'cached')
    if kind == 'cached and streamed':
        return '{:,} cached, {:,} streamed'.format(
            s['probe_cached_samples'], s['n_probe'] - s['probe_cached_samples'])
    return kind


class PlacementReport(dict):
    """The record of one placement (see the module's docstring)."""

    def markdown(self):
        s = self['settings']
        lines = ['# Exit placement', '',
                 'Engine {engine}, batch size {batchsize}; goal: {goal}; at most {k} exit(s); '
                 '{n} candidates; probes trained on {n_probe} samples ({probe_epochs} epochs, '
                 'activations {features}), held-out set {n_val} samples.'.format(
                     goal=_goal(s), features=_features(s),
                     n=len(self['candidates']), **s), '',
                 '| boundary | after layer | MAC share (%) | head | head MACs | probe acc. (%) '
                 '| exit share (%) | acc. (%) | predicted ms | prefix ms | head ms |',
                 '|---|---|---|---|---|---|---|---|---|---|---|']
        chosen = set(self['chosen']['points'])
        for c in self['candidates']:
            lines.append('| {}{} | {} | {:.1f} | {} | {:,} | {} | {} | {} | {} | {} | {} |'.format(
                c['point'], ' *' if c['point'] in chosen else '', c['layer'],
                100 * c['mac_share'], c['head'], c['head_macs'], _pct(c['probe_acc']),
                _pct(c['exit_share']), _pct(c['acc']), _ms(c['predicted_ms']),
                _ms(c['prefix_ms']), _ms(c['head_ms'])))
        lines += ['', '`*`: chosen. Exit share, accuracy and predicted ms: the best thresholds '
                  'for a network with that one exit (held-out set).', '',
                  '| exit set | boundaries | thresholds | predicted acc. (%) | predicted ms '
                  '| measured acc. (%) | measured ms | met |', '|---|---|---|---|---|---|---|---|']
        for name, r in [('chosen', self['chosen'])] + sorted(self['baselines'].items()):
            lines.append('| {} | {} | {} | {} | {} | {} | {} | {} |'.format(
                name, ', '.join(map(str, r['points'])) or '-',
                ', '.join('{:.3g}'.format(t) for t in r.get('thresholds', [])) or '-',
                _pct(r.get('acc')), _ms(r.get('ms')), _pct(r.get('measured_acc')),
                _ms(r.get('measured_ms')), 'yes' if r.get('met') else 'no'))
        if self['chosen']['points']:
            chosen_note = ('The chosen row\'s thresholds are those calibrated afterwards on the '
                           'held-out set on the engine (the network\'s own; calibrated accuracy '
                           '{}%, {} ms)'.format(_pct(self['chosen'].get('calibrated_acc')),
                                               _ms(self['chosen'].get('calibrated_ms'))))
        else:
            chosen_note = 'The chosen network has no early exit (no thresholds to calibrate)'
        lines += ['', 'Predicted: probe heads on the held-out set, times from the cost model, '
                  'thresholds from the search. {}, then measured: {}.'.format(
                      chosen_note, self['chosen'].get('measured_on', 'not measured'))]
        if self.get('additivity'):
            lines += ['', '## Do segment times add up?', '',
                      '| exits at | predicted ms per exit | measured ms per exit | max rel. '
                      'error (%) |', '|---|---|---|---|']
            for a in self['additivity']:
                lines.append('| {} | {} | {} | {:.1f} |'.format(
                    ', '.join(map(str, a['points'])),
                    ', '.join(_ms(v) for v in a['predicted_ms']),
                    ', '.join(_ms(v) for v in a['measured_ms']), 100 * a['max_rel_error']))
        return '\n'.join(lines) + '\n'

    def figure(self, path=None):
        """Accuracy against time: each candidate's probe alone (at the time
        of leaving there) and each candidate as a one-exit network, the
        chosen set and the baselines. Written as ``path.png`` when given."""
        fig, ax = plt.subplots(figsize=(7, 4.8))
        cands = self['candidates']
        xs = [c['prefix_ms'] + c['head_ms'] for c in cands]
        ax.plot(xs, [100 * c['probe_acc'] for c in cands], 'o', color='tab:grey', ms=4,
                label='probe alone (time to leave there)')
        for c, x in zip(cands, xs):
            ax.annotate('{:.0f}%'.format(100 * c['mac_share']), (x, 100 * c['probe_acc']),
                        fontsize=6, xytext=(2, 2), textcoords='offset points')
        ax.plot([c['predicted_ms'] for c in cands], [100 * c['acc'] for c in cands], 's',
                color='tab:blue', ms=4, label='one exit there, calibrated')
        markers = {'main network': ('D', 'tab:red'), 'fixed fractions (SDN)': ('^', 'tab:orange')}
        for name, r in sorted(self['baselines'].items()):
            m, color = markers.get(name, ('v', 'tab:purple'))
            ax.plot([r['ms']], [100 * r['acc']], m, color=color, ms=8, label=name)
        ch = self['chosen']
        ax.plot([ch['ms']], [100 * ch['acc']], '*', color='tab:green', ms=15,
                label='chosen: {}'.format(', '.join(map(str, ch['points'])) or 'no exit'))
        ax.set(xlabel='predicted ms per sample ({} engine, batch {})'.format(
            self['settings']['engine'], self['settings']['batchsize']),
            ylabel='held-out accuracy (%)', title='Exit placement')
        ax.grid(alpha=.3)
        ax.legend(fontsize=7, loc='lower right')
        if path is not None:
            with atomic_path(path + '.png') as tmp:
                fig.savefig(tmp, format='png', dpi=130, bbox_inches='tight')
            plt.close(fig)
        return fig

    def save(self, folder, stem='placement'):
        """Write ``stem.md``, ``stem.json`` and ``stem.png`` into ``folder``;
        returns their paths."""
        os.makedirs(folder, exist_ok=True)
        base = os.path.join(folder, stem)
        with atomic_write(base + '.md', 'w') as f:
            f.write(self.markdown())
        write_json(base + '.json', dict(self))
        self.figure(base)
        return [base + ext for ext in ('.md', '.json', '.png')]
