"""Writes ipynb/<network>.ipynb, one per network, from a single template.

The notebooks follow the original project's notebooks cell for cell, calling
the library with the original's function names (no model classes are
defined in them, so models stay dill-picklable). They are stored without outputs; the test suite
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

The original's experiment, cell for cell: build the network, load the data,
settings, train the main network, train all exits jointly, plot the training,
time the baseline (GPU when usable, then CPU), the threshold list, screen the
thresholds and draw the trade-off (GPU when usable, then CPU), Table I, and
save the model and the results as the original did (`_models/<name>.bn`,
`_models/<name>_{{cpu,gpu}}_results.pkl`). Times are end to end at batch size
1. `./get_results.sh` runs the full experiment (`branchynet/experiment.py`).

Environment variables: `BRANCHYNET_PRESET` (`fast` by default; `paper` for
the original schedule, `tiny` for a quick check), `BRANCHYNET_DATASET` (an
npz file or a dataset name, replacing the network's own data) and
`BRANCHYNET_OUT` (where `_models/` and `_figs/` go; default the project root)."""),
    ('markdown', '## Define network'),
    ('code', """import os
import sys

ROOT = os.path.abspath('..') if os.path.basename(os.getcwd()) == 'ipynb' else os.getcwd()
sys.path.insert(0, ROOT)

import branchynet  # applies the compatibility shims before chainer
import dill
from branchynet import devices, experiment, utils, visualize

NETWORK = '{network}'
PRESET = os.environ.get('BRANCHYNET_PRESET', 'fast')
OUT = os.environ.get('BRANCHYNET_OUT', ROOT)
for folder in ('_models', '_figs'):
    os.makedirs(os.path.join(OUT, folder), exist_ok=True)
module, config = experiment.resolve_config(
    NETWORK, PRESET, {{'dataset_path': os.environ.get('BRANCHYNET_DATASET')}})
GPU = devices.gpu_usable()  # probes the device: cuda.available alone can be True without one

branchyNet = module.get_network()
if GPU:
    branchyNet.to_gpu()
branchyNet.training()
config"""),
    ('markdown', '## Import data'),
    ('code', """x_train, y_train, x_test, y_test = experiment.load_dataset(config)
x_train.shape, x_test.shape"""),
    ('markdown', '## Settings'),
    ('code', """TRAIN_BATCHSIZE = config['batchsize']
TEST_BATCHSIZE = 1
TRAIN_NUM_EPOCHS = config['epochs_main']
n_timing = config['n_timing'] or len(x_test)
x_time, y_time = x_test[:n_timing], y_test[:n_timing]  # the samples timed at batch size 1"""),
    ('markdown', '## Train main network'),
    ('code', """main_loss, main_acc, main_time = utils.train(branchyNet, x_train, y_train, main=True,
                                             batchsize=TRAIN_BATCHSIZE,
                                             num_epoch=TRAIN_NUM_EPOCHS, seed=0)"""),
    ('markdown', '## Train BranchyNet (every exit jointly)'),
    ('code', """TRAIN_NUM_EPOCHS = config['epochs_joint']
branch_loss, branch_acc, branch_time = utils.train(branchyNet, x_train, y_train,
                                                   batchsize=TRAIN_BATCHSIZE,
                                                   num_epoch=TRAIN_NUM_EPOCHS, seed=1)
branchyNet.testing()
print('test accuracy per exit:', experiment.exit_accuracies(branchyNet, x_test, y_test))"""),
    ('markdown', '## Visualizing network training'),
    ('code', """if main_loss:
    visualize.plot_layers(main_loss, xlabel='Epochs', ylabel='Training Loss')
    visualize.plot_layers(main_acc, xlabel='Epochs', ylabel='Training Accuracy')"""),
    ('code', """if branch_loss:
    visualize.plot_layers(list(zip(*branch_loss)), xlabel='Epochs', ylabel='Training Loss')
    visualize.plot_layers(list(zip(*branch_acc)), xlabel='Epochs', ylabel='Training Accuracy')"""),
    ('markdown', """## Baseline: the main network at batch size 1, GPU (when usable) then CPU

`utils.test` returns total seconds; per sample in ms as the original."""),
    ('code', """branchyNet.testing()
branchyNet.verbose = False
g_baseacc = g_basediff = None
if GPU:
    branchyNet.to_gpu()
    g_baseacc, g_basediff, _, _ = utils.test(branchyNet, x_time, y_time, main=True,
                                             batchsize=TEST_BATCHSIZE)
    g_basediff = (g_basediff / float(len(y_time))) * 1000.

branchyNet.to_cpu()
c_baseacc, c_basediff, _, _ = utils.test(branchyNet, x_time, y_time, main=True,
                                         batchsize=TEST_BATCHSIZE)
c_basediff = (c_basediff / float(len(y_time))) * 1000.
c_baseacc, c_basediff"""),
    ('markdown', '## Threshold list (tried at every early exit; their product is screened)'),
    ('code', """thresholds = config['thresholds']
thresholds"""),
    ('markdown', '## GPU screening and trade-off (when a GPU is usable)'),
    ('code', """g_ts = g_accs = g_diffs = g_exits = None
if GPU:
    branchyNet.to_gpu()
    g_ts, g_accs, g_diffs, g_exits = utils.screen_branchy(branchyNet, x_time, y_time, thresholds,
                                                          batchsize=TEST_BATCHSIZE, verbose=True)
    g_diffs *= 1000.  # seconds -> ms"""),
    ('code', """if GPU:
    visualize.plot_line_tradeoff(g_accs, g_diffs, g_ts, g_exits, g_baseacc, g_basediff,
                                 all_samples=False, inc_amt=-0.0001,
                                 our_label='{title}', orig_label=config['title'],
                                 xlabel='Runtime (ms)', title=config['title'] + ' GPU',
                                 output_path=os.path.join(OUT, '_figs', NETWORK + '_gpu.pdf'))"""),
    ('markdown', '## CPU screening and trade-off'),
    ('code', """branchyNet.to_cpu()
c_ts, c_accs, c_diffs, c_exits = utils.screen_branchy(branchyNet, x_time, y_time, thresholds,
                                                      batchsize=TEST_BATCHSIZE, verbose=True)
c_diffs *= 1000.  # seconds -> ms"""),
    ('code', """visualize.plot_line_tradeoff(c_accs, c_diffs, c_ts, c_exits, c_baseacc, c_basediff,
                             all_samples=False, inc_amt=-0.0001,
                             our_label='{title}', orig_label=config['title'],
                             xlabel='Runtime (ms)', title=config['title'] + ' CPU',
                             output_path=os.path.join(OUT, '_figs', NETWORK + '_cpu.pdf'));"""),
    ('markdown', """## Table I

The original's printout (every screened point: accuracy, time, gain over
the baseline, thresholds and the share of samples at each exit), then the
port's Table I block at the knee: the fastest threshold setting at least as
accurate as the baseline, measured again with the trunk-only column."""),
    ('code', """print('CPU Results:')
utils.branchy_table_results(config['title'], c_baseacc, c_basediff, c_accs, c_diffs, c_exits, c_ts)
if GPU:
    print('\\n\\nGPU Results:')
    utils.branchy_table_results(config['title'], g_baseacc, g_basediff, g_accs, g_diffs, g_exits,
                                g_ts)"""),
    ('code', """knee = utils.select_knee(list(c_accs), list(c_diffs), c_baseacc)
rows = utils.branchy_table_rows(config['title'], utils.measure_main(branchyNet, x_time, y_time),
                                utils.measure_branchy(branchyNet, x_time, y_time, c_ts[knee]))"""),
    ('markdown', '## Save model and results (dill, as the original; the model from the CPU)'),
    ('code', """branchyNet.to_cpu()
with open(os.path.join(OUT, '_models', NETWORK + '.bn'), 'wb') as f:
    dill.dump(branchyNet, f)
if GPU:
    with open(os.path.join(OUT, '_models', NETWORK + '_gpu_results.pkl'), 'wb') as f:
        dill.dump({{'accs': g_accs, 'rt': g_diffs, 'exits': g_exits, 'ts': g_ts,
                   'baseacc': g_baseacc, 'basediff': g_basediff}}, f)
with open(os.path.join(OUT, '_models', NETWORK + '_cpu_results.pkl'), 'wb') as f:
    dill.dump({{'accs': c_accs, 'rt': c_diffs, 'exits': c_exits, 'ts': c_ts,
               'baseacc': c_baseacc, 'basediff': c_basediff}}, f)"""),
    ('code', """with open(os.path.join(OUT, '_models', NETWORK + '_cpu_results.pkl'), 'rb') as f:
    cpu_res = dill.load(f)
gpu_res = None
if GPU:
    with open(os.path.join(OUT, '_models', NETWORK + '_gpu_results.pkl'), 'rb') as f:
        gpu_res = dill.load(f)
sorted(cpu_res)"""),
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
