"""(e) Batched early-exit throughput (samples/s) of B-LeNet at batch sizes
1, 64 and 512, on the Chainer, fast and (if installed) ONNX Runtime paths, at a
fixed threshold.

    python benchmarks/throughput.py [--quick] [--model FILE.npz] [--samples N] [--T 0.05]
"""
from common import engines, lenet, mnist, parser, summary, test_subset, timed


def main():
    p = parser(__doc__.splitlines()[0])
    p.add_argument('--T', type=float, default=0.05)
    args = p.parse_args()
    data = mnist()
    net = lenet(args, data)
    x, _ = test_subset(args, data, 1024, 10000)
    paths = engines(net)
    out = {}
    reference = net.predict(x, [args.T], batchsize=64)
    print('{:>6s} '.format('batch') + ' '.join('{:>14s}'.format(name + ' /s')
                                              for name, _ in paths))
    for bs in (1, 64, 512):
        rates = []
        for name, engine in paths:
            engine.predict(x[:bs], [args.T], batchsize=bs)  # warm-up (buffers, plans)
            (lab, ex), s = timed(engine.predict, x, [args.T], batchsize=bs)
            assert (ex == reference[1]).mean() > 0.999
            rates.append(len(x) / s)
            out['{}_bs{}'.format(name, bs)] = rates[-1]
        print('{:6d} '.format(bs) + ' '.join('{:14.0f}'.format(r) for r in rates))
    summary(**out)


if __name__ == '__main__':
    main()
