"""Bad arguments to public functions: an InputError naming what was wrong,
never a bare traceback or a silently meaningless result."""
import numpy
import pytest

from branchynet import utils
from branchynet.evaluation import calibration
from branchynet.validation import InputError
from tests.helpers import make_three_exit_net


def _outputs(n=50, exits=3, seed=0):
    rng = numpy.random.RandomState(seed)
    scores = rng.rand(n, exits)
    preds = rng.randint(0, 5, (n, exits))
    y = rng.randint(0, 5, n)
    return scores, preds, y


def _calibrate(**changes):
    scores, preds, y = _outputs()
    kwargs = dict(scores=scores, predictions=preds, y=y, path_costs=[1., 2., 3.])
    kwargs.update(changes)
    return calibration.calibrate_thresholds(**kwargs)


def test_calibration_still_works_on_good_outputs():
    assert len(_calibrate()['thresholds']) == 2


@pytest.mark.parametrize('changes, match', [
    ({'scores': numpy.full((50, 3), numpy.nan)}, 'scores must be finite'),
    ({'path_costs': [1., -2., 3.]}, r'path_costs\[1\]'),
    ({'path_costs': [1., numpy.nan, 3.]}, r'path_costs\[1\]'),
    ({'path_costs': [1., 2.]}, 'path_costs must be a list of 3'),
    ({'candidates': 0}, 'candidates must be a positive integer'),
    ({'scores': numpy.zeros((0, 3)), 'predictions': numpy.zeros((0, 3), int),
      'y': numpy.zeros(0, int)}, 'at least one sample'),
    ({'y': numpy.zeros(7, int)}, r'y must have shape \(50,\)'),
    ({'predictions': numpy.zeros((50, 2), int)}, 'shape'),
    ({'target_acc': 1.5}, 'target_acc must be a finite number'),
    ({'budget': float('nan')}, 'budget must be a finite number'),
])
def test_bad_calibration_inputs_are_refused(changes, match):
    with pytest.raises(InputError, match=match):
        _calibrate(**changes)


def test_exit_aurocs_of_one_exit_is_an_error_not_an_empty_list():
    scores, preds, y = _outputs(exits=1)
    with pytest.raises(InputError, match='one exit has no early-exit decision'):
        calibration.exit_aurocs(scores, preds, y)


@pytest.mark.parametrize('index', [5, -1, 1.0, True])
def test_exit_roc_of_a_missing_exit_is_refused(index):
    with pytest.raises(InputError, match='exit_index must be an exit of these outputs'):
        calibration.exit_roc(*_outputs(), exit_index=index)


@pytest.mark.parametrize('share', [2, -0.5, float('nan'), 'half'])
def test_get_ent_setdiff_refuses_a_share_outside_0_1(share):
    ents = [numpy.random.RandomState(0).rand(20) for _ in range(2)]
    with pytest.raises(InputError, match='percentExit must be a share in'):
        utils.get_ent_setdiff(ents, ents, percentExit=share)


@pytest.mark.parametrize('net', [None, 'lenet', object()])
def test_engines_refuse_what_is_not_a_network(net):
    from branchynet.engines.fast import FastBranchyNet
    with pytest.raises(InputError, match='must be a BranchyNet'):
        FastBranchyNet(net)


@pytest.mark.parametrize('threads', [0, -1, 1.5])
def test_onnx_threads_must_be_positive(threads):
    from branchynet.engines.onnx_runtime import OnnxBranchyNet
    with pytest.raises(InputError, match='threads must be a positive integer'):
        OnnxBranchyNet(make_three_exit_net(), threads=threads)


def test_onnx_save_onto_an_existing_file_is_refused(tmp_path):
    from branchynet.engines.onnx_runtime import OnnxBranchyNet
    target = tmp_path / 'models.onnx'
    target.write_text('mine')
    with pytest.raises(InputError, match='exists and is not a folder'):
        OnnxBranchyNet(make_three_exit_net()).save(str(target))
    assert target.read_text() == 'mine'
