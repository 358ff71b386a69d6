"""Two runs racing for one --out: at most one ever holds it, whatever point
one of them is paused at."""
import json
import os
import socket
import subprocess
import sys
import textwrap
import time

from branchynet.io import fileio

from tests.helpers import ROOT  # noqa: E402

#: Takes the lock on FOLDER, prints held/refused, holds it until END exists.
#: With PAUSE_DIR, the first unlink of the lock file or flock call waits for
#: PAUSE_DIR/go (after creating PAUSE_DIR/paused): the point between deciding
#: to take the lock over and taking it.
CONTENDER = textwrap.dedent('''
    import fcntl, os, sys, time
    sys.path.insert(0, {root!r})
    from branchynet.io import fileio
    folder, end, pause_dir = sys.argv[1], sys.argv[2], sys.argv[3]

    def wait_for(path):
        while not os.path.exists(path):
            time.sleep(0.01)
    if pause_dir != '-':
        state = {{'paused': False}}
        real_unlink, real_flock = os.unlink, fcntl.flock

        def once():
            if not state['paused']:
                state['paused'] = True
                open(os.path.join(pause_dir, 'paused'), 'w').close()
                wait_for(os.path.join(pause_dir, 'go'))

        def unlink(path, *args, **kwargs):
            if os.path.basename(os.fspath(path)) == fileio.RunLock.NAME:
                once()
            return real_unlink(path, *args, **kwargs)

        def flock(fd, op):
            once()
            return real_flock(fd, op)
        os.unlink, fcntl.flock = unlink, flock
    lock = fileio.RunLock(folder)
    try:
        lock.acquire()
        print('held', flush=True)
    except fileio.RunLocked:
        print('refused', flush=True)
    wait_for(end)
    lock.release()
''').format(root=ROOT)


def _start(folder, end, pause_dir='-'):
    return subprocess.Popen([sys.executable, '-c', CONTENDER, str(folder), str(end),
                             str(pause_dir)], stdout=subprocess.PIPE, text=True)


def _wait_for(path, proc=None, timeout=60):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, 'timed out waiting for {}'.format(path)
        if proc is not None and proc.poll() is not None:
            return
        time.sleep(0.01)


def _dead_pid():
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    return dead.pid


def test_a_run_paused_while_taking_over_a_stale_lock_never_shares_it(tmp_path):
    out, pause = tmp_path / 'out', tmp_path / 'pause'
    out.mkdir()
    pause.mkdir()
    (out / fileio.RunLock.NAME).write_text(json.dumps(
        {'pid': _dead_pid(), 'host': socket.gethostname(), 'started': 'then'}))
    end = tmp_path / 'end'
    first = _start(out, end, pause)
    _wait_for(pause / 'paused', first)
    second = _start(out, end)
    second_says = second.stdout.readline().strip()
    (pause / 'go').touch()
    first_says = first.stdout.readline().strip()
    end.touch()
    assert first.wait(60) == 0 and second.wait(60) == 0
    assert sorted([first_says, second_says]) == ['held', 'refused'], (first_says, second_says)


def test_a_run_paused_before_locking_a_released_lock_file_never_shares_it(tmp_path):
    out, pause = tmp_path / 'out', tmp_path / 'pause'
    out.mkdir()
    pause.mkdir()
    holder = _start(out, tmp_path / 'end_holder')
    assert holder.stdout.readline().strip() == 'held'
    waiting = _start(out, tmp_path / 'end', pause)
    _wait_for(pause / 'paused', waiting)
    (tmp_path / 'end_holder').touch()  # the holder releases: deletes the file
    assert holder.wait(60) == 0
    newcomer = _start(out, tmp_path / 'end')
    newcomer_says = newcomer.stdout.readline().strip()
    (pause / 'go').touch()
    waiting_says = waiting.stdout.readline().strip()
    (tmp_path / 'end').touch()
    assert waiting.wait(60) == 0 and newcomer.wait(60) == 0
    assert sorted([waiting_says, newcomer_says]) == ['held', 'refused'], (
        waiting_says, newcomer_says)


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path):
    holder = _start(tmp_path, tmp_path / 'never')
    assert holder.stdout.readline().strip() == 'held'
    holder.kill()
    holder.wait()
    assert (tmp_path / fileio.RunLock.NAME).exists()
    with fileio.RunLock(tmp_path) as lock:
        assert lock.held
