"""(a) B-LeNet batch-1 end-to-end gain at 100 % exit-1 and at the knee, on the
Chainer path, the fast path and, where installed, the ONNX Runtime path
(requirements/onnx.txt) and the numba path (requirements/numba.txt), next to
the arithmetic (MAC) limit.

    python benchmarks/gain.py [--quick] [--model FILE.npz] [--samples N]
"""
from common import best_latencies, engines, knee_point, lenet, mnist, parser, summary, test_subset

from branchynet.measures import costs


def main():
    p = parser(__doc__.splitlines()[0])
    p.add_argument('--rounds', type=int, default=3,
                   help='interleaved repetitions; each time is the fastest round (a '
                        'passing load spike then cannot bias one setting)')
    args = p.parse_args()
    data = mnist()
    net = lenet(args, data)
    x, y = test_subset(args, data, 300, 2000)
    paths = engines(net)
    c = costs.exit_costs(net)
    knee = knee_point(net, x, y)
    settings = {'main': None, 'exit1': [float('inf')], 'knee': knee['thresholds']}
    ms = best_latencies(net, x, y, paths, settings, args.rounds)
    out = {}
    print('{:8s} {:>10s} {:>12s} {:>10s} {:>12s} {:>10s}   (best of {} rounds)'.format(
        'path', 'main ms', 'exit-1 ms', 'gain@100%', 'knee ms', 'gain@knee', args.rounds))
    for name, _ in paths:
        b, e1, k = (ms[name, s] for s in settings)
        out['gain_{}_exit1'.format(name)] = b / e1
        out['gain_{}_knee'.format(name)] = b / k
        out['ms_{}_main'.format(name)] = b
        out['ms_{}_knee'.format(name)] = k
        print('{:8s} {:10.4f} {:12.4f} {:9.2f}x {:12.4f} {:9.2f}x'.format(
            name, b, e1, b / e1, k, b / k))
    out['limit_exit1'] = costs.arithmetic_limit_gain(c, [1, 0])
    out['limit_knee'] = costs.arithmetic_limit_gain(c, knee['exit_counts'])
    out['exit1_pct_knee'] = 100. * knee['exit_counts'][0] / sum(knee['exit_counts'])
    print('arithmetic limit: {:.2f}x at 100 % exit 1, {:.2f}x at the knee'.format(
        out['limit_exit1'], out['limit_knee']))
    summary(**out)


if __name__ == '__main__':
    main()
