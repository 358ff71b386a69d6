"""(e) Batched early-exit throughput (samples/s) of B-LeNet at batch sizes
1, 64 and 512, Chainer path and fast path, at a fixed threshold.

    python benchmarks/throughput.py [--quick] [--model FILE.npz] [--samples N] [--T 0.05]
"""
from common import lenet, mnist, parser, summary, test_subset, timed

from branchynet.fastpath import FastBranchyNet


def main():
    p = parser(__doc__.splitlines()[0])
    p.add_argument('--T', type=float, default=0.05)
    args = p.parse_args()
    data = mnist()
    net = lenet(args, data)
    x, _ = test_subset(args, data, 1024, 10000)
    fast = FastBranchyNet(net)
    out = {}
    reference = net.predict(x, [args.T], batchsize=64)
    print('{:>6s} {:>14s} {:>14s}'.format('batch', 'chainer /s', 'fast /s'))
    for bs in (1, 64, 512):
        rates = {}
        for name, engine in (('chainer', net), ('fast', fast)):
            engine.predict(x[:bs], [args.T], batchsize=bs)  # warm-up (buffers, plans)
            (lab, ex), s = timed(engine.predict, x, [args.T], batchsize=bs)
            assert (ex == reference[1]).mean() > 0.999
            rates[name] = len(x) / s
            out['{}_bs{}'.format(name, bs)] = rates[name]
        print('{:6d} {:14.0f} {:14.0f}'.format(bs, rates['chainer'], rates['fast']))
    summary(**out)


if __name__ == '__main__':
    main()
