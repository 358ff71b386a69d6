"""Export of a BranchyNet's layers to ONNX graphs: ``Exporter`` turns a list
of links into nodes (Convolution2D with a following BatchNormalization
folded in, Linear, BatchNormalization, ReLU, tanh, sigmoid, max and average
pooling, LRN; dropout and ``SL`` layers vanish at test time; a Chain with
``to_onnx(exporter, x)`` exports itself; anything else is refused naming
the layer). The per-exit graphs (``onnx_runtime``) and the one early-exit
graph (``onnx_graph``) are both built on it.
"""
import chainer.functions as F
import chainer.links as L
import numpy

from branchynet.engines.fast import folded_conv_weights, fused_layers
from branchynet.links import FL, SL, Net, pair

OPSET = 17


def require_onnx():
    """``(onnx, onnxruntime)``, or an ImportError saying what to install."""
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise ImportError('the ONNX path needs onnx and onnxruntime: pip install -r '
                          'requirements/onnx.txt ({})'.format(e)) from None
    return onnx, onnxruntime


class Exporter:
    """Collects ONNX nodes and weights while layers are translated.

    ``layer(link, x)`` and ``sequence(links, x)`` take the name of the input
    tensor and return the name of the output tensor; ``node`` and ``const``
    are the building blocks a ``to_onnx(exporter, x)`` method uses.
    """

    def __init__(self):
        self.onnx, _ = require_onnx()
        self.nodes, self.weights, self._count = [], [], 0

    def _name(self, base):
        self._count += 1
        return '{}_{}'.format(base, self._count)

    def node(self, op, inputs, **attrs):
        """Append one ONNX node; returns its output's name."""
        out = self._name(op.lower())
        self.nodes.append(self.onnx.helper.make_node(op, list(inputs), [out], **attrs))
        return out

    def const(self, array, base='w', dtype=numpy.float32):
        name = self._name(base)
        self.weights.append(self.onnx.numpy_helper.from_array(
            numpy.ascontiguousarray(numpy.asarray(array, dtype=dtype)), name))
        return name

    # ------------------------------------------------------------ sequences
    def sequence(self, links, x):
        for link, bn, relu in fused_layers(links):
            if isinstance(link, L.Convolution2D):
                x = self.conv(link, x, bn=bn, relu=relu)
            else:
                x = self.layer(link, x)
                if relu:  # after a linear layer or max pooling (it commutes with max)
                    x = self.node('Relu', [x])
        return x

    def layer(self, link, x):
        if isinstance(link, L.Convolution2D):
            return self.conv(link, x)
        if isinstance(link, L.Linear):
            return self.linear(link, x)
        if isinstance(link, L.BatchNormalization):
            return self.batchnorm(link, x)
        if isinstance(link, FL):
            return self.function(link, x)
        if isinstance(link, SL):  # fnTest at test time; identity when None
            return x if link.fnTest is None else self.layer(link.fnTest, x)
        if hasattr(link, 'to_onnx'):
            return link.to_onnx(self, x)
        if isinstance(link, Net):
            return self.sequence(list(link), x)
        raise ValueError('cannot export {!r} to ONNX: supported are Convolution2D, Linear, '
                         'BatchNormalization, FL(relu, tanh, sigmoid, max/average pooling, '
                         'local_response_normalization, dropout) and SL; give other '
                         'Chains a to_onnx(exporter, x) method'.format(link))

    # ---------------------------------------------------------------- layers
    def conv(self, link, x, bn=None, relu=False):
        w, b = folded_conv_weights(link, bn)
        ph, pw = pair(link.pad)
        y = self.node('Conv', [x, self.const(w), self.const(b, 'b')],
                      kernel_shape=list(w.shape[2:]), strides=list(pair(link.stride)),
                      pads=[ph, pw, ph, pw], dilations=list(pair(link.dilate)),
                      group=int(link.groups))
        return self.node('Relu', [y]) if relu else y

    def linear(self, link, x):
        flat = self.node('Flatten', [x], axis=1)
        inputs = [flat, self.const(link.W.array)]
        if link.b is not None:
            inputs.append(self.const(link.b.array, 'b'))
        return self.node('Gemm', inputs, transB=1)

    def batchnorm(self, link, x):
        return self.node('BatchNormalization',
                         [x, self.const(link.gamma.array), self.const(link.beta.array),
                          self.const(link.avg_mean), self.const(link.avg_var)],
                         epsilon=float(link.eps))

    def function(self, fl, x):
        fn = fl.fn
        simple = {F.relu: 'Relu', F.tanh: 'Tanh', F.sigmoid: 'Sigmoid'}
        if fn in simple and not fl.args and not fl.kwargs:
            return self.node(simple[fn], [x])
        if fn is F.dropout:
            return x
        if fn in (F.max_pooling_2d, F.average_pooling_2d):
            a = fl.bound_arguments()
            kh, kw = pair(a['ksize'])
            sy, sx = pair(a['stride'] if a['stride'] is not None else a['ksize'])
            ph, pw = pair(a['pad'])
            common = dict(kernel_shape=[kh, kw], strides=[sy, sx], pads=[ph, pw, ph, pw])
            if fn is F.max_pooling_2d:  # Chainer's cover_all is ONNX's ceil_mode
                return self.node('MaxPool', [x], ceil_mode=int(bool(a['cover_all'])), **common)
            if a.get('pad_value', 0) == 0:  # Chainer divides by the whole window
                return self.node('AveragePool', [x], count_include_pad=1, **common)
        if fn is F.local_response_normalization:
            a = fl.bound_arguments()
            if a['n'] % 2 == 1:  # ONNX scales alpha by 1/size; Chainer does not
                return self.node('LRN', [x], size=int(a['n']), alpha=float(a['alpha'] * a['n']),
                                 beta=float(a['beta']), bias=float(a['k']))
        raise ValueError('cannot export {!r} with arguments {} {} to ONNX'.format(
            fl, fl.args, fl.kwargs))

    # ----------------------------------------------------------------- graph
    def model(self, x, outputs, names=None):
        """An ONNX ModelProto. ``x`` and ``outputs`` are ``(name, shape of
        one sample)`` pairs; every tensor has a free batch dimension.
        ``names``: the graph's output names (``outputs`` renamed, in order)."""
        helper, float32 = self.onnx.helper, self.onnx.TensorProto.FLOAT
        if names is not None:
            for (tensor, _), name in zip(outputs, names):
                self.nodes.append(helper.make_node('Identity', [tensor], [name]))
            outputs = [(name, shape) for name, (_, shape) in zip(names, outputs)]

        def info(name, shape):
            return helper.make_tensor_value_info(name, float32, ['N'] + list(shape))
        graph = helper.make_graph(self.nodes, 'branchynet', [info(*x)],
                                  [info(*o) for o in outputs], self.weights)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', OPSET)])
        model.ir_version = 8  # readable by every onnxruntime of the last years
        self.onnx.checker.check_model(model)
        return model


#: Names of the graphs' input and outputs: every graph maps ``x`` to ``logits``
#: and, but the last exit, ``features`` (the trunk activation the next exit reads).

def exit_shapes(net, sample=None):
    """Per exit, the shape of one sample's segment input and of its logits:
    ``(inputs, logits)``, learnt by running ``sample`` (one input; default:
    zeros of ``net.input_shape``) through Chainer."""
    if sample is None:
        if net.input_shape is None:
            raise ValueError('pass a sample: the network has no input_shape')
        sample = numpy.zeros((1,) + tuple(net.input_shape), numpy.float32)
    import chainer
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        inputs, logits, h = [], [], net.send(sample[:1])
        for n in range(net.numexits()):
            inputs.append(h.shape[1:])
            h = net.segment(h, n)
            logits.append(net.head(h, n).shape[1:])
    return inputs, logits
