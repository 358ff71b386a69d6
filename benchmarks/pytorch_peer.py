"""(b) The same B-LeNet (same weights) in PyTorch eager, as the peer a user
might pick instead: batch-1 latency of our fast path and Chainer path
divided by PyTorch's, for the main network, the exit-1 path and the knee.

    .venv/bin/python -m pip install -r requirements/bench.txt   # on its own, not with base.txt
    python benchmarks/pytorch_peer.py [--quick] [--model FILE.npz] [--samples N]
"""
import sys
import time

from common import lenet, mnist, parser, summary, test_subset

import numpy

from branchynet.evaluation import measurement
from branchynet.engines.fast import FastBranchyNet


def torch_lenet(net):
    """B-LeNet in PyTorch with the Chainer model's weights (cover_all == ceil_mode)."""
    import torch
    from torch import nn

    def conv(link):
        m = nn.Conv2d(link.W.shape[1], link.W.shape[0], link.W.shape[2], stride=link.stride,
                      padding=link.pad)
        m.weight.data = torch.from_numpy(link.W.array.copy())
        m.bias.data = torch.from_numpy(link.b.array.copy())
        return m

    def linear(link):
        m = nn.Linear(link.W.shape[1], link.W.shape[0])
        m.weight.data = torch.from_numpy(link.W.array.copy())
        m.bias.data = torch.from_numpy(link.b.array.copy())
        return m

    def pool_relu():
        return [nn.MaxPool2d(2, 2, ceil_mode=True), nn.ReLU()]
    # the same split as BranchyNet's: the pool and ReLU the exit-1 head shares
    # with the trunk are computed once, in segment 1
    t, b0, b1 = net.trunk, net.branches[0], net.branches[1]
    seg0 = nn.Sequential(conv(t[0]), *pool_relu())
    head0 = nn.Sequential(conv(b0[2]), *pool_relu(), nn.Flatten(), linear(b0[5]))
    seg1 = nn.Sequential(conv(t[3]), *pool_relu(), conv(t[6]), *pool_relu(),
                         nn.Flatten(), linear(t[9]))
    head1 = nn.Sequential(linear(b1[0]))
    return [m.eval() for m in (seg0, head0, seg1, head1)]


def torch_predict_one(parts, x, threshold):
    """Fig. 2 in PyTorch eager for one sample: (label, exit). ``threshold``
    None runs the main network alone (the baseline: no exit-1 head)."""
    import torch
    seg0, head0, seg1, head1 = parts
    h = seg0(x)
    if threshold is not None:
        z = head0(h)
        p = torch.softmax(z, dim=1)
        if float(-(p * torch.log(p.clamp_min(1e-45))).sum()) < threshold:
            return int(z.argmax()), 0
    return int(head1(seg1(h)).argmax()), 1


def torch_latency(parts, x, threshold):
    import torch
    labels = numpy.empty(len(x), numpy.int32)
    exits = numpy.empty(len(x), numpy.int32)
    with torch.inference_mode():
        xt = torch.from_numpy(x)
        start = time.perf_counter()
        for i in range(len(x)):
            labels[i], exits[i] = torch_predict_one(parts, xt[i:i + 1], threshold)
        seconds = time.perf_counter() - start
    return 1000. * seconds / len(x), labels, exits


def main():
    p = parser(__doc__.splitlines()[0])
    p.add_argument('--T', type=float, default=0.05, help='exit-1 threshold (the knee)')
    args = p.parse_args()
    try:
        import torch
    except ImportError:
        sys.exit('PyTorch is not installed: .venv/bin/python -m pip install '
                 '-r requirements/bench.txt '
                 '(on its own, not together with requirements/base.txt)')
    data = mnist()
    net = lenet(args, data)
    x, y = test_subset(args, data, 300, 2000)
    fast = FastBranchyNet(net)
    parts = torch_lenet(net)
    print('torch {} with {} threads; numpy/OpenBLAS default threads'.format(
        torch.__version__, torch.get_num_threads()))
    knee = args.T
    out = {}
    print('{:10s} {:>10s} {:>10s} {:>10s} {:>12s} {:>12s}'.format(
        'setting', 'torch ms', 'fast ms', 'chainer ms', 'fast/torch', 'chainer/torch'))
    for name, t in (('main', None), ('exit1', float('inf')), ('T=%g' % knee, knee)):
        t_ms, t_lab, t_ex = torch_latency(parts, x, t)
        ours = {}
        for engine_name, engine in (('fast', fast), ('chainer', net)):
            if t is None:
                r = measurement.measure_main(net, x, y, engine=engine, trunk_only=False)
            else:
                r = measurement.measure_branchy(net, x, y, [t], engine=engine, trunk_only=False)
            ours[engine_name] = r['ms']
        if t is not None:
            lab, ex = net.predict(x, [t])
            agree = float((lab == t_lab).mean()), float((ex == t_ex).mean())
        else:
            agree = float((net.predict_main(x) == t_lab).mean()), 1.0
        key = name.split('=')[0].lower()
        out['ratio_fast_torch_' + key] = ours['fast'] / t_ms
        out['ratio_chainer_torch_' + key] = ours['chainer'] / t_ms
        out['torch_ms_' + key] = t_ms
        print('{:10s} {:10.4f} {:10.4f} {:10.4f} {:11.2f}x {:11.2f}x   (labels agree {:.1%}, '
              'exits {:.1%})'.format(name, t_ms, ours['fast'], ours['chainer'],
                                     ours['fast'] / t_ms, ours['chainer'] / t_ms, *agree))
    summary(**out)


if __name__ == '__main__':
    main()
