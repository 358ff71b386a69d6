"""Progress output: bars on a terminal only (silent in pipes and with
--quiet), and the before/after lines of a long opaque step."""
import io
import sys
import textwrap

import numpy
import pytest

from branchynet import progress, utils
from branchynet.evaluation import screening
from tests.helpers import make_three_exit_net


class Terminal(io.StringIO):
    def isatty(self):
        return True


def terminal(monkeypatch):
    """stderr replaced by a terminal (inside the test: pytest's capture
    resets sys.stderr between a fixture's set-up and the test)."""
    term = Terminal()
    monkeypatch.setattr(sys, 'stderr', term)
    monkeypatch.setattr(progress, 'QUIET', False)
    return term


def test_a_bar_shows_count_rate_and_time_left_on_a_terminal(monkeypatch):
    stderr = terminal(monkeypatch)
    with progress.Progress.auto(4, 'work', 'it') as bar:
        for _ in range(4):
            bar.update()
    text = stderr.getvalue()
    assert 'work 100.0% 4/4 it' in text and 'left' in text and 'it/s' in text


def test_bars_are_silent_in_pipes_and_with_quiet(monkeypatch):
    stderr = terminal(monkeypatch)
    monkeypatch.setattr(sys, 'stderr', io.StringIO())  # a pipe
    with progress.Progress.auto(3, 'work') as bar:
        bar.update(3)
    assert sys.stderr.getvalue() == ''
    monkeypatch.setattr(sys, 'stderr', stderr)
    progress.set_quiet()
    try:
        with progress.Progress.auto(3, 'work') as bar:
            bar.update(3)
        with progress.Progress(3, 'training', enabled=True) as bar:  # training's bars too
            bar.update(3)
    finally:
        progress.set_quiet(False)
    assert stderr.getvalue() == ''


def _samples(n):
    rng = numpy.random.RandomState(0)
    return (rng.randn(n, 1, 8, 8).astype(numpy.float32),
            rng.randint(0, 5, n).astype(numpy.int32))


def test_batch1_timing_path_costs_and_exit_outputs_report_progress(monkeypatch):
    stderr = terminal(monkeypatch)
    net = make_three_exit_net()
    x, y = _samples(12)
    utils.measure_main(net, x, y)
    screening.path_costs(net, x[:4])
    screening.exit_outputs(net, x)
    text = stderr.getvalue()
    assert 'batch-1 timing 100.0% 12/12 sample' in text  # one pass (trunk-only inside it)
    assert 'path costs 100.0% 12/12 sample' in text  # 4 samples at each of 3 exits
    assert 'exit outputs 100.0% 12/12 sample' in text


def test_calibration_reports_progress(monkeypatch):
    stderr = terminal(monkeypatch)
    x, y = _samples(30)
    make_three_exit_net().calibrate(x, y, cost_samples=3)
    assert 'calibrate (entropy) 100.0%' in stderr.getvalue()


def test_timed_step_says_how_long_it_took_last_time(tmp_path, monkeypatch):
    monkeypatch.setenv('BRANCHYNET_STEP_TIMES', str(tmp_path / 'times.json'))
    lines = []
    for _ in range(2):
        with progress.timed_step('compiling X', 'compile X', 'compiled X', log=lines.append):
            pass
    assert lines[0] == 'compiling X (no earlier time recorded)'
    assert lines[1].startswith('compiled X in ') and lines[1].endswith(' s')
    assert lines[2].startswith('compiling X (took ') and 'the last time' in lines[2]


@pytest.mark.parametrize('kind', ['deep', 'fifo', 'zero'])
def test_a_step_times_file_that_is_no_record_counts_as_none(tmp_path, kind):
    """A 100,000-deep JSON, a FIFO and a link to /dev/zero as step_seconds.json:
    a warning, no earlier time, and the file written again; not a
    RecursionError, a hang, or memory exhausted (capped here at 1 GiB more)."""
    from tests.helpers import run_python, untrusted_record
    path = tmp_path / 'times.json'
    untrusted_record(path, kind)
    done = run_python(textwrap.dedent('''
        from branchynet import progress
        from tests.helpers import limit_memory
        limit_memory()
        with progress.timed_step('compiling X', 'compile X', 'compiled X'):
            pass
    '''), env={'BRANCHYNET_STEP_TIMES': str(path)}, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith('compiling X (no earlier time recorded)')
    assert 'times.json is not a record of step times' in done.stderr
    assert path.is_file() and not path.is_symlink() and 'compile X' in path.read_text()


def test_numba_compile_is_announced_with_the_time_it_took(tmp_path, monkeypatch):
    from branchynet.driver import stages
    monkeypatch.setenv('BRANCHYNET_STEP_TIMES', str(tmp_path / 'times.json'))
    lines = []
    monkeypatch.setattr(stages, 'log', lines.append)
    engine = stages.compile_numba_engine(make_three_exit_net(), 'three')
    assert hasattr(engine, 'predict')
    assert lines[0].startswith('CPU: compiling the numba engine of three')
    assert lines[-1].startswith('CPU: numba engine of three ready in ')


def test_downloads_show_megabytes_and_time_left(tmp_path, monkeypatch):
    stderr = terminal(monkeypatch)
    from datasets import _fetch
    source = tmp_path / 'src.bin'
    source.write_bytes(b'\0' * 3_000_000)
    _fetch.download(source.as_uri(), str(tmp_path / 'dest.bin'))
    text = stderr.getvalue()
    assert 'dest.bin 100.0% 3.0/3.0 MB' in text and 'left' in text and 'MB/s' in text
    assert (tmp_path / 'dest.bin').stat().st_size == 3_000_000
