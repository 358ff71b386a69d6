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
1. `./get_results.sh` runs the full experiment (`branchynet/driver/run.py`).

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
from branchynet import devices, utils, visualize
from branchynet.driver import run as experiment

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


def build(cells):
    """An nbformat-4 notebook of ``(kind, source)`` cells, stored without outputs."""
    out = []
    for i, (kind, source) in enumerate(cells):
        cell = {'cell_type': kind, 'id': 'cell-{}'.format(i), 'metadata': {},
                'source': source.splitlines(True)}
        if kind == 'code':
            cell.update(execution_count=None, outputs=[])
        out.append(cell)
    return {'cells': out, 'nbformat': 4, 'nbformat_minor': 5,
            'metadata': {'kernelspec': {'name': 'python3', 'display_name': 'Python 3',
                                        'language': 'python'},
                         'language_info': {'name': 'python'}}}


def notebook(network):
    title, data = TITLES[network]
    return build([(kind, text.format(title=title, data=data, network=network) if kind == 'code'
                   else text.replace('{title}', title).replace('{data}', data))
                  for kind, text in CELLS])


def render(name):
    nb = own_network_notebook() if name == OWN_NETWORK else notebook(name)
    return json.dumps(nb, indent=1, sort_keys=True) + '\n'


# ---------------------------------------------------------------- own_network.ipynb
OWN_NETWORK = 'own_network'

OWN_NETWORK_CELLS = [
    ('markdown', """# Your own network, end to end

A network that is not one of the paper's (three convolution blocks with
batch normalisation, two early exits) made branchy, trained briefly on a
small MNIST subset, given the thresholds that keep a target accuracy,
compared on every inference path (Chainer, fast, ONNX Runtime, numba) and
deployed as a folder that runs with numpy and ONNX Runtime alone. Then the
same network trained without exits gets them afterwards: at points chosen
by hand (`attach_exits`) and where they pay (`place_exits`), each deployed
as a bundle too.

Environment variables: `BRANCHYNET_PRESET=tiny` (fewer images and epochs,
for a quick check) and `BRANCHYNET_OUT` (where `_models/` goes; default
the project root)."""),
    ('code', """import os
import sys

ROOT = os.path.abspath('..') if os.path.basename(os.getcwd()) == 'ipynb' else os.getcwd()
sys.path.insert(0, ROOT)

import branchynet  # first: the compatibility shims Chainer 7 needs
import chainer.functions as F
import chainer.links as L
import numpy
from branchynet import FL, Branch, BranchyNet, utils
from branchynet.engines import deploy
from branchynet.evaluation import measurement
from branchynet.io import fileio
from branchynet.datasets import mnist

TINY = os.environ.get('BRANCHYNET_PRESET') == 'tiny'
OUT = os.environ.get('BRANCHYNET_OUT', ROOT)
N_TRAIN, EPOCHS = (2000, 1) if TINY else (12000, 2)
numpy.random.seed(0)"""),
    ('markdown', """## The network

A flat list of layers: `Branch([...])` marks an early exit and holds its
head, the last `Branch` is the final classifier. `input_shape` (one
sample's `(C, H, W)`) is what the ONNX and numba paths and the bundle need."""),
    ('code', """def own_network():
    def block(c_in, c_out):
        return [L.Convolution2D(c_in, c_out, 3, pad=1), L.BatchNormalization(c_out),
                FL(F.relu), FL(F.max_pooling_2d, 2)]
    return BranchyNet(
        block(1, 8)                                     # 8 x 14 x 14
        + [Branch([L.Linear(8 * 14 * 14, 10)])]         # exit 1
        + block(8, 16)                                  # 16 x 7 x 7
        + [Branch([L.Linear(16 * 7 * 7, 10)])]          # exit 2
        + block(16, 32)                                 # 32 x 4 x 4 (pooling covers all)
        + [L.Linear(32 * 4 * 4, 64), FL(F.relu),
           Branch([L.Linear(64, 10)])],                 # exit 3: the final classifier
        input_shape=(1, 28, 28))


net = own_network()
print(net.numexits(), 'exits')"""),
    ('markdown', '## Data: a subset of MNIST, with a validation split for the thresholds'),
    ('code', """x_train, y_train, x_test, y_test = mnist.get_data()
x_train, y_train = x_train[:N_TRAIN], y_train[:N_TRAIN]
x_val, y_val = x_test[:1000], y_test[:1000]      # chooses the thresholds
x_test, y_test = x_test[1000:], y_test[1000:]    # measures them
print(len(x_train), 'training,', len(x_val), 'validation,', len(x_test), 'test images')"""),
    ('markdown', '## Training: the main network, then every exit jointly'),
    ('code', """utils.train(net, x_train, y_train, main=True, batchsize=128, num_epoch=EPOCHS)
utils.train(net, x_train, y_train, batchsize=128, num_epoch=EPOCHS)
main_acc = (net.predict_main(x_test) == y_test).mean()
print('main network test accuracy {:.2%}'.format(main_acc))"""),
    ('markdown', """## Thresholds for a target accuracy

`net.calibrate` computes every exit's outputs on the validation images once,
measures what leaving at each exit costs (ms per sample at batch size 1),
and picks the cheapest thresholds whose validation accuracy reaches the
target; it sets them on the model (`net.thresholdExits`). Here the target
is the main network's validation accuracy less half a point; `budget=`
(ms per sample) asks for the most accurate thresholds within a cost
instead."""),
    ('code', """val_main = (net.predict_main(x_val) == y_val).mean()
TARGET = float(val_main) - 0.005
result = net.calibrate(x_val, y_val, target_acc=TARGET)
print('target {:.2%} met: {}; thresholds {}'.format(TARGET, result['met'],
      [round(t, 4) for t in result['thresholds']]))
print('predicted on validation: {:.2%}, {:.3f} ms per sample (exit costs {} ms)'.format(
    result['acc'], result['cost'], [round(c, 3) for c in result['path_ms']]))"""),
    ('code', """within = net.calibrate(x_val, y_val, budget=result['path_ms'][0] * 1.5)
print('within {:.3f} ms: thresholds {}, predicted {:.2%}'.format(
    result['path_ms'][0] * 1.5, [round(t, 4) for t in within['thresholds']], within['acc']))
net.calibrate(x_val, y_val, target_acc=TARGET)  # back to the accuracy target
labels, exits = net.predict(x_test)
print('test accuracy {:.2%} (main network {:.2%}); share leaving at each exit {}'.format(
    (labels == y_test).mean(), main_acc,
    numpy.bincount(exits, minlength=net.numexits()) / len(exits)))"""),
    ('markdown', """## Every inference path

The same model on the four paths: the same labels and exits (the exit
decision is the same code), and the batch-1 time per sample, end to end, on
the test images. The numba path compiles the network on first use
(seconds; cached afterwards)."""),
    ('code', """from branchynet.engines.fast import FastBranchyNet
from branchynet.engines.numba import NumbaBranchyNet
from branchynet.engines.onnx_runtime import OnnxBranchyNet

engines = {'Chainer': net, 'fast': FastBranchyNet(net), 'ONNX Runtime': OnnxBranchyNet(net),
           'numba': NumbaBranchyNet(net)}
x_time, y_time = x_test[:200], y_test[:200]
print('| path | same labels and exits as Chainer | main network ms | early exit ms | gain |')
print('|---|---|---|---|---|')
for name, engine in engines.items():
    got_labels, got_exits = (engine.predict(x_test) if engine is not net else (labels, exits))
    same = bool((got_labels == labels).all() and (got_exits == exits).all())
    main_ms = measurement.measure_main(net, x_time, y_time, engine=engine, trunk_only=False)['ms']
    early_ms = measurement.measure_branchy(net, x_time, y_time, net.thresholdExits,
                                           engine=engine, trunk_only=False)['ms']
    print('| {} | {} | {:.3f} | {:.3f} | {:.2f}x |'.format(name, same, main_ms, early_ms,
                                                           main_ms / early_ms))"""),
    ('markdown', """## Saving, and a deployable bundle

`fileio.save_npz` keeps the weights with the thresholds and the confidence
measure. `deploy.save_bundle` writes the ONNX graphs, `manifest.json` and a
`predict.py` that needs only numpy and onnxruntime: copy the folder
anywhere and run `python predict.py INPUT.npy OUTPUT.npz`."""),
    ('code', """models = os.path.join(OUT, '_models')
os.makedirs(models, exist_ok=True)
fileio.save_npz(os.path.join(models, 'own_network.npz'), net)
reloaded = fileio.load_npz(os.path.join(models, 'own_network.npz'), own_network())
print('thresholds after reloading:', reloaded.thresholdExits)

bundle_dir = os.path.join(models, 'own_network_bundle')
deploy.save_bundle(net, bundle_dir)
print(sorted(os.listdir(bundle_dir)))"""),
    ('code', """import json
import subprocess

with open(os.path.join(bundle_dir, 'manifest.json')) as f:
    print(json.dumps(json.load(f), indent=1)[:600])
numpy.save(os.path.join(models, 'x.npy'), x_test)
run = subprocess.run([sys.executable, os.path.join(bundle_dir, 'predict.py'),
                      os.path.join(models, 'x.npy'), os.path.join(models, 'out.npz')],
                     capture_output=True, text=True)
print(run.stderr or 'predict.py ran')
with numpy.load(os.path.join(models, 'out.npz')) as out:
    print('bundle gives the same labels and exits as net.predict:',
          bool((out['labels'] == labels).all() and (out['exits'] == exits).all()))"""),
    ('markdown', """## Exits on a network already trained

`attach_exits` adds exits to a network trained without them: it puts a head
at each boundary named (boundary `b` is after trunk layer `b`, as
`net.branch_points` counts) and trains only the heads, on the frozen
trunk's activations. The trunk and the final classifier are copied
unchanged, so the final exit answers exactly as the trained network did.
Here the trained network is this one trained as the main network alone;
`drop_early_exits=True` leaves out its early heads, never trained. A
`chainer.Sequential` of layers works too, given `input_shape=` (see
`docs/placement.md`). The exits go where the hand-placed ones are, after
the first and second blocks; then thresholds for the same kind of target
as above, and the batch-1 gain on the fast path."""),
    ('code', """from branchynet.placement import attach_exits, place_exits


def gain(model):
    fast = FastBranchyNet(model)
    main_ms = measurement.measure_main(model, x_time, y_time, engine=fast, trunk_only=False)['ms']
    return main_ms / measurement.measure_branchy(model, x_time, y_time, model.thresholdExits,
                                                 engine=fast, trunk_only=False)['ms']


plain = own_network()  # trained as the main network alone: its early heads stay untrained
utils.train(plain, x_train, y_train, main=True, batchsize=128, num_epoch=EPOCHS)
plain_labels = plain.predict_main(x_test)
plain_val = float((plain.predict_main(x_val) == y_val).mean())
attached = attach_exits(plain, [4, 8], x_train, y_train, epochs=3, drop_early_exits=True)
print('exits at', attached.branch_points, '- final exit unchanged:',
      bool((attached.predict_main(x_test) == plain_labels).all()))
cal = attached.calibrate(x_val, y_val, target_acc=plain_val - 0.005)
a_labels, a_exits = attached.predict(x_test)
print('target {:.2%} met: {}; test accuracy {:.2%} (trained network {:.2%}); share leaving '
      'at each exit {}; gain {:.2f}x'.format(
          plain_val - 0.005, cal['met'], (a_labels == y_test).mean(),
          (plain_labels == y_test).mean(),
          numpy.bincount(a_exits, minlength=attached.numexits()) / len(a_exits), gain(attached)))"""),
    ('markdown', """## Exits placed automatically

`place_exits` chooses the exits itself: a probe head at every candidate
boundary (between 2 % and 90 % of the network's multiply-adds), trained on
the frozen trunk for a subset of the training images; every segment and
head timed on the engine named; then the set of at most `k` exits, with
its thresholds, of the least expected time at the target accuracy (no
early exit is one of the sets). It returns the network, calibrated, and a
report: `report.markdown()` below, `report.save(folder)` for the table, a
JSON record and a figure."""),
    ('code', """placed, report = place_exits(plain, x_train, y_train, x_val, y_val, k=2, engine='fast',
                             target_acc=plain_val - 0.005, drop_early_exits=True,
                             timing_samples=100, x_test=x_test[:1000], y_test=y_test[:1000])
print('chosen:', report['chosen']['points'] or 'no early exit', '- thresholds',
      placed.thresholdExits, '- gain {:.2f}x'.format(gain(placed)))
print(report.markdown())"""),
    ('markdown', """Both networks are ordinary `BranchyNet`s: saved as bundles as above, and
the bundles' `predict.py` gives what `predict` gives."""),
    ('code', """for name, model in (('attached', attached), ('placed', placed)):
    folder = os.path.join(models, 'own_network_{}_bundle'.format(name))
    deploy.save_bundle(model, folder)
    out_path = os.path.join(models, 'out_{}.npz'.format(name))
    run = subprocess.run([sys.executable, os.path.join(folder, 'predict.py'),
                          os.path.join(models, 'x.npy'), out_path], capture_output=True, text=True)
    print(run.stderr or 'predict.py ran')
    want_labels, want_exits = model.predict(x_test)
    with numpy.load(out_path) as out:
        print('{} bundle gives the same labels and exits as predict:'.format(name),
              bool((out['labels'] == want_labels).all() and (out['exits'] == want_exits).all()))"""),
]


def own_network_notebook():
    """ipynb/own_network.ipynb: its cells are plain code, not a template."""
    return build(OWN_NETWORK_CELLS)


def main(argv=None):
    parser = argparse.ArgumentParser(description='Write or check ipynb/*.ipynb.')
    parser.add_argument('--check', action='store_true')
    args = parser.parse_args(argv)
    from networks import NETWORKS
    stale = []
    for name in NETWORKS + (OWN_NETWORK,):
        path = os.path.join(ROOT, 'ipynb', name + '.ipynb')
        text = render(name)
        if args.check:
            if not os.path.exists(path) or open(path).read() != text:
                stale.append(path)
        else:
            from branchynet.io.fileio import atomic_write
            with atomic_write(path, 'w') as f:
                f.write(text)
    if stale:
        print('out of date (run python tools/make_notebooks.py): ' + ', '.join(stale))
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
