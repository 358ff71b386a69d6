"""--resume without a snapshot starts afresh on every rank together and says
so; bad snapshot arguments are refused with one clear error."""
import numpy
import pytest

from branchynet import utils
from branchynet.validation import InputError
from tests.helpers import make_three_exit_net


def _data(n=40):
    rng = numpy.random.RandomState(0)
    return (rng.randn(n, 1, 8, 8).astype(numpy.float32),
            rng.randint(0, 5, n).astype(numpy.int32))


def test_distributed_resume_without_a_snapshot_starts_afresh_on_every_rank(tmp_path):
    from tests.training.test_distributed import mpirun
    snap = tmp_path / 'none.npz'
    proc = mpirun(['train', '--n', '64', '--batch', '32', '--snapshot', str(snap),
                   '--resume'], tmp_path / 'out', check=False, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert 'no snapshot {}: starting joint training afresh'.format(snap) in proc.stderr
    assert 'MPI_Abort' not in proc.stderr + proc.stdout
    assert (tmp_path / 'out' / 'result.npz').exists() and snap.exists()


def test_resume_without_a_snapshot_says_it_starts_afresh(tmp_path, capsys):
    x, y = _data()
    snap = tmp_path / 's.npz'
    utils.train_exits(make_three_exit_net(), x, y, main=True, batchsize=16, num_epoch=1,
                      progress=False, snapshot=str(snap), resume=True)
    assert 'no snapshot {}: starting main training afresh'.format(snap) in \
        capsys.readouterr().err


@pytest.mark.parametrize('kwargs, match', [
    ({'snapshot': 'FOLDER'}, 'is a folder; expected the path of a snapshot file'),
    ({'snapshot': 'FOLDER', 'resume': True}, 'is a folder'),
    ({'snapshot': 12}, 'snapshot must be a file path'),
    ({'resume': True}, 'resume=True needs snapshot='),
])
def test_bad_snapshot_arguments_are_refused(tmp_path, kwargs, match):
    kwargs = {k: str(tmp_path) if v == 'FOLDER' else v for k, v in kwargs.items()}
    x, y = _data()
    with pytest.raises(InputError, match=match):
        utils.train(make_three_exit_net(), x, y, batchsize=16, num_epoch=1, progress=False,
                    **kwargs)
