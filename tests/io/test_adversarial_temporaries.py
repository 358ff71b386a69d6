"""Only temporaries this project made, by a process that has ended, are
deleted from --out; user files that look like temporaries are kept."""
import os
import subprocess
import sys

import pytest

from branchynet.io import fileio


def _dead_pid():
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    return dead.pid


@pytest.mark.parametrize('name', ['.notes.part.md', '.chapter2.part', '.draft.part.txt',
                                  '.a.b.part', '.x.branchynet-tmp-12.part'])
def test_user_files_named_like_temporaries_are_kept(tmp_path, name):
    (tmp_path / name).write_text('mine')
    assert fileio.remove_stale_temporaries(str(tmp_path)) == []
    assert (tmp_path / name).read_text() == 'mine'


def test_a_killed_writers_temporary_is_removed_and_a_live_ones_kept(tmp_path):
    dead = tmp_path / '.m.{}{}-abcd1234.part.npz'.format(fileio.TEMP_TAG, _dead_pid())
    live = tmp_path / '.m.{}{}-abcd1234.part.npz'.format(fileio.TEMP_TAG, os.getppid())
    for p in (dead, live):
        p.write_bytes(b'half')
    assert fileio.remove_stale_temporaries(str(tmp_path)) == [dead.name]
    assert live.exists() and not dead.exists()


def test_atomic_write_temporaries_are_recognised(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace

    def replace(src, dst):
        seen.append(os.path.basename(src))
        return real_replace(src, dst)
    monkeypatch.setattr(os, 'replace', replace)
    for target in ('table1.md', 'model.npz', 'noext', '.hidden'):
        with fileio.atomic_write(str(tmp_path / target), 'w') as f:
            f.write('x')
    assert len(seen) == 4 and all(fileio.is_temporary(n) for n in seen), seen
