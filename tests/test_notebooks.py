"""ipynb/: in sync with their generator, stored without outputs, and they run."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = ('lenet_mnist', 'alex_cifar10', 'resnet_cifar10')


def test_notebooks_are_in_sync_with_the_generator_and_have_no_outputs():
    result = subprocess.run([sys.executable, 'tools/make_notebooks.py', '--check'],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    for name in NOTEBOOKS:
        with open(os.path.join(ROOT, 'ipynb', name + '.ipynb')) as f:
            nb = json.load(f)
        assert all(not c.get('outputs') for c in nb['cells'])
        assert not any('class ' in ''.join(c['source']) for c in nb['cells'])


@pytest.mark.slow
def test_own_network_notebook_runs_every_path_and_its_bundle(tmp_path, monkeypatch, mnist_data):
    """ipynb/own_network.ipynb: trained, calibrated, the same answers on the
    Chainer, fast, ONNX Runtime and numba paths, and from its bundle; then the
    network trained without exits given them by hand and by placement, each
    answering from its own bundle."""
    import nbclient
    import nbformat
    monkeypatch.setenv('BRANCHYNET_PRESET', 'tiny')
    monkeypatch.setenv('BRANCHYNET_OUT', str(tmp_path))
    nb = nbformat.read(os.path.join(ROOT, 'ipynb', 'own_network.ipynb'), as_version=4)
    assert all(not c.get('outputs') for c in nb.cells)
    nbclient.NotebookClient(nb, timeout=600, kernel_name='python3',
                            resources={'metadata': {'path': os.path.join(ROOT, 'ipynb')}}
                            ).execute()
    outputs = ''.join(o.get('text', '') for c in nb.cells for o in c.get('outputs', []))
    for path in ('Chainer', 'fast', 'ONNX Runtime', 'numba'):
        assert '| {} | True |'.format(path) in outputs, outputs
    assert 'target' in outputs and 'met: ' in outputs
    assert 'bundle gives the same labels and exits as net.predict: True' in outputs, outputs
    bundle = tmp_path / '_models' / 'own_network_bundle'
    assert (bundle / 'predict.py').exists() and (bundle / 'manifest.json').exists()
    # exits added to the network trained without them: by hand, then placed automatically
    assert 'final exit unchanged: True' in outputs and '# Exit placement' in outputs, outputs
    for name in ('attached', 'placed'):
        assert '{} bundle gives the same labels and exits as predict: True'.format(
            name) in outputs, outputs
        assert (tmp_path / '_models' / 'own_network_{}_bundle'.format(name) / 'manifest.json'
                ).exists()


@pytest.mark.slow
@pytest.mark.parametrize('name', NOTEBOOKS)
def test_notebook_executes_headless(name, tmp_path, monkeypatch, mnist_data):
    import nbclient
    import nbformat
    monkeypatch.setenv('BRANCHYNET_PRESET', 'tiny')
    monkeypatch.setenv('BRANCHYNET_OUT', str(tmp_path))
    if name != 'lenet_mnist':  # CIFAR-10 cannot be had here: MNIST in CIFAR's shape
        monkeypatch.setenv('BRANCHYNET_DATASET', 'mnist32')
    nb = nbformat.read(os.path.join(ROOT, 'ipynb', name + '.ipynb'), as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name='python3',
                            resources={'metadata': {'path': os.path.join(ROOT, 'ipynb')}}
                            ).execute()
    assert (tmp_path / '_models' / (name + '.bn')).exists()
    assert (tmp_path / '_models' / (name + '_cpu_results.pkl')).exists()
    assert (tmp_path / '_figs' / (name + '_cpu.pdf')).exists()
    outputs = ''.join(o.get('text', '') for c in nb.cells for o in c.get('outputs', []))
    assert '| CPU | B-' in outputs
    assert 'CPU Results:' in outputs and 'Thrshld.T' in outputs


#: What the original notebooks' code cells did, in their order (one entry per cell).
ORIGINAL_CELL_CALLS = [
    'get_network()', 'x_train, y_train, x_test, y_test = ',
    'utils.train(branchyNet, x_train, y_train, main=True',
    'utils.train(branchyNet, x_train, y_train,', 'plot_layers(main_loss',
    'plot_layers(list(zip(*branch_loss))', 'utils.test(branchyNet', 'thresholds = ',
    'g_ts, g_accs, g_diffs, g_exits = utils.screen_branchy', 'plot_line_tradeoff(g_accs',
    'c_ts, c_accs, c_diffs, c_exits = utils.screen_branchy', 'plot_line_tradeoff(c_accs',
    "utils.branchy_table_results(config['title'], c_baseacc, c_basediff, c_accs, c_diffs, "
    "c_exits, c_ts)", 'dill.dump(branchyNet', 'dill.load(f)']


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_notebooks_follow_the_original_cells_in_order(name):
    with open(os.path.join(ROOT, 'ipynb', name + '.ipynb')) as f:
        cells = [''.join(c['source']) for c in json.load(f)['cells'] if c['cell_type'] == 'code']
    position = 0
    for call in ORIGINAL_CELL_CALLS:
        found = [i for i, source in enumerate(cells) if i >= position and call in source]
        assert found, '{}: no cell after cell {} does {!r}'.format(name, position, call)
        position = found[0] + 1
