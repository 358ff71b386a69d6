"""Writes ipynb/<network>.ipynb, one per network, from a single template.

The notebooks walk through the steps of ``branchynet.experiment`` one cell
at a time, calling the library (no model classes are defined in them, so
models stay dill-picklable). They are stored without outputs; the test suite
regenerates them to check they are in sync and executes them headless.

    python tools/make_notebooks.py            # rewrite ipynb/
    python tools/make_notebooks.py --check    # exit 1 if ipynb/ is out of date
"""
import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

TITLES = {'lenet_mnist': ('B-LeNet', 'MNIST'), 'alex_cifar10': ('B-AlexNet', 'CIFAR-10'),
          'resnet_cifar10': ('B-ResNet-110', 'CIFAR-10')}

CELLS = [
    ('markdown', """# {title} on {data}

The steps of the paper's experiment, one cell each: train the main network,
train all exits jointly, time the baseline and BranchyNet at batch size 1
(end to end), screen the entropy thresholds, pick the knee and print the
Table I block. `./get_results.sh` runs the same steps
(`branchynet/experiment.py`).

Environment variables: `BRANCHYNET_PRESET` (`fast` by default; `paper` for
the original schedule, `tiny` for a quick check), `BRANCHYNET_DATASET` (an
npz file or a dataset name, replacing the network's own data) and
`BRANCHYNET_OUT` (where `_models/` and `_figs/` go; default the project root)."""),
    ('code', """import os
import sys

ROOT = os.path.abspath('..') if os.path.basename(os.getcwd()) == 'ipynb' else os.getcwd()
sys.path.insert(0, ROOT)

import branchynet  # applies the compatibility shims before chainer
from branchynet import experiment, fileio, utils, visualize

NETWORK = '{network}'
PRESET = os.environ.get('BRANCHYNET_PRESET', 'fast')
OUT = os.environ.get('BRANCHYNET_OUT', ROOT)
module, config = experiment.resolve_config(
    NETWORK, PRESET, {{'dataset_path': os.environ.get('BRANCHYNET_DATASET')}})
config"""),
    ('markdown', '## Data'),
    ('code', """x_train, y_train, x_test, y_test = experiment.load_dataset(config)
x_train.shape, x_test.shape"""),
    ('markdown', '## Train the main network, then every exit jointly'),
    ('code', """net = module.get_network()
main_losses, main_accs, main_seconds = utils.train(
    net, x_train, y_train, main=True, batchsize=config['batchsize'],
    num_epoch=config['epochs_main'], seed=0)
print('baseline test accuracy: {{:.2%}}'.format(net.test_main(x_test, y_test, batchsize=1000)[0]))"""),
    ('code', """joint_losses, joint_accs, joint_seconds = utils.train(
    net, x_train, y_train, batchsize=config['batchsize'],
    num_epoch=config['epochs_joint'], seed=1)
print('test accuracy per exit:', experiment.exit_accuracies(net, x_test, y_test))"""),
    ('code', """last = net.numexits() - 1
visualize.plot_layers(
    [[float('nan')] * last + row for row in main_losses] + joint_losses,
    [[float('nan')] * last + row for row in main_accs] + joint_accs,
    title='{title}: training per exit',
    phase_labels=[(0, 'main only'), (len(main_losses), 'joint')]);"""),
    ('markdown', """## Time the baseline and screen the thresholds (batch size 1, CPU)

`ms` is end to end per sample; `trunk_ms` is the original's timer (trunk
segments only)."""),
    ('code', """n_timing = config['n_timing'] or len(x_test)
xs, ys = x_test[:n_timing], y_test[:n_timing]
baseline = utils.measure_main(net, xs, ys)
screen = utils.screen_branchy(net, xs, ys, config['thresholds'])
ts, accs, diffs, exits = screen
{{k: baseline[k] for k in ('acc', 'ms', 'trunk_ms')}}"""),
    ('code', """knee = utils.select_knee(accs, diffs, baseline['acc'])
visualize.plot_line_tradeoff(accs, diffs, baseline['acc'], baseline['ms'], knee,
                             title='{title}: accuracy vs runtime (CPU)');"""),
    ('code', """rows = utils.branchy_table_results(config['title'], baseline, screen.records[knee])"""),
    ('markdown', '## Save the model (npz: weights only, safe to share; dill: as the original)'),
    ('code', """fileio.save_npz(os.path.join(OUT, '_models', NETWORK + '.npz'), net)
fileio.save_dill(os.path.join(OUT, '_models', NETWORK + '.bn'), net)"""),
]


def notebook(network):
    title, data = TITLES[network]
    cells = []
    for i, (kind, text) in enumerate(CELLS):
        source = text.format(title=title, data=data, network=network) if kind == 'code' \
            else text.replace('{title}', title).replace('{data}', data)
        cell = {'cell_type': kind, 'id': 'cell-{}'.format(i), 'metadata': {},
                'source': source.splitlines(True)}
        if kind == 'code':
            cell.update(execution_count=None, outputs=[])
        cells.append(cell)
    return {'cells': cells, 'nbformat': 4, 'nbformat_minor': 5,
            'metadata': {'kernelspec': {'name': 'python3', 'display_name': 'Python 3',
                                        'language': 'python'},
                         'language_info': {'name': 'python'}}}


def render(network):
    return json.dumps(notebook(network), indent=1, sort_keys=True) + '\n'


def main(argv=None):
    parser = argparse.ArgumentParser(description='Write or check ipynb/*.ipynb.')
    parser.add_argument('--check', action='store_true')
    args = parser.parse_args(argv)
    from networks import NETWORKS
    stale = []
    for network in NETWORKS:
        path = os.path.join(ROOT, 'ipynb', network + '.ipynb')
        text = render(network)
        if args.check:
            if not os.path.exists(path) or open(path).read() != text:
                stale.append(path)
        else:
            from branchynet.fileio import atomic_write
            with atomic_write(path, 'w') as f:
                f.write(text)
    if stale:
        print('out of date (run python tools/make_notebooks.py): ' + ', '.join(stale))
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
