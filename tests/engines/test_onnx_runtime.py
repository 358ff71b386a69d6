"""The ONNX export runs on ONNX Runtime with the labels and exits of predict()
(that comparison, on all three networks, is in engines/test_fast.py)."""
import numpy
import pytest

from branchynet import utils
from tests.engines.test_fast import net_and_data  # noqa: F401  (the three trained networks)

onnxpath = pytest.importorskip('branchynet.engines.onnx_runtime')
pytest.importorskip('onnxruntime')


def test_exit_graphs_give_chainers_logits(net_and_data):  # noqa: F811
    import chainer
    net, x = net_and_data
    engine = onnxpath.OnnxBranchyNet(net)
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        expected = [z.array for z in net._all_exit_logits(x)]
    h = x
    for n, sess in enumerate(engine.exit_sessions):
        out = sess.run(None, {'x': h})
        numpy.testing.assert_allclose(out[0], expected[n], rtol=1e-4, atol=1e-4)
        h = out[1] if len(out) > 1 else None
    main = engine.main_session.run(None, {'x': x})[0]
    numpy.testing.assert_allclose(main, expected[-1], rtol=1e-4, atol=1e-4)


def test_timing_through_the_engine_and_saved_models(tmp_path, three_exit_net, small_batch):
    import onnx
    x, y = small_batch
    engine = onnxpath.OnnxBranchyNet(three_exit_net)
    r = utils.measure_branchy(three_exit_net, x, y, [0.5, 0.5], engine=engine, trunk_only=False)
    assert r['exit_counts'] == numpy.bincount(three_exit_net.predict(x, [0.5, 0.5])[1],
                                              minlength=3).tolist()
    with pytest.raises(ValueError, match='trunk_only=False'):
        utils.measure_main(three_exit_net, x, y, engine=engine)
    assert engine.save(str(tmp_path)) == ['main.onnx', 'exit1.onnx', 'exit2.onnx',
                                          'exit3.onnx']  # exits numbered from 1
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ['exit1.onnx', 'exit2.onnx', 'exit3.onnx', 'main.onnx']
    model = onnx.load(str(tmp_path / 'exit1.onnx'))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ['x']
    assert [o.name for o in model.graph.output] == ['logits', 'features']
    assert [o.name for o in onnx.load(str(tmp_path / 'exit3.onnx')).graph.output] == ['logits']


def test_unsupported_layers_are_refused_by_name():
    import chainer
    import chainer.links as L
    from branchynet import FL, Branch, BranchyNet
    net = BranchyNet([L.Linear(4, 6), Branch([L.Linear(6, 3)]),
                      FL(lambda v: v * 2), L.Linear(6, 3), Branch([FL(chainer.functions.tanh)])],
                     input_shape=(4,))
    with pytest.raises(ValueError, match='cannot export FL'):
        onnxpath.OnnxBranchyNet(net)
