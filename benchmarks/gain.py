"""(a) B-LeNet batch-1 end-to-end gain at 100 % exit-1 and at the knee, on the
Chainer path, the fast path and (when onnxruntime is installed:
requirements/onnx.txt) the ONNX Runtime path, next to the arithmetic (MAC) limit.

    python benchmarks/gain.py [--quick] [--model FILE.npz] [--samples N]
"""
from common import knee_point, lenet, mnist, parser, summary, test_subset

from branchynet import costs, utils
from branchynet.fastpath import FastBranchyNet


def main():
    args = parser(__doc__.splitlines()[0]).parse_args()
    data = mnist()
    net = lenet(args, data)
    x, y = test_subset(args, data, 300, 2000)
    engines = [('chainer', net), ('fast', FastBranchyNet(net))]
    try:
        from branchynet.onnxpath import OnnxBranchyNet
        engines.append(('onnx', OnnxBranchyNet(net)))
    except ImportError as e:
        print('onnx path skipped: {}'.format(e))
    c = costs.exit_costs(net)
    knee = knee_point(net, x, y)
    out = {}
    print('{:8s} {:>10s} {:>12s} {:>10s} {:>12s} {:>10s}'.format(
        'path', 'main ms', 'exit-1 ms', 'gain@100%', 'knee ms', 'gain@knee'))
    for name, engine in engines:
        b = utils.measure_main(net, x, y, engine=engine, trunk_only=False)
        e1 = utils.measure_branchy(net, x, y, [float('inf')], engine=engine, trunk_only=False)
        k = utils.measure_branchy(net, x, y, knee['thresholds'], engine=engine,
                                  trunk_only=False)
        out['gain_{}_exit1'.format(name)] = b['ms'] / e1['ms']
        out['gain_{}_knee'.format(name)] = b['ms'] / k['ms']
        out['ms_{}_main'.format(name)] = b['ms']
        print('{:8s} {:10.4f} {:12.4f} {:9.2f}x {:12.4f} {:9.2f}x'.format(
            name, b['ms'], e1['ms'], b['ms'] / e1['ms'], k['ms'], b['ms'] / k['ms']))
    out['limit_exit1'] = costs.arithmetic_limit_gain(c, [1, 0])
    out['limit_knee'] = costs.arithmetic_limit_gain(c, knee['exit_counts'])
    out['exit1_pct_knee'] = 100. * knee['exit_counts'][0] / sum(knee['exit_counts'])
    print('arithmetic limit: {:.2f}x at 100 % exit 1, {:.2f}x at the knee'.format(
        out['limit_exit1'], out['limit_knee']))
    summary(**out)


if __name__ == '__main__':
    main()
