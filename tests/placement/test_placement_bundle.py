"""Networks from attach_exits and place_exits deploy as bundles that answer as ``predict``."""
import numpy
import pytest

pytest.importorskip('onnxruntime')
pytest.importorskip('onnx')

from branchynet.engines import deploy  # noqa: E402
from branchynet.placement import attach_exits  # noqa: E402
from tests.engines.test_deploy import spreading_thresholds  # noqa: E402
from tests.placement.placement_nets import data, one_exit_net  # noqa: E402
from tests.placement.test_placement_place import _place  # noqa: E402


def _assert_bundle_answers_as_predict(net, folder, x, thresholds=None):
    deploy.save_bundle(net, folder)
    labels, exits = net.predict(x, thresholds)
    got_labels, got_exits = deploy.load_bundle(folder).predict(x, thresholds)
    numpy.testing.assert_array_equal(got_labels, labels)
    numpy.testing.assert_array_equal(got_exits, exits)
    return exits


def test_attached_network_saves_as_a_bundle_that_predicts_as_it(tmp_path):
    x, y = data(96)
    net = attach_exits(one_exit_net(), [3, 8], x, y, epochs=1, batchsize=32)
    net.calibrate(x[:48], y[:48], cost_samples=8, progress=False)
    _assert_bundle_answers_as_predict(net, tmp_path / 'calibrated', x)  # the manifest's
    spread = spreading_thresholds(net, x, 'entropy')
    exits = _assert_bundle_answers_as_predict(net, tmp_path / 'spread', x, spread)
    assert (numpy.bincount(exits, minlength=3) > 0).all()  # every exit took samples


@pytest.mark.parametrize('k', [0, 2])
def test_placed_network_saves_as_a_bundle_that_predicts_as_it(tmp_path, k):
    net, report = _place(k=k, check_configs=0)  # k=0: only "no early exit" can be chosen
    assert net.numexits() == len(report['chosen']['points']) + 1
    x, _ = data(40, seed=3)
    exits = _assert_bundle_answers_as_predict(net, tmp_path / 'placed', x)
    if k == 0:  # the final exit alone: no thresholds needed, by predict or by the bundle
        assert net.numexits() == 1 and net.thresholdExits == [] and not exits.any()
