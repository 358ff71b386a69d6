"""The driver's timing protocol (``measurement.time_settings``) and Table I's
spreads, on an engine whose every stage costs a fixed time on a fake clock:
warm-up then interleaved rounds, medians and ranges, a gain only beyond the
noise, trunk-only never above end to end, and the numba column's absence
said in the table."""
import os

import numpy
import pytest

from branchynet.driver import cli, run as experiment, stages
from branchynet.evaluation import measurement
from branchynet.reporting import report, tables
from branchynet.measures.confidence import get_measure
from branchynet.engines.base import InferenceEngine
from branchynet.engines.routing import exit_steps
from branchynet.validation import InvalidValue
from tests.helpers import make_three_exit_net

from tests.helpers import ROOT  # noqa: E402
CLASSES = 5
N = 12


class FakeClock:
    """``time.perf_counter`` stand-in: time moves only when an engine spends
    it, scaled by the current pass's factor (a machine that drifts)."""

    def __init__(self):
        self.now = 0.0
        self.scale = 1.0

    def __call__(self):
        return self.now

    def spend(self, seconds):
        self.now += seconds * self.scale


class CostedEngine(InferenceEngine):
    """Segments and heads of fixed cost. Sample i is confident (leaves when
    its exit's threshold lets it) at exit ``x[i, 0, 0, 0]`` only. Every
    ``N`` samples sent start a new pass, whose clock factor is the next of
    ``jitter``; ``passes`` records which route ran each pass."""

    def __init__(self, net, clock, segment_s, head_s, jitter=(1.0,), log=None):
        self.net, self.xp, self.clock = net, numpy, clock
        self.jitter, self.sent = list(jitter), 0
        self.log = [] if log is None else log
        self.segment_s, self.head_s = segment_s, head_s
        segments = [lambda h, n=n: self._spend(self.segment_s[n], h) for n in range(len(head_s))]
        heads = [lambda h, n=n: self._spend(self.head_s[n], self._logits(h, n))
                 for n in range(len(head_s))]
        self.steps = exit_steps(segments, heads)

    def _spend(self, seconds, value):
        self.clock.spend(seconds)
        return value

    @staticmethod
    def _logits(h, n):
        z = numpy.zeros((len(h), CLASSES), numpy.float32)
        z[h[:, 0, 0, 0] == n, 0] = 50.
        return z

    def send(self, x):
        if self.sent % N == 0:
            self.clock.scale = self.jitter[(self.sent // N) % len(self.jitter)]
        self.sent += 1
        return x

    def route(self, x, thresholds, timer):
        if self.sent % N == 1:
            self.log.append((id(self), 'route'))
        return super().route(x, thresholds, timer)

    def main_route(self, x, timer):
        if self.sent % N == 1:
            self.log.append((id(self), 'main'))
        return super().main_route(x, timer)

    def main_logits(self, x, timer):
        with timer.stage('trunk'):
            self.clock.spend(sum(self.segment_s))
        with timer.stage('head'):
            return self._spend(self.head_s[-1], self._logits(x, len(self.head_s) - 1))


@pytest.fixture(scope='module')
def net():
    return make_three_exit_net()


def samples(exits):
    """``N`` inputs, sample i confident at exit ``exits[i]``; labels all 0."""
    x = numpy.zeros((N, 1, 8, 8), numpy.float32)
    x[:, 0, 0, 0] = exits
    return x, numpy.zeros(N, numpy.int32)


def pair(net, engine, thresholds, staged=True):
    return [measurement.main_setting('baseline', net, engine, staged),
            measurement.branchy_setting('branchy', net, thresholds, engine, staged)]


def test_a_setting_with_no_early_exit_reports_a_gain_of_one_within_its_spread(net):
    clock = FakeClock()
    engine = CostedEngine(net, clock, segment_s=[1e-3, 2e-3, 1e-3], head_s=[0., 0., 5e-4],
                          jitter=[1.0, 1.2, 0.9, 1.1, 1.05])
    x, y = samples([2] * N)
    stay = get_measure('entropy').stay_all
    timed = measurement.time_settings(pair(net, engine, [stay, stay]), x, y, repeats=5,
                                      warmup=0, clock=clock)
    assert timed['branchy']['exit_counts'] == [0, 0, N]
    gain = tables.gain_cell(timed['baseline'], timed['branchy'])
    assert gain['min'] <= 1.0 <= gain['max'] and gain['min'] < gain['max']
    assert gain['verdict'] == tables.WITHIN_NOISE and not tables.is_gain(gain)
    assert tables.format_cell('Gain', gain).endswith(' within noise')
    # the same machine without drift: every repeat equal, the gain exactly 1, still no gain
    steady = CostedEngine(net, FakeClock(), [1e-3, 2e-3, 1e-3], [0., 0., 5e-4])
    timed = measurement.time_settings(pair(net, steady, [stay, stay]), x, y, repeats=3,
                                      warmup=0, clock=steady.clock)
    gain = tables.gain_cell(timed['baseline'], timed['branchy'])
    assert gain['median'] == pytest.approx(1.0) and gain['verdict'] == tables.WITHIN_NOISE


def test_known_per_exit_costs_give_the_exact_gain_beyond_the_noise(net):
    seg, head = [1e-3, 4e-3, 3e-3], [2e-4, 2e-4, 5e-4]
    exits = [0] * 9 + [1] * 2 + [2]
    x, y = samples(exits)
    clock = FakeClock()
    engine = CostedEngine(net, clock, seg, head, jitter=[1.0, 1.02, 0.98])
    timed = measurement.time_settings(pair(net, engine, [0.5, 0.5]), x, y, repeats=3,
                                      warmup=0, clock=clock)
    assert timed['branchy']['exit_counts'] == [9, 2, 1]
    path = [sum(seg[:k + 1]) + sum(head[:k + 1]) for k in range(3)]
    expected = (sum(seg) + head[-1]) / (sum(path[k] for k in exits) / N)
    gain = tables.gain_cell(timed['baseline'], timed['branchy'])
    assert gain['min'] < expected < gain['max']
    assert gain['verdict'] == 'faster' and tables.is_gain(gain)
    steady = CostedEngine(net, FakeClock(), seg, head)
    timed = measurement.time_settings(pair(net, steady, [0.5, 0.5]), x, y, repeats=2,
                                      warmup=0, clock=steady.clock)
    assert tables.gain_cell(timed['baseline'], timed['branchy'])['median'] == \
        pytest.approx(expected)
    assert timed['baseline']['trunk_ms'] == pytest.approx(1000 * sum(seg))


def test_trunk_only_never_exceeds_end_to_end(net):
    """The trunk is clocked inside the same passes: every repeat, and so the
    median, fastest and slowest, stay within the end-to-end time, however much
    the machine drifts between passes."""
    clock = FakeClock()
    engine = CostedEngine(net, clock, [1e-3, 2e-3, 1e-3], [0., 0., 1e-6],
                          jitter=[1.0, 3.0, 0.3, 2.0, 0.5, 1.5, 0.7])
    x, y = samples([0, 1, 2] * (N // 3))
    timed = measurement.time_settings(pair(net, engine, [0.5, 0.5]), x, y, repeats=7,
                                      warmup=0, clock=clock)
    rows = tables.branchy_table_rows('Fake', timed['baseline'], timed['branchy'],
                                     printout=False)
    for m, row in zip((timed['baseline'], timed['branchy']), rows):
        assert all(t <= e for t, e in zip(m['trunk_ms_repeats'], m['ms_repeats']))
        assert len(m['ms_repeats']) == 7
        for key in ('median', 'min', 'max'):
            assert row['Trunk-only (ms)'][key] <= row['Time (ms)'][key]


def test_rounds_interleave_every_setting_after_a_warm_up(net):
    clock, log = FakeClock(), []
    a = CostedEngine(net, clock, [1e-3] * 3, [0.] * 3, log=log)
    b = CostedEngine(net, clock, [1e-3] * 3, [0.] * 3, log=log)
    x, y = samples([2] * N)
    settings = pair(net, a, [0.5, 0.5]) + [
        measurement.main_setting('baseline b', net, b),
        measurement.branchy_setting('branchy b', net, [0.5, 0.5], b)]
    timed = measurement.time_settings(settings, x, y, repeats=2, warmup=N, clock=clock)
    one_round = [(id(a), 'main'), (id(a), 'route'), (id(b), 'main'), (id(b), 'route')]
    assert log == one_round * 3  # the warm-up, then two rounds
    assert all(r['repeats'] == 2 for r in timed.values())
    assert 'trunk_ms' not in timed['baseline b']  # not staged


def test_spreads_and_gains_as_table_text():
    assert tables.format_cell('Time (ms)', {'median': 1.91, 'min': 1.88, 'max': 1.97}) == \
        '1.910 (1.88-1.97)'
    assert tables.format_cell('Numba (ms)', {'median': 0.05, 'min': 0.0477, 'max': 0.06}) == \
        '0.050 (0.0477-0.0600)'
    assert tables.format_cell('Numba gain', {'median': 3.2, 'min': 3.0, 'max': 3.41,
                                             'verdict': 'faster'}) == '3.20x (3.00-3.41)'
    base = {'ms': 2.0, 'ms_repeats': [2.0, 1.9, 2.2]}
    assert tables.gain_cell(base, {'ms': 2.4, 'ms_repeats': [2.3, 2.4, 2.5]})['verdict'] == \
        'slower'
    assert tables.gain_cell({'ms': 2.0}, {'ms': 1.0}) == 2.0  # timed once: the plain ratio


def test_the_table_and_the_report_say_why_the_numba_column_is_empty(net, monkeypatch,
                                                                   tmp_path):
    from branchynet.engines import numba as numbapath

    def refuse(net):
        raise numbapath.NotCompilable('the numba path cannot compile FancyLayer')
    monkeypatch.setattr(numbapath, 'NumbaBranchyNet', refuse)
    engines, notes = stages.timing_engines(net, 'CPU')
    assert set(engines) == {'chainer', 'fast'}
    assert notes == ['Numba columns empty on CPU: the numba path cannot compile FancyLayer']
    x = numpy.random.RandomState(0).rand(6, 1, 8, 8).astype(numpy.float32)
    y = numpy.zeros(6, numpy.int32)
    timed = stages.time_against_baseline(net, x, y, [0.5, 0.5], engines, repeats=2)
    macs = {'path_macs': [1., 2., 3.], 'main_macs': 3.}
    rows = stages._table_rows('Tiny', 'CPU', timed, macs, notes)
    text = tables.format_table(rows)
    assert 'cannot compile FancyLayer' in text
    assert rows[0]['Numba (ms)'] is None and rows[1]['Numba gain'] is None
    assert isinstance(rows[1]['Fast gain'], dict)
    for row in rows:
        for key in ('median', 'min', 'max'):
            assert row['Trunk-only (ms)'][key] <= row['Time (ms)'][key]
    results = {'network': 'tiny', 'title': 'Tiny', 'seed': 0, 'tables': {'CPU': rows},
               'config': {'preset': 'tiny', 'epochs_main': 1, 'epochs_joint': 1,
                          'batchsize': 8, 'dataset': 'mnist'},
               'data': {'n_train': 1, 'n_test': 6, 'n_timing': 6},
               'training': {'epoch_seconds_main': 1., 'epoch_seconds_joint': 1.},
               'test': {'exit_accs_after_joint': [0.5]}, 'environment': {}}
    md = report.render([results])
    assert '| Numba (ms) | Numba gain |' in md
    assert '- Tiny: Numba columns empty on CPU: the numba path cannot compile FancyLayer' in md

    monkeypatch.setattr(numbapath, 'NumbaBranchyNet', _missing_numba)
    _, notes = stages.timing_engines(net, 'CPU')
    assert 'pip install' in notes[0]


def _missing_numba(net):
    raise ImportError('the numba inference path needs numba: pip install -r '
                      'requirements/numba.txt (No module named numba)')


def test_timing_repeats_come_from_the_preset_or_the_command_line(capsys):
    assert stages.timing_repeats({'preset': 'tiny'}) == 3
    assert stages.timing_repeats({'preset': 'paper'}) == 5
    assert stages.timing_repeats({'preset': 'tiny', 'timing_repeats': 7}) == 7
    with pytest.raises(InvalidValue, match='--timing-repeats must be an integer >= 1'):
        experiment.check_config({'timing_repeats': 0})
    assert cli.main(['--network', 'lenet_mnist', '--timing-repeats', '0',
                     '--out', os.devnull]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['error: --timing-repeats must be an integer >= 1, got 0']


def test_numba_is_in_the_base_install_with_the_pins_of_numba_txt():
    def pins(name):
        with open(os.path.join(ROOT, 'requirements', name)) as f:
            return {line.split('==')[0]: line.strip() for line in f
                    if '==' in line and not line.startswith('#')}
    base, numba = pins('base.txt'), pins('numba.txt')
    assert set(numba) == {'numba', 'llvmlite'}
    assert all(base[k] == v for k, v in numba.items())


def test_measure_main_times_the_trunk_inside_its_end_to_end_pass(net, monkeypatch):
    """Regression: the trunk-only time came from a second pass, so a machine
    slower during that pass reported a trunk above the end-to-end time (3.03
    vs 2.47 ms was seen). Here the second pass runs at a third of the speed."""
    clock = FakeClock()
    monkeypatch.setattr(measurement.time, 'perf_counter', clock)
    engine = CostedEngine(net, clock, [1e-3, 2e-3, 1e-3], [0., 0., 1e-3], jitter=[1.0, 3.0])
    x, y = samples([2] * N)
    base = measurement.measure_main(net, x, y, engine=engine)
    assert base['trunk_ms'] <= base['ms']
    assert base['trunk_ms'] == pytest.approx(4.) and base['ms'] == pytest.approx(5.)
