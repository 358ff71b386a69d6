"""Data-parallel training and evaluation (branchynet.training.distributed) on 2 MPI ranks.

Each test starts ``mpiexec -n 2`` on tests/training/mpi/worker.py (B-LeNet on a few
hundred random images) and compares rank 0's result with the same work done
by this single process.
"""
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import numpy
import pytest
from hypothesis import given, settings, strategies as st

from branchynet.training import distributed, loop as training
from branchynet.validation import InvalidValue

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, 'mpi'))
import worker  # noqa: E402

#: Largest weight difference allowed between 2-rank and 1-process training
#: after the steps below (8 steps, the CPU training kernels on): the two
#: differ only in floating-point summation order (per-rank means averaged vs
#: one mean); measured up to 9.9e-7.
WEIGHT_ATOL = 1e-5
#: Relative difference allowed in the per-epoch mean losses (measured <= 7e-8).
LOSS_RTOL = 1e-6


def _mpiexec():
    local = os.path.join(os.path.dirname(sys.executable), 'mpiexec')
    found = local if os.path.exists(local) else shutil.which('mpiexec')
    assert found and distributed.available(), (
        'the distributed tests need MPI and mpi4py: pip install -r requirements/mpi.txt')
    return found


def mpirun(args, out, n=2, timeout=300, check=True):
    env = dict(os.environ, OMP_NUM_THREADS='1', OPENBLAS_NUM_THREADS='1')
    cmd = [_mpiexec(), '-n', str(n), sys.executable, os.path.join(HERE, 'mpi', 'worker.py')]
    proc = subprocess.run(cmd + list(args) + ['--out', str(out)] * (args[0] != 'experiment'),
                          env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def single_process_training(n, batch, epochs, main, opt, seed=0, **recipe):
    x, y = worker.make_data(n, seed + 1)
    net = worker.make_net(seed, opt)
    losses, accs, _ = training.train_exits(net, x, y, main=main, batchsize=batch,
                                           num_epoch=epochs, seed=seed, progress=False,
                                           **recipe)
    return net, losses, accs


# ------------------------------------------------------------ without MPI
def test_unread_bytes_counts_what_the_reader_of_a_pipe_has_not_taken(tmp_path):
    read_end, write_end = os.pipe()
    with os.fdopen(read_end, 'rb', buffering=0) as r, os.fdopen(write_end, 'wb') as w:
        assert distributed.unread_bytes(w) == 0
        w.write(b'x' * 100)
        w.flush()
        assert distributed.unread_bytes(w) == 100
        r.read(40)
        assert distributed.unread_bytes(w) == 60
    with open(tmp_path / 'f', 'w') as f:  # a file has no reader to wait for
        assert distributed.unread_bytes(f) is None
        assert distributed.wait_until_read(f, timeout=0)
    assert distributed.unread_bytes(io.StringIO()) is None


def test_waiting_before_an_abort_ends_when_the_pipe_is_read_or_time_runs_out():
    read_end, write_end = os.pipe()
    with os.fdopen(read_end, 'rb', buffering=0) as r, os.fdopen(write_end, 'wb') as w:
        w.write(b'last words\n')
        w.flush()
        start = time.monotonic()
        assert not distributed.wait_until_read(w, timeout=0.2)  # nobody reads
        assert time.monotonic() - start >= 0.2
        reader = threading.Timer(0.1, r.read, args=(11,))
        reader.start()
        assert distributed.wait_until_read(w, timeout=30)
        reader.join()
        assert distributed.unread_bytes(w) == 0


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 300), st.integers(1, 8))
def test_split_and_shards_cover_every_index_once(n, size):
    parts = distributed.split_indices(numpy.arange(n), size)
    assert len(parts) == size
    assert numpy.array_equal(numpy.concatenate(parts), numpy.arange(n))
    lengths = [len(p) for p in parts]
    assert max(lengths) - min(lengths) <= 1
    bounds = [distributed.shard_bounds(n, r, size) for r in range(size)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match='size must be >= 1'):
        distributed.split_indices(numpy.arange(4), 0)
    with pytest.raises(ValueError, match='rank must be in'):
        distributed.shard_bounds(10, 2, 2)


class _FakeWorld:
    """One rank's view of a 2-rank job whose other rank reported ``other``."""

    def __init__(self, rank, other):
        self.rank, self.size, self.other = rank, 2, other
        self.mpi_comm = self

    def allgather(self, mine):
        return [mine, self.other] if self.rank == 0 else [self.other, mine]


def test_agreed_errors_reach_every_rank():
    from branchynet.validation import InputError
    # rank 1 sees rank 0's input error: it raises one too, naming rank 0, marked
    dist = distributed.Distributed(_FakeWorld(1, (0, '--out x: not writable')))
    with pytest.raises(InputError, match=r'^rank 0: --out x: not writable$') as e:
        with dist.agreed((InputError, OSError)):
            pass
    assert e.value.all_ranks
    # the failing rank re-raises its own exception, marked
    dist = distributed.Distributed(_FakeWorld(0, None))
    with pytest.raises(InvalidValue, match='bad') as e:
        with dist.agreed((InputError,)):
            raise InvalidValue('bad')
    assert e.value.all_ranks
    # a bug on another rank: a RuntimeError here, not marked (MPI_Abort follows)
    dist = distributed.Distributed(_FakeWorld(0, (-1, 'division by zero')))
    with pytest.raises(RuntimeError, match='rank 1 failed: division by zero') as e:
        with dist.agreed((InputError,)):
            pass
    assert not getattr(e.value, 'all_ranks', False)
    # nothing failed anywhere: the block ends normally
    with distributed.Distributed(_FakeWorld(0, None)).agreed():
        pass


def _rewrite_settings(path, change):
    with numpy.load(path) as npz:
        arrays = dict(npz)
    settings = json.loads(str(arrays['settings']))
    change(settings)
    arrays['settings'] = numpy.array(json.dumps(settings, sort_keys=True))
    numpy.savez(path, **arrays)


def test_snapshots_record_the_number_of_ranks(tmp_path):
    """A single process records mpi_ranks 1; a snapshot from before the number
    was recorded is a single process's; another number is refused by name."""
    x, y = worker.make_data(64, 1)
    snap = str(tmp_path / 's.npz')

    def resume(epochs=2):
        net = worker.make_net(0, 'Adam')
        return training.train_exits(net, x, y, batchsize=32, num_epoch=epochs, seed=0,
                                    progress=False, snapshot=snap, resume=True)
    resume(epochs=1)
    with numpy.load(snap) as npz:
        assert json.loads(str(npz['settings']))['mpi_ranks'] == 1
    _rewrite_settings(snap, lambda s: s.pop('mpi_ranks'))
    assert len(resume()[0]) == 2
    _rewrite_settings(snap, lambda s: s.update(mpi_ranks=3))
    with pytest.raises(InvalidValue, match=r'mpi_ranks: the snapshot has 3, this run 1 '
                       r'\(MPI ranks: resume with mpiexec -n 3 \.\.\. --distributed'):
        resume()


# ---------------------------------------------------------------- 2 ranks
@pytest.mark.parametrize('n, main, opt, communicator', [
    (200, False, 'Adam', 'packed'),   # equal parts: 4 steps of 32 + 32 samples per epoch
    (200, False, 'Adam', 'naive'),    # ChainerMN's own CPU communicator
    (200, True, 'Adam', 'packed'),    # main network only
    (201, False, 'MomentumSGD', 'packed'),  # last batch 9 = 5 + 4: scaled gradients
    (193, False, 'Adam', 'packed'),   # last batch of 1: rank 1 has nothing (weight 0)
])
def test_two_ranks_train_like_one_process(tmp_path, n, main, opt, communicator):
    args = ['train', '--n', str(n), '--batch', '64', '--epochs', '2', '--opt', opt,
            '--communicator', communicator]
    mpirun(args + ['--main'] * main, tmp_path)
    got = numpy.load(tmp_path / 'result.npz')
    net, losses, accs = single_process_training(n, 64, 2, main, opt)
    for name, value in worker.weights(net).items():
        numpy.testing.assert_allclose(got[name], value, rtol=0, atol=WEIGHT_ATOL, err_msg=name)
    numpy.testing.assert_allclose(got['losses'], losses, rtol=LOSS_RTOL)
    numpy.testing.assert_allclose(got['accs'], accs, rtol=LOSS_RTOL)
    # the steps moved the weights far more than the tolerance
    start = worker.weights(worker.make_net(0, opt))
    assert max(numpy.abs(value - start[name]).max()
               for name, value in worker.weights(net).items()) > 100 * WEIGHT_ATOL


def test_two_ranks_shift_and_schedule_like_one_process(tmp_path):
    """Every rank moves its samples by the offsets one process would use, and
    steps with the same scheduled step sizes."""
    recipe = {'shift': 2, 'lr_schedule': 'cosine'}
    mpirun(['train', '--n', '200', '--batch', '64', '--epochs', '2',
            '--recipe', json.dumps(recipe)], tmp_path)
    got = numpy.load(tmp_path / 'result.npz')
    net, losses, _ = single_process_training(200, 64, 2, False, 'Adam', **recipe)
    plain, _, _ = single_process_training(200, 64, 2, False, 'Adam')
    for name, value in worker.weights(net).items():
        numpy.testing.assert_allclose(got[name], value, rtol=0, atol=WEIGHT_ATOL, err_msg=name)
    numpy.testing.assert_allclose(got['losses'], losses, rtol=LOSS_RTOL)
    # the recipe changed the training far more than the tolerance
    assert max(numpy.abs(value - worker.weights(plain)[name]).max()
               for name, value in worker.weights(net).items()) > 100 * WEIGHT_ATOL


def test_ranks_train_on_every_sample_once_per_epoch(tmp_path):
    mpirun(['shards', '--n', '193', '--batch', '64'], tmp_path)
    got = numpy.load(tmp_path / 'result.npz')
    seen = numpy.concatenate([got['rank0'], got['rank1']])
    assert numpy.array_equal(numpy.sort(seen), numpy.arange(193))
    assert len(got['rank0']) == 97 and len(got['rank1']) == 96  # 32+32+32+1 and 32+32+32+0


def test_ranks_on_one_machine_share_its_cores_between_their_kernels(tmp_path, monkeypatch):
    monkeypatch.delenv('BRANCHYNET_TRAIN_THREADS', raising=False)
    mpirun(['shards', '--n', '8', '--batch', '4'], tmp_path)
    # per rank: kernel threads, ranks sharing its cores, cores it may use
    ranks = numpy.load(tmp_path / 'result.npz')['kernel_threads']
    if any(usable < 2 for _, _, usable in ranks):
        pytest.skip('a rank may use only one core: nothing to share')
    for threads, sharers, usable in ranks:
        assert sharers == 2  # mpiexec here binds no rank: both may use every core
        assert threads == usable // 2


def test_gathered_exit_outputs_equal_single_process(tmp_path):
    mpirun(['outputs', '--n', '101'], tmp_path)
    got = numpy.load(tmp_path / 'result.npz')
    assert int(got['shard_len']) == 51  # rank 0's shard of 101; rank 1 has 50
    x, _ = worker.make_data(101, 1)
    net = worker.make_net(0, 'Adam')
    numpy.testing.assert_allclose(got['sm'], numpy.stack(net.get_SM(x)), rtol=1e-5, atol=1e-7)
    numpy.testing.assert_allclose(got['logits'], numpy.stack(net.get_logits(x)),
                                  rtol=1e-5, atol=1e-6)
    assert numpy.array_equal(got['labels'], net.predict_main(x))
    from branchynet.evaluation import screening
    scores, preds = screening.exit_outputs(net, x)
    numpy.testing.assert_allclose(got['scores'], scores, rtol=1e-5, atol=1e-7)
    assert numpy.array_equal(got['preds'], preds)


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    """Rank 0's result of 2 epochs on 2 ranks without interruption."""
    out = tmp_path_factory.mktemp('straight')
    mpirun(['train', '--n', '200', '--batch', '64', '--epochs', '2'], out)
    return dict(numpy.load(out / 'result.npz'))


def assert_same_training(got, expected, curves_from=0):
    for name in expected:
        if name not in ('comm_seconds', 'losses', 'accs'):
            numpy.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    for name in ('losses', 'accs'):
        numpy.testing.assert_array_equal(got[name][curves_from:],
                                         expected[name][curves_from:], err_msg=name)


def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path, uninterrupted):
    common = ['train', '--n', '200', '--batch', '64', '--snapshot', str(tmp_path / 's.npz')]
    mpirun(common + ['--epochs', '1'], tmp_path / 'first')
    mpirun(common + ['--epochs', '2', '--resume'], tmp_path / 'resumed')
    assert_same_training(numpy.load(tmp_path / 'resumed' / 'result.npz'), uninterrupted)


def test_signal_on_one_rank_stops_all_at_one_batch_and_resumes(tmp_path, uninterrupted):
    snap = str(tmp_path / 'snap.npz')
    common = ['train', '--n', '200', '--batch', '64', '--epochs', '2', '--snapshot', snap]
    mpirun(common + ['--interrupt-after', '2'], tmp_path / 'stopped')
    assert int(numpy.load(tmp_path / 'stopped' / 'result.npz')['interrupted']) == 1
    with numpy.load(snap) as s:  # rank 0 wrote the position both ranks agreed on
        assert int(s['epoch']) == 0 and int(s['next_batch']) == 2
    mpirun(common + ['--resume'], tmp_path / 'resumed')
    resumed = numpy.load(tmp_path / 'resumed' / 'result.npz')
    assert_same_training(resumed, uninterrupted, curves_from=1)
    # the interrupted epoch's record covers all its batches: the snapshot holds
    # both ranks' sums so far, added in another order than in one go
    for name in ('losses', 'accs'):
        numpy.testing.assert_allclose(resumed[name][0], uninterrupted[name][0], rtol=1e-12,
                                      err_msg=name)


def test_a_snapshot_of_two_ranks_is_refused_by_one_process(tmp_path):
    snap = tmp_path / 's.npz'
    mpirun(['train', '--n', '200', '--batch', '64', '--epochs', '1', '--snapshot', str(snap)],
           tmp_path / 'first')
    x, y = worker.make_data(200, 1)
    net = worker.make_net(0, 'Adam')
    with pytest.raises(InvalidValue, match=r'mpi_ranks: the snapshot has 2, this run 1 \(MPI '
                       r'ranks: resume with mpiexec -n 2 \.\.\. --distributed'):
        training.train_exits(net, x, y, batchsize=64, num_epoch=2, seed=0, progress=False,
                             snapshot=str(snap), resume=True)


def test_a_failing_rank_ends_the_job_with_its_error(tmp_path):
    proc = mpirun(['fail'], tmp_path, timeout=120, check=False)
    assert proc.returncode != 0
    assert 'injected failure on rank 1' in proc.stderr
    assert 'aborting all 2 ranks' in proc.stderr


@pytest.mark.slow
def test_experiment_driver_writes_on_rank_zero_only(tmp_path, mnist_data):
    out = tmp_path / 'run'
    proc = mpirun(['experiment', '--out', str(out), '--', '--distributed', '--network',
                   'lenet_mnist', '--preset', 'tiny', '--n-timing', '60', '--n-val', '100',
                   '--out', str(out)], out, timeout=600)
    rank0 = (out / 'writes_rank0.txt').read_text().splitlines()
    assert (out / 'writes_rank1.txt').read_text() == ''  # not even the lock or a folder
    actions = {(what, os.path.relpath(path, out))
               for what, path in (line.split(' ', 1) for line in rank0)}
    assert {('write', '_models/lenet_mnist.npz'), ('write', '_models/lenet_mnist.bn'),
            ('write', '_models/lenet_mnist.main.snapshot.npz'),
            ('write', '_results/lenet_mnist_results.json'),
            ('write', '_figs/lenet_mnist_training.png'), ('lock', '.'),
            ('makedirs', '_models'), ('clean', '_models')} <= actions
    results = json.loads((out / '_results/lenet_mnist_results.json').read_text())
    assert results['distributed']['ranks'] == 2
    assert results['distributed']['communicator'] == 'PackedCommunicator'
    assert proc.stdout.count('main network: test accuracy') == 1  # rank 0 prints
    for rank in (0, 1):  # runtime.tune_allocator() applied on every rank
        assert (out / 'tuned_rank{}.txt'.format(rank)).read_text() == 'True'
    # --resume reads rank 0's snapshot and every rank refuses it together (another
    # batch size): one message, exit status 2, no abort, nothing written or removed
    # but the run lock
    proc = mpirun(['experiment', '--out', str(out), '--', '--distributed', '--network',
                   'lenet_mnist', '--preset', 'tiny', '--n-timing', '60', '--n-val', '100',
                   '--batchsize', '7', '--resume', '--out', str(out)], out, timeout=600,
                  check=False)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and 'batchsize: the snapshot has' in errors[0], proc.stderr
    assert 'abort' not in proc.stderr.lower()
    assert (out / 'writes_rank1.txt').read_text() == ''
    assert not [line for line in (out / 'writes_rank0.txt').read_text().splitlines()
                if line.startswith(('write', 'unlink')) and not line.endswith('.branchynet.lock')]


def test_a_refused_input_ends_every_rank_with_one_message(tmp_path):
    """An error found on rank 0 alone (its --out is under a file) ends every
    rank normally, before any data is loaded: exit status 2, one message,
    no MPI_Abort."""
    (tmp_path / 'file').write_text('not a folder')
    log = tmp_path / 'log'
    proc = mpirun(['experiment', '--out', str(log), '--', '--distributed', '--network',
                   'lenet_mnist', '--preset', 'tiny', '--out', str(tmp_path / 'file' / 'run')],
                  log, timeout=120, check=False)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and 'is a file (Not a directory)' in errors[0], proc.stderr
    assert 'abort' not in proc.stderr.lower()
    assert (tmp_path / 'file').read_text() == 'not a folder'
