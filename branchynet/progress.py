"""Progress output: a bar for long loops (count, rate, time left, on stderr)
and ``timed_step`` for one long opaque call (a line before saying how long it
took the last time, a line after with the time it took)."""
import contextlib
import json
import os
import sys
import time

#: Set by ``set_quiet`` (the driver's ``--quiet``): no progress output at all.
QUIET = False


def set_quiet(quiet=True):
    """Silence every progress bar and step line of this process (``--quiet``)."""
    global QUIET
    QUIET = bool(quiet)


def on_terminal(stream=None):
    """Whether progress should be shown: stderr (or ``stream``) is a terminal
    and output is not silenced. The default of the short steps' bars, which
    stay out of logs and pipes."""
    stream = stream or sys.stderr
    return not QUIET and hasattr(stream, 'isatty') and stream.isatty()


def _fmt_seconds(s):
    s = int(round(s))
    return '{}:{:02d}:{:02d}'.format(s // 3600, s // 60 % 60, s % 60) if s >= 3600 \
        else '{}:{:02d}'.format(s // 60, s % 60)


def _number(v):
    return '{:.1f}'.format(v) if isinstance(v, float) else str(v)


class Progress:
    """``with Progress(total, 'train') as bar: bar.update(k, loss=0.1)``.

    On a terminal the line is redrawn in place; in logs a line is printed
    every ``log_every`` seconds, so background runs stay readable.
    """

    def __init__(self, total, desc='', unit='it', enabled=True, stream=None,
                 log_every=30.0):
        self.total, self.desc, self.unit = total, desc, unit
        self.enabled = bool(enabled) and not QUIET
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, 'isatty') and self.stream.isatty()
        self.interval = 0.5 if self.tty else log_every
        self.count = 0
        self.start = time.perf_counter()
        self._shown = self.start
        self.postfix = ''

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @classmethod
    def auto(cls, total, desc='', unit='it', enabled=None):
        """A bar shown only on a terminal (``on_terminal``) unless ``enabled``
        says otherwise (True also logs to a pipe every ``log_every`` s)."""
        return cls(total, desc, unit, enabled=on_terminal() if enabled is None else enabled)

    def update(self, n=1, **postfix):
        self.count += n
        if postfix:
            self.postfix = ' '.join('{}={:.4g}'.format(k, v) if isinstance(v, float)
                                    else '{}={}'.format(k, v) for k, v in postfix.items())
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._shown >= self.interval:
            self._shown = now
            self._draw(now)

    def line(self, now=None):
        now = now or time.perf_counter()
        elapsed = now - self.start
        rate = self.count / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.count) / rate if rate > 0 and self.total else 0.0
        frac = self.count / self.total if self.total else 0.0
        return '{} {:5.1%} {}/{} {} [{} elapsed, {} left, {:.1f} {}/s] {}'.format(
            self.desc, frac, _number(self.count), _number(self.total), self.unit,
            _fmt_seconds(elapsed),
            _fmt_seconds(left), rate, self.unit, self.postfix).rstrip()

    def _draw(self, now):
        if self.tty:
            self.stream.write('\r' + self.line(now) + '\x1b[K')
        else:
            self.stream.write(self.line(now) + '\n')
        self.stream.flush()

    def close(self):
        if self.enabled:
            self._draw(time.perf_counter())
            if self.tty:
                self.stream.write('\n')
            self.enabled = False


def step_times_path():
    """Where ``timed_step`` keeps the last duration of each step:
    ``$BRANCHYNET_STEP_TIMES``, else ``~/.cache/branchynet/step_seconds.json``."""
    return os.environ.get('BRANCHYNET_STEP_TIMES') or os.path.join(
        os.path.expanduser('~'), '.cache', 'branchynet', 'step_seconds.json')


def _step_times():
    """The recorded step durations; a file that is no such record (damaged, not
    a regular file, over ``fileio.MAX_RECORD_BYTES``, nested too deeply) gets a
    warning, counts as none and is replaced by ``timed_step``."""
    from branchynet.io.fileio import read_record
    return read_record(step_times_path(), 'step times', 'it will be written again')


@contextlib.contextmanager
def timed_step(doing, key, done, log=print):
    """Around one long call that cannot report progress (a compilation):
    ``log`` says what is being done and how long it took the last time
    (recorded under ``key``), then how long it took now (``done`` + seconds).
    The durations are kept between runs in ``step_times_path()``."""
    last = _step_times().get(key)
    log('{} ({})'.format(doing, 'took {:.1f} s the last time'.format(last)
                         if isinstance(last, (int, float)) else 'no earlier time recorded'))
    start = time.perf_counter()
    yield
    seconds = time.perf_counter() - start
    log('{} in {:.1f} s'.format(done, seconds))
    times = _step_times()
    times[key] = round(seconds, 2)
    from branchynet.io.fileio import atomic_write
    with contextlib.suppress(OSError):  # a read-only home only loses the record
        with atomic_write(step_times_path(), 'w') as f:
            json.dump(times, f, indent=1, sort_keys=True)
