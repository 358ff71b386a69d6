"""Every inference engine against ``net.predict`` on generated networks.

The fast path and ONNX Runtime (both forms: the early-exit graph and the
per-exit sessions) run on the ``CI_EXAMPLES`` fixed networks
``tests.netgen.spec_for(0)``, ``spec_for(1)``, ... (each drawn from its own
seed, the index: the same networks every run, for every engine, whatever
the test's source; a failure names the index that reproduces it). Numba
compiles each network shape for seconds, so CI runs it on ``NUMBA_CASES``,
hand-picked to cover every layer kind and exit placement, each shape compiled
once per kernel (the generated loop, the im2col + BLAS product, the register
tiles) and run with every confidence measure, several weights and batch sizes.
``./run_tests.sh -m fuzz`` runs ``FUZZ_EXAMPLES`` fresh random networks per
engine (failures are kept in the hypothesis database under .hypothesis).
"""
import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings

from branchynet.engines.fast import FastBranchyNet
from tests import netgen
from tests.netgen import Spec

#: generated networks per engine in the default run (fast path, both ONNX Runtime forms)
CI_EXAMPLES = 100
#: generated networks per engine in ``-m fuzz``
FUZZ_EXAMPLES = 300

_HEALTH = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large]
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=_HEALTH,
                print_blob=True)


def _onnx(form):
    def make():
        onnxpath = pytest.importorskip('branchynet.engines.onnx_runtime')
        pytest.importorskip('onnxruntime')
        return (lambda net: onnxpath.OnnxBranchyNet(net, form=form)), (ValueError,)
    return make


def _numba(kernels='auto'):
    def make():
        pytest.importorskip('numba')
        from branchynet.engines import numba as numbapath
        return (lambda net: numbapath.NumbaBranchyNet(net, threads=2, kernels=kernels)), \
            (numbapath.NotCompilable,)
    return make


#: engine -> (factory, documented refusal types), and whether ``exit_logits``
#: is the engine's own (numba's comes from the fast path: labels only); numba
#: with the kernel of every convolution and linear layer measured ('auto') or
#: forced to the generated loop, the im2col + BLAS product or (convolutions;
#: linear layers: the loop) the register tiles
ENGINES = {'fast': (lambda: (FastBranchyNet, ()), True),
           'onnx': (_onnx('sessions'), True),  # one session per exit (the default)
           'onnx-graph': (_onnx('graph'), True),  # the early-exit graph
           'numba': (_numba(), False),
           'numba-loop': (_numba('loop'), False),
           'numba-gemm': (_numba('gemm'), False),
           'numba-tile': (_numba('tile'), False)}


def refused_layers(engine, spec):
    """The layers of ``spec`` that ``engine`` documents it cannot run."""
    def refuses(layer):
        if engine.startswith('numba'):
            return layer[0] in ('tanh', 'sigmoid', 'bottleneck')
        if engine.startswith('onnx'):  # LRN: odd windows only; SL: Links only
            return layer[0] == 'bottleneck' or layer == ('lrn', 4) or layer == ('sl', 'fn')
        return False
    layers = [it for it in spec.items if it[0] != 'exit'] + list(spec.head) + \
        [layer for it in spec.items if it[0] == 'exit' for layer in it[1]]
    return [layer for layer in layers if refuses(layer)]


#: The least share of a network's samples compared (the rest are dropped as
#: rounding ties, ``netgen.unstable_samples``), asked of batches of at least
#: ``SHARE_BATCH`` samples; a smaller batch may drop as many as one of that
#: size (2), since one tie in a batch of 6 is already 17 %. Samples whose two
#: largest logits are exactly equal (``Outcome.exact_ties``: weights that
#: give several samples the same logits) are not counted as dropped.
MIN_COMPARED = 0.9
SHARE_BATCH = 20


def max_dropped(batch):
    """The most samples of a batch of ``batch`` that may be dropped as ties."""
    return int((1 - MIN_COMPARED) * max(batch, SHARE_BATCH) + 1e-9)


def check(engine, spec, every_exit=True):
    """The differential check of ``engine`` on ``spec``'s network; beyond it,
    that at most ``max_dropped`` of the samples were left out as ties and (with
    ``every_exit``) that every exit had compared samples leave there, save an
    early exit whose scores differ by less than their rounding tolerance
    (``Outcome.unsplit``: nobody is sent out there)."""
    make, logits = ENGINES[engine]
    factory, refusals = make()
    net = netgen.build(spec)
    outcome = netgen.check_engine(factory, refusals, net, netgen.inputs(spec), spec.quantiles,
                                  batchsize=spec.batchsize, compare_logits=logits)
    expected = refused_layers(engine, spec)
    assert bool(outcome.refused) == bool(expected), \
        'refused: {!r}; layers it documents it cannot run: {}'.format(outcome.refused, expected)
    if outcome.refused:
        return outcome
    assert outcome.samples + outcome.unstable == spec.batch
    assert outcome.unstable - outcome.exact_ties <= max_dropped(spec.batch), \
        'only {} of {} samples compared ({} exact label ties)'.format(
            outcome.samples, spec.batch, outcome.exact_ties)
    if every_exit:
        assert uncovered([outcome]) == [], \
            'no compared sample left at exit(s) {}: {}'.format(uncovered([outcome]), outcome)
    return outcome


def uncovered(outcomes):
    """Exits at which no compared sample of ``outcomes`` (one network) left,
    other than the early exits some outcome could not split (``unsplit``) and
    the exits whose samples all have exactly tied labels (``tied_exits``)."""
    unsplit = {i for o in outcomes for i in o.unsplit + o.tied_exits}
    totals = [sum(counts) for counts in zip(*(o.exits for o in outcomes))]
    return [i for i, n in enumerate(totals) if n == 0 and i not in unsplit]


@pytest.mark.parametrize('index', range(CI_EXAMPLES))
@pytest.mark.parametrize('engine', ['fast', 'onnx', 'onnx-graph'])
def test_generated_networks(engine, index):
    """Network ``netgen.spec_for(index)``: the differential check and the
    coverage checks of ``check``."""
    check(engine, netgen.spec_for(index))


@pytest.mark.fuzz
@pytest.mark.parametrize('engine', ['fast', 'onnx', 'onnx-graph', 'numba', 'numba-tile'])
@FUZZ
@given(spec=netgen.specs())
def test_generated_networks_fuzz(engine, spec):
    check(engine, spec)


# ------------------------------------------------------------------ numba in CI
def _lin(k, lazy=False, bias=True):
    return ('linear', k, lazy, bias)


#: Network shapes for the numba path: every layer kind it compiles (and the
#: ones it refuses), exits after pooling, after a padded convolution, after a
#: residual block, heads of 1-3 layers, heads sharing the trunk's next layers.
NUMBA_CASES = {
    # BN before and after ReLU, cover_all pooling with padding, LRN, dropout, lazy Linear
    'conv_bn_pool_lrn': Spec((3, 32, 32), 5, (
        ('conv', 6, 5, 1, 2, False), ('bn',), ('relu',), ('max', 3, 2, 1, True),
        ('exit', (('conv', 4, 3, 1, 1, True), ('max', 2, None, 0, False), _lin(5, lazy=True))),
        ('conv', 8, 3, 2, 1, True), ('relu',), ('bn',), ('avg', 3, 2, 1),
        ('exit', (_lin(5),)),
        ('lrn', 5), _lin(12, bias=False), ('relu',), ('dropout',)), (_lin(5, lazy=True),)),
    # non-square input, 1x1 convolution with padding 3, stride-3 windows, a head
    # sharing the trunk's ReLU, SL layers (identity and a test-mode ReLU link)
    'odd_shapes_shared_head': Spec((2, 13, 17), 4, (
        ('conv', 3, 1, 1, 3, True), ('relu',), ('max', 3, 3, 0, True),
        ('exit', (('relu',), _lin(4, lazy=True, bias=False))),
        ('relu',), ('conv', 5, 4, 2, 0, True), ('sl', None), ('sl', 'link'),
        ('exit', (('avg', 2, 1, 1), _lin(4))),
        ('conv', 2, 2, 1, 0, False)), (('relu',), _lin(4))),
    # residual blocks, same and changing shape, exits after each
    'residual': Spec((3, 12, 12), 3, (
        ('conv', 4, 3, 1, 1, True), ('bn',), ('relu',), ('res', 4, 1),
        ('exit', (_lin(3),)),
        ('res', 6, 2),
        ('exit', (('avg', 2, None, 0), _lin(3, lazy=True))),
        ('res', 6, 1)), (_lin(3),)),
    # smallest input, stride-2 convolution without bias, 3-layer heads
    'tiny_input_deep_heads': Spec((1, 6, 6), 3, (
        ('conv', 2, 2, 2, 0, False), ('relu',),
        ('exit', (('conv', 3, 3, 1, 1, True), ('relu',), _lin(3))),
        ('max', 2, 1, 1, False), ('conv', 3, 5, 1, 2, True),
        ('exit', (_lin(6), ('relu',), _lin(3))),
        _lin(8, lazy=True), ('relu',), ('dropout',)), (_lin(6), ('relu',), _lin(3))),
    # issue 21's case: a Linear head reads a max-pooled value that the next
    # convolution reads with padding (numba: wrong labels)
    'pooled_value_read_padded': Spec((1, 8, 8), 10, (
        ('conv', 4, 3, 1, 1, True), ('relu',), ('max', 2, 2, 0, False),
        ('exit', (_lin(10),)),
        ('conv', 4, 3, 1, 1, True), ('relu',)), (_lin(10),)),
    'pooled_value_read_unpadded': Spec((1, 8, 8), 10, (
        ('conv', 4, 3, 1, 1, True), ('relu',), ('max', 2, 2, 0, False),
        ('exit', (_lin(10),)),
        ('conv', 4, 3, 1, 0, True), ('relu',)), (_lin(10),)),
    # three early exits, each after pooling, with padded convolutions after them
    'three_exits_after_pooling': Spec((3, 20, 20), 4, (
        ('conv', 4, 3, 1, 1, True), ('max', 2, 2, 0, False),
        ('exit', (_lin(4),)),
        ('conv', 4, 5, 1, 2, True), ('avg', 2, 2, 0),
        ('exit', (_lin(4, lazy=True),)),
        ('conv', 4, 3, 1, 3, True), ('max', 3, 2, 1, True),
        ('exit', (('conv', 2, 3, 1, 1, True), _lin(4))),
        ('conv', 3, 3, 1, 1, False), ('relu',)), (_lin(4),)),
    # layers the numba path refuses by name
    'refused_tanh': Spec((1, 8, 8), 3, (
        ('conv', 2, 3, 1, 1, True), ('tanh',), ('exit', (_lin(3),)),
        ('conv', 2, 3, 1, 1, True)), (_lin(3),)),
    'refused_bottleneck': Spec((2, 8, 8), 3, (
        ('conv', 2, 3, 1, 1, True), ('exit', (_lin(3),)),
        ('bottleneck', 2), ('sigmoid',)), (_lin(3),)),
}


def _numba_runs(spec):
    """The runs of one numba network shape: every measure, other weights and
    batch sizes (one compile: the generated code depends on the shapes only)."""
    for i, (measure, batch, batchsize) in enumerate(
            [('entropy', 70, None), ('maxprob', 1, None), ('margin', 41, 7),
             ('entropy', 23, 1)]):
        yield dataclasses.replace(spec, measure=measure, seed=spec.seed + i, batch=batch,
                                  batchsize=batchsize,
                                  quantiles=(0.5, 0.35, 0.3)[:spec.early_exits()])


def _hand_picked():
    for name in sorted(NUMBA_CASES):
        for engine in ('fast', 'onnx', 'onnx-graph', 'numba-loop', 'numba-gemm',
                       'numba-tile'):
            yield pytest.param(engine, name, id='{}-{}'.format(name, engine))


@pytest.mark.parametrize('engine, name', _hand_picked())
def test_hand_picked_networks(engine, name):
    # one run has a single sample: every exit is asked of the runs together
    outcomes = [check(engine, spec, every_exit=False) for spec in _numba_runs(NUMBA_CASES[name])]
    if not outcomes[0].refused:
        assert uncovered(outcomes) == [], outcomes
