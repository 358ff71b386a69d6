"""(b') The same B-LeNet (same weights) exported to ONNX and run by ONNX
Runtime, a second peer runtime: batch-1 latency and early-exit gain beside
our fast path's, for the main network, the exit-1 path and the knee.

It answers whether the fast path's gain (well below the MAC limit) is a
limit of array-level Python or of batch-1 inference of a network this small:
each exit is one ONNX Runtime call (segment and head fused, the activation
returned for samples that go on), decided by the same entropy rule.

    pip install -r requirements/bench.txt   # onnx, onnxruntime (optional)
    python benchmarks/onnx_peer.py [--quick] [--model FILE.npz] [--samples N]
"""
import sys
import time

from common import knee_point, lenet, mnist, parser, summary, test_subset

import chainer.functions as F
import chainer.links as L
import numpy

from branchynet import FL, confidence, utils
from branchynet.fastpath import FastBranchyNet


def _nodes(links, x_name, prefix, helper, numpy_helper):
    """ONNX nodes and initialisers for a list of B-LeNet's layer kinds."""
    nodes, weights, name = [], [], x_name
    for i, link in enumerate(links):
        out = '{}{}'.format(prefix, i)
        if isinstance(link, L.Convolution2D):
            w, b = '{}_W'.format(out), '{}_b'.format(out)
            weights += [numpy_helper.from_array(link.W.array, w),
                        numpy_helper.from_array(link.b.array, b)]
            ph, pw = (link.pad, link.pad) if isinstance(link.pad, int) else link.pad
            sy, sx = (link.stride, link.stride) if isinstance(link.stride, int) else link.stride
            nodes.append(helper.make_node('Conv', [name, w, b], [out], pads=[ph, pw, ph, pw],
                                          strides=[sy, sx],
                                          kernel_shape=list(link.W.shape[2:])))
        elif isinstance(link, L.Linear):
            w, b = '{}_W'.format(out), '{}_b'.format(out)
            weights += [numpy_helper.from_array(link.W.array, w),
                        numpy_helper.from_array(link.b.array, b)]
            nodes.append(helper.make_node('Flatten', [name], [out + 'f']))
            nodes.append(helper.make_node('Gemm', [out + 'f', w, b], [out], transB=1))
        elif isinstance(link, FL) and link.fn is F.relu:
            nodes.append(helper.make_node('Relu', [name], [out]))
        elif isinstance(link, FL) and link.fn is F.max_pooling_2d and not link.kwargs:
            k, s = link.args  # B-LeNet's pools: (ksize, stride), cover_all as ceil_mode
            nodes.append(helper.make_node('MaxPool', [name], [out], kernel_shape=[k, k],
                                          strides=[s, s], ceil_mode=1))
        else:
            raise ValueError('onnx_peer exports B-LeNet\'s layers (Convolution2D, Linear, '
                             'ReLU, max pooling); got {!r}'.format(link))
        name = out
    return nodes, weights, name


def onnx_sessions(net):
    """ONNX Runtime sessions: the main network, and per exit its segment plus
    head (outputs: logits, and the activation for the next segment)."""
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # batch 1: threads only add overhead here
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL

    def session(links_a, links_b, keep_a):
        nodes_a, w_a, h = _nodes(links_a, 'x', 'a', helper, numpy_helper)
        nodes_b, w_b, z = _nodes(links_b, h, 'b', helper, numpy_helper)
        outputs = [z, h] if keep_a else [z]
        graph = helper.make_graph(
            nodes_a + nodes_b, 'b_lenet', [helper.make_tensor_value_info(
                'x', TensorProto.FLOAT, None)],
            [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
            w_a + w_b)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
        model.ir_version = 8
        return onnxruntime.InferenceSession(model.SerializeToString(), options,
                                            providers=['CPUExecutionProvider'])
    last = net.numexits() - 1
    main = session(list(net.trunk), net.head_links(last), False)
    exits = [session(list(net.trunk[slice(*net._segment_bounds(n))]), net.head_links(n),
                     n < last) for n in range(net.numexits())]
    return main, exits


def onnx_latency(sessions, x, thresholds):
    """Per-sample ms, labels and exits at batch size 1 (``thresholds`` None:
    the main network alone)."""
    main, exits = sessions
    score = confidence.entropy_from_logits_row
    labels = numpy.empty(len(x), numpy.int32)
    exit_ids = numpy.empty(len(x), numpy.int32)
    start = time.perf_counter()
    for i in range(len(x)):
        h = x[i:i + 1]
        if thresholds is None:
            row = main.run(None, {'x': h})[0][0].tolist()
            labels[i], exit_ids[i] = row.index(max(row)), len(exits) - 1
            continue
        for n, sess in enumerate(exits):
            out = sess.run(None, {'x': h})
            row = out[0][0].tolist()
            if n == len(exits) - 1 or score(row) < thresholds[n]:
                labels[i], exit_ids[i] = row.index(max(row)), n
                break
            h = out[1]
    return 1000. * (time.perf_counter() - start) / len(x), labels, exit_ids


def main():
    args = parser(__doc__.splitlines()[0]).parse_args()
    try:
        import onnxruntime
    except ImportError:
        sys.exit('ONNX Runtime is not installed: pip install -r requirements/bench.txt')
    data = mnist()
    net = lenet(args, data)
    x, y = test_subset(args, data, 300, 2000)
    fast = FastBranchyNet(net)
    sessions = onnx_sessions(net)
    knee = knee_point(net, x, y)['thresholds']
    print('onnxruntime {}, 1 thread'.format(onnxruntime.__version__))
    print('{:10s} {:>10s} {:>10s} {:>10s}'.format('setting', 'onnx ms', 'fast ms', 'fast/onnx'))
    ms, out = {}, {}
    for name, ts in (('main', None), ('exit1', [float('inf')]), ('knee', knee)):
        o_ms, o_lab, o_ex = onnx_latency(sessions, x, ts)
        if ts is None:
            f = utils.measure_main(net, x, y, engine=fast, trunk_only=False)
            want_lab, want_ex = net.predict_main(x), numpy.full(len(x), 1)
        else:
            f = utils.measure_branchy(net, x, y, ts, engine=fast, trunk_only=False)
            want_lab, want_ex = net.predict(x, ts)
        ms[name] = (o_ms, f['ms'])
        print('{:10s} {:10.4f} {:10.4f} {:9.2f}x   (labels agree {:.1%}, exits {:.1%})'.format(
            name, o_ms, f['ms'], f['ms'] / o_ms, float((o_lab == want_lab).mean()),
            float((o_ex == want_ex).mean())))
        out['onnx_ms_' + name] = o_ms
        out['ratio_fast_onnx_' + name] = f['ms'] / o_ms
    for name in ('exit1', 'knee'):
        out['gain_onnx_' + name] = ms['main'][0] / ms[name][0]
        out['gain_fast_' + name] = ms['main'][1] / ms[name][1]
    print('early-exit gain: onnx {:.2f}x at 100 % exit 1, {:.2f}x at the knee; fast path '
          '{:.2f}x, {:.2f}x'.format(out['gain_onnx_exit1'], out['gain_onnx_knee'],
                                   out['gain_fast_exit1'], out['gain_fast_knee']))
    summary(**out)


if __name__ == '__main__':
    main()
