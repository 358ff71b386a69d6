"""The numba-compiled path gives the labels and exits of ``BranchyNet.predict``
on all three networks, decides with the same scores, refuses what it cannot
compile with a clear error, falls back to the fast path, and survives a
damaged on-disk cache.

Compiling is the slow part (seconds per network on an empty cache, as in CI)
and Chainer's B-ResNet-110 is slow to train and run: B-ResNet is compared to
``predict`` with 4 residual blocks per stage instead of 18, whose generated
code is B-ResNet-110's up to loop counts and offsets (checked below on the
full network's code).
"""
import glob
import math
import os
import re
import sys
import warnings

import chainer
import chainer.functions as F
import chainer.links as L
import numpy
import pytest

from branchynet import SL, BranchyNet, Branch, FL, entropy
from branchynet.measures import confidence
from branchynet.engines.fast import FastBranchyNet
from networks import alex_cifar10, lenet_mnist, resnet_cifar10
from tests.helpers import assert_engine_matches_predict

numba = pytest.importorskip('numba')
numbapath = pytest.importorskip('branchynet.engines.numba')
from branchynet.engines.numba import layout as numba_layout, program as numba_program  # noqa: E402
from branchynet.validation import InvalidValue  # noqa: E402


#: residual blocks per stage of the B-ResNet compared to ``predict`` (18 in B-ResNet-110)
RESNET_BLOCKS = 4


def _resnet(blocks):
    """B-ResNet built by ``resnet_cifar10.get_network`` with ``blocks`` per stage."""
    return resnet_cifar10.get_network(blocks_per_stage=blocks)


def _trained(module, shape, steps, batch=8):
    numpy.random.seed(0)
    net = _resnet(RESNET_BLOCKS) if module is resnet_cifar10 else module.get_network()
    rng = numpy.random.RandomState(0)
    for _ in range(steps):  # moves BN statistics away from their initial values
        net.train(rng.rand(batch, *shape).astype(numpy.float32),
                  rng.randint(0, 10, batch).astype(numpy.int32))
    return net


# compiling B-AlexNet and B-ResNet takes 10 s or more each on an empty cache
@pytest.fixture(scope='module', params=['lenet', pytest.param('alexnet', marks=pytest.mark.slow),
                                        pytest.param('resnet', marks=pytest.mark.slow)])
def compiled(request):
    module, shape = {'lenet': (lenet_mnist, (1, 28, 28)),
                     'alexnet': (alex_cifar10, (3, 32, 32)),
                     'resnet': (resnet_cifar10, (3, 32, 32))}[request.param]
    net = _trained(module, shape, steps=2)
    n = 16 if request.param == 'resnet' else 24
    x = numpy.random.RandomState(1).rand(n, *shape).astype(numpy.float32)
    return net, numbapath.NumbaBranchyNet(net, threads=2), x


def test_labels_and_exits_identical_to_predict(compiled):
    net, engine, x = compiled
    assert_engine_matches_predict(engine, net, x)
    numpy.testing.assert_array_equal(engine.predict_main(x, batchsize=1), net.predict_main(x))


def test_batch1_calls_answer_as_predict_in_fresh_arrays(compiled):
    """The batch-1 path (one native call, no thread) answers as ``predict``
    on the whole batch, and a later call leaves the arrays an earlier one
    returned as they were (no output buffer is shared between calls)."""
    net, engine, x = compiled
    ents = entropy(net.get_SM(x)[0])
    ts = [float(numpy.median(ents))] * (net.numexits() - 1)
    exp_labels, exp_exits = net.predict(x, ts)
    exp_main = net.predict_main(x)
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        answers = [(engine.route(engine.send(x[i:i + 1]), ts),
                    engine.main_route(engine.send(x[i:i + 1]))) for i in range(len(x))]
    assert len(set(exp_exits.tolist())) > 1  # both kinds of sample among them
    for i, ((labels, exits), (main_labels, main_exits)) in enumerate(answers):
        assert (labels.tolist(), exits.tolist()) == ([exp_labels[i]], [exp_exits[i]])
        assert (main_labels.tolist(), main_exits.tolist()) == ([exp_main[i]],
                                                               [net.numexits() - 1])


def test_any_array_layout_is_converted_and_compiles_nothing_more(compiled):
    """A batch-1 sample or a batch that is float64, strided, read-only or
    unaligned (which the native code, compiled for writeable aligned float32
    C-contiguous (N, C, H, W) only, refuses with a TypeError) is converted
    and answers as the float32 array does; no call compiles another version
    of the native code."""
    net, engine, x = compiled
    ts = [0.5] * (net.numexits() - 1)
    run = engine.program.run
    compiled_before = list(run.signatures)
    for n in (1, 4):
        doubled = numpy.repeat(x[:n], 2, axis=3)  # every second column is the sample
        read_only = x[:n].copy()
        read_only.flags.writeable = False
        shifted = numpy.frombuffer(b'\0' + x[:n].tobytes(), numpy.uint8)[1:]
        unaligned = shifted.view(numpy.float32).reshape(x[:n].shape)
        layouts = [x[:n].astype(numpy.float64), doubled[:, :, :, ::2], read_only, unaligned]
        assert not layouts[1].flags.c_contiguous and not unaligned.flags.aligned
        with chainer.using_config('train', False), chainer.no_backprop_mode():
            expected = engine.route(x[:n], ts), engine.main_route(x[:n])
            for sample in layouts:
                got = engine.route(sample, ts), engine.main_route(sample)
                assert [a.tolist() for pair in got for a in pair] == \
                    [a.tolist() for pair in expected for a in pair]
        assert [a.tolist() for a in engine.predict(read_only, ts)] == \
            [a.tolist() for a in net.predict(x[:n], ts)]
    assert run.signatures == compiled_before


def _taking(log, delay=0.0):
    """A stand-in for the native ``run`` in ``_split``: takes samples from
    ``taken`` one at a time (under a lock, as the native code does with one
    atomic add) and logs (tag, slab, sample) after ``delay`` seconds each."""
    import threading
    import time
    lock = threading.Lock()

    def fn(tag, S, taken, n):
        while True:
            with lock:
                i = int(taken[0])
                taken[0] = i + 1
            if i >= n:
                return
            time.sleep(delay)
            log.append((tag, id(S), i, threading.get_ident()))
    return fn


@pytest.mark.parametrize('threads', [2, 3])
@pytest.mark.parametrize('n', [1, 2, 5, 64, 513])
def test_threads_take_every_sample_once_in_their_own_slabs(compiled, threads, n):
    """``_split`` gives every thread the batch's one counter, so every
    sample is taken exactly once, each in one thread's own slab (no two
    threads share one)."""
    net, _, _ = compiled
    engine = numbapath.NumbaBranchyNet(net, threads=threads)
    log = []
    slabs = engine._scratch[-1].slabs  # the set the next call takes
    engine._split(_taking(log, delay=0.0002), n, 'tag')
    assert sorted(i for _, _, i, _ in log) == list(range(n))
    assert {t for t, *_ in log} == {'tag'}
    assert {s for _, s, _, _ in log} <= {id(s) for s in slabs}
    slabs = {}
    for _, s, _, thread in log:
        slabs.setdefault(thread, set()).add(s)
    assert all(len(v) == 1 for v in slabs.values())
    assert len(set.union(*slabs.values())) == len(slabs)


def test_split_returns_after_every_sample_taken_is_done(compiled):
    """A sample a worker has taken is done (logged) before ``_split``
    returns, however long it takes."""
    net, _, _ = compiled
    engine = numbapath.NumbaBranchyNet(net, threads=3)
    for _ in range(5):
        log = []
        engine._split(_taking(log, delay=0.002), 12, 'tag')
        assert sorted(i for _, _, i, _ in log) == list(range(12))


def test_the_native_counter_shares_a_batch_between_threads(compiled):
    """The compiled code's own counter: with three threads on one batch,
    every sample is answered as ``predict`` answers it, and the counter ends
    exactly one past the batch per native call (each call took one number
    too many to stop; a count that lost an update would end lower)."""
    net, _, x = compiled
    engine = numbapath.NumbaBranchyNet(net, threads=3)
    ts = [0.5] * (net.numexits() - 1)
    xs = numpy.concatenate([x] * 8)
    counters = []
    p = engine.program
    code, limits = engine._decision(ts)
    labels, exits = numpy.empty(len(xs), numpy.int32), numpy.empty(len(xs), numpy.int32)

    def run(S, taken, n):
        p.run(xs, p.weights, S, limits, code, False, labels, exits, taken, n)
        counters.append(taken)
    engine._split(run, len(xs))
    exp_labels, exp_exits = net.predict(xs, ts)
    assert labels.tolist() == exp_labels.tolist() and exits.tolist() == exp_exits.tolist()
    assert len({id(t) for t in counters}) == 1
    assert int(counters[0][0]) == len(xs) + len(counters)


def test_a_failing_thread_is_raised_after_the_others_end(compiled):
    """An exception in one thread reaches ``_split``'s caller once the other
    threads have ended (it does not wait forever for samples nobody will
    run): the worker took every sample, or (not started in time) none."""
    net, _, _ = compiled
    engine = numbapath.NumbaBranchyNet(net, threads=2)
    log = []
    take = _taking(log, delay=0.0005)
    caller = engine._scratch[-1].slabs[0]  # the set the next call takes: the caller's slab

    def fn(S, taken, n):
        if S is caller:
            raise KeyError('caller thread')
        take('worker', S, taken, n)

    with pytest.raises(KeyError, match='caller thread'):
        engine._split(fn, 100)
    done = len(log)
    assert sorted(i for _, _, i, _ in log) in ([], list(range(100)))
    import time
    time.sleep(0.01)
    assert len(log) == done  # nothing ran after _split returned


def test_a_failing_worker_is_raised_after_the_caller_ends_the_batch(compiled):
    """An exception in a worker thread reaches ``_split``'s caller, which
    takes the samples the worker left and returns once both have ended."""
    net, _, _ = compiled
    engine = numbapath.NumbaBranchyNet(net, threads=2)
    raised = 0
    for _ in range(5):
        log = []
        take = _taking(log, delay=0.0005)
        failed = []
        caller = engine._scratch[-1].slabs[0]

        def fn(S, taken, n, caller=caller):
            if S is not caller:
                failed.append(True)
                raise KeyError('worker')
            take('caller', S, taken, n)

        try:
            engine._split(fn, 40)
        except KeyError as e:
            assert failed and e.args == ('worker',)
            raised += 1
        else:
            assert not failed  # the worker started after the caller had finished
        assert sorted(i for _, _, i, _ in log) == list(range(40))
    assert raised  # the worker started within the caller's 20 ms at least once


@pytest.mark.parametrize('shape', ['narrower', 'empty', 'flat', 'flat_samples',
                                   'channels_last'])
def test_route_refuses_a_batch_of_samples_of_another_shape(compiled, shape):
    """``route``/``main_route`` do not validate (``predict`` does, once per
    input), but a batch whose samples are not the network's size would make
    the native code read past them, and one of the same size in another
    shape (flat, channels last) would be read as something else: both get
    ``validate_inputs``' error."""
    net, engine, _ = compiled
    c, h, w = net.input_shape
    x = {'narrower': numpy.zeros((1, c, h, w - 1), numpy.float32),
         'empty': numpy.zeros((0, c, h, w), numpy.float32),
         'flat': numpy.zeros(c * h * w, numpy.float32),
         'flat_samples': numpy.zeros((2, c * h * w), numpy.float32),
         'channels_last': numpy.zeros((1, h, w, c), numpy.float32)}[shape]
    message = {'narrower': 'per-sample shape', 'empty': 'empty', 'flat': 'dimensions',
               'flat_samples': 'dimensions', 'channels_last': 'per-sample shape'}[shape]
    with pytest.raises(InvalidValue, match=message):
        engine.route(x, [0.5] * (net.numexits() - 1))
    with pytest.raises(InvalidValue, match=message):
        engine.main_route(x)


def test_every_exit_reached_and_extremes(compiled):
    net, engine, x = compiled
    last = net.numexits() - 1
    # threshold 0: nobody leaves early (strict <); infinity: all leave at exit 0
    _, exits = engine.predict(x, [0.0] * last)
    assert (exits == last).all()
    labels, exits = engine.predict(x, [math.inf] * last)
    assert (exits == 0).all()
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        first = net.get_logits(x)[0]
    numpy.testing.assert_array_equal(labels, first.argmax(axis=1))


@pytest.mark.parametrize('measure', ['maxprob', 'margin'])
def test_other_measures_decided_natively_as_predict(measure):
    net = _trained(lenet_mnist, (1, 28, 28), steps=2)
    net.confidence = measure
    engine = numbapath.NumbaBranchyNet(net, threads=2)
    x = numpy.random.RandomState(3).rand(40, 1, 28, 28).astype(numpy.float32)
    scores = confidence.get_measure(measure).scores(net.get_logits(x)[0])
    for t in numpy.quantile(1.0 - scores, [0.2, 0.5, 0.8]):
        for bs in (1, None):
            numpy.testing.assert_array_equal(engine.predict(x, [float(t)], batchsize=bs)[1],
                                             net.predict(x, [float(t)], batchsize=bs)[1])


def test_measure_of_ones_own_decided_through_the_fast_path_as_predict(monkeypatch):
    """A measure registered in ``confidence.MEASURES`` that is not one of
    ``MEASURE_CODES`` routes through the fast path's steps, in test mode
    whatever the caller's mode."""
    net = _trained(lenet_mnist, (1, 28, 28), steps=2)
    e = confidence.MEASURES['entropy']
    monkeypatch.setitem(confidence.MEASURES, 'my_entropy', confidence.Measure(
        'my_entropy', 'entropy < T', None, e.scores, e.row_score, e.limit, e.stay_all,
        e.leave_all))
    net.confidence = 'my_entropy'
    engine = numbapath.NumbaBranchyNet(net, threads=2)
    assert engine._decision([0.5])[0] is None
    modes, fast_route = [], engine._fast.route

    def recording(*args):
        modes.append((chainer.config.train, chainer.config.enable_backprop))
        return fast_route(*args)
    monkeypatch.setattr(engine._fast, 'route', recording)
    x = numpy.random.RandomState(4).rand(40, 1, 28, 28).astype(numpy.float32)
    ents = entropy(net.get_SM(x)[0])
    for t in numpy.quantile(ents, [0.2, 0.5, 0.8]):
        for bs in (1, None):
            with chainer.using_config('train', True):
                got = engine.predict(x, [float(t)], batchsize=bs)
            for a, b in zip(got, net.predict(x, [float(t)], batchsize=bs)):
                numpy.testing.assert_array_equal(a, b)
    assert modes and set(modes) == {(False, False)}


def test_measure_replaced_under_a_native_name_decided_as_predict(monkeypatch):
    """The native decision follows the measure object, not its name: a
    measure of one's own registered as 'entropy' (here: maxprob's rule) is
    decided as ``predict`` decides it, also for thresholds already decided
    with the real entropy. Before: the native entropy code ran with the new
    measure's limits (and for the same thresholds, the old limits)."""
    net = _trained(lenet_mnist, (1, 28, 28), steps=2)
    engine = numbapath.NumbaBranchyNet(net, threads=2)
    x = numpy.random.RandomState(5).rand(40, 1, 28, 28).astype(numpy.float32)
    m = confidence.MEASURES['maxprob']
    scores = m.scores(net.get_logits(x)[0])
    ts = [float(t) for t in numpy.quantile(1.0 - scores, [0.2, 0.5, 0.8])]
    for t in ts:  # decided (and kept) for the real entropy first
        engine.predict(x, [t])
    monkeypatch.setitem(confidence.MEASURES, 'entropy', confidence.Measure(
        'entropy', 'maxprob under another name', m.upper, m.scores, m.row_score, m.limit,
        m.stay_all, m.leave_all))
    for t in reversed(ts):
        for a, b in zip(engine.predict(x, [t]), net.predict(x, [t])):
            numpy.testing.assert_array_equal(a, b)


def test_resnet110_generates_the_code_tested_on_the_shallower_resnet():
    """B-ResNet-110's generated code (generated only: compiling and running it
    in Chainer beside it would take minutes here) has the very layer functions
    of the 4-block network compared to ``predict`` above and the same driver
    up to loop counts and offsets: one loop over a stage's identical blocks,
    a call for each of its 114 convolutions (109 on the main path)."""
    net = resnet_cifar10.get_network()
    full = numbapath.Program(net, load=False)
    tested = numbapath.Program(_resnet(RESNET_BLOCKS), load=False)
    assert set(full.functions.values()) == set(tested.functions.values())

    def driver(program):  # the run function with every number blanked
        return re.sub(r'\d+', 'N', program.source[program.source.index('def run('):])
    assert driver(full) == driver(tested)
    assert full.source.count('for k in range(17):') == 2  # stages 1 and 2 (3: 16 + its last)
    convs = sum(isinstance(link, L.Convolution2D) for link in net.links())
    assert sum(op.kind == 'conv' for op in full.ops) == convs == 109 + 3 + 2


def test_native_score_equals_confidence_measures():
    engine_module = numbapath.Program(_trained(lenet_mnist, (1, 28, 28), steps=0)).module
    z = numpy.random.RandomState(4).randn(50, 10).astype(numpy.float32) * 4
    for name, code in numba_layout.MEASURE_CODES.items():
        expected = confidence.MEASURES[name].scores(z)
        got = [engine_module.score(row, code) for row in z]
        numpy.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_same_shape_reuses_the_generated_module():
    a = numbapath.Program(lenet_mnist.get_network())
    b = numbapath.Program(lenet_mnist.get_network())  # other weights, same code
    assert a.module is b.module
    assert not numpy.array_equal(a.weights, b.weights)


def _net_with(layer):
    return BranchyNet([L.Convolution2D(1, 4, 3, pad=1), Branch([L.Linear(4 * 8 * 8, 3)]),
                       layer, Branch([L.Linear(4 * 8 * 8, 3)])], input_shape=(1, 8, 8))


def test_unknown_layer_refused_by_name_and_compile_engine_falls_back():
    net = _net_with(FL(F.tanh))
    with pytest.raises(numbapath.NotCompilable, match='cannot compile the function'):
        numbapath.NumbaBranchyNet(net)
    messages = []
    engine = numbapath.compile_engine(net, warn=messages.append)
    assert isinstance(engine, FastBranchyNet)
    assert 'numba path unavailable' in messages[0]
    x = numpy.random.RandomState(5).rand(6, 1, 8, 8).astype(numpy.float32)
    numpy.testing.assert_array_equal(engine.predict(x, 0.5)[1], net.predict(x, 0.5)[1])


def test_grouped_convolution_refused():
    net = _net_with(L.Convolution2D(4, 4, 3, pad=1, groups=2))
    with pytest.raises(numbapath.NotCompilable, match='groups=2'):
        numbapath.Program(net)


def test_compile_engine_prefers_numba():
    net = _trained(lenet_mnist, (1, 28, 28), steps=0)
    assert isinstance(numbapath.compile_engine(net, warn=None), numbapath.NumbaBranchyNet)


def test_without_numba_the_error_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, 'numba', None)  # import numba now fails
    with pytest.raises(ImportError, match='requirements/numba.txt'):
        numbapath.require_numba()
    messages = []
    engine = numbapath.compile_engine(lenet_mnist.get_network(), warn=messages.append)
    assert isinstance(engine, FastBranchyNet) and 'numba' in messages[0]


@pytest.mark.parametrize('threads', [0, -1, 1.5, True, '2'])
def test_bad_thread_count(threads):
    with pytest.raises(ValueError, match='threads must be a positive integer'):
        numbapath.NumbaBranchyNet(lenet_mnist.get_network(), threads=threads)


def test_test_mode_layer_of_a_switch_layer_is_compiled():
    net = _net_with(SL(F.dropout, F.relu))  # relu at test time
    engine = numbapath.NumbaBranchyNet(net, threads=2)
    assert any(op.kind == 'copy' and op.params['relu'] for op in engine.program.ops)
    x = numpy.random.RandomState(7).randn(12, 1, 8, 8).astype(numpy.float32)
    t = float(numpy.median(entropy(net.get_SM(x)[0])))
    for got, expected in zip(engine.predict(x, t), net.predict(x, t)):
        numpy.testing.assert_array_equal(got, expected)


def _tiny_net():
    numpy.random.seed(8)
    return BranchyNet([L.Convolution2D(1, 2, 3, pad=1), Branch([L.Linear(2 * 4 * 4, 3)]),
                       FL(F.relu), Branch([L.Linear(2 * 4 * 4, 3)])], input_shape=(1, 4, 4))


def _reload(net):
    """A new engine for ``net`` as a new process would build it: the generated
    module imported again, its machine code read from the cache folder. The
    loop kernel is forced, so the module name does not hang on a measurement."""
    sys.modules.pop(numbapath.Program(net, load=False, kernels='loop').module_name, None)
    return numbapath.NumbaBranchyNet(net, threads=1, kernels='loop')


def test_damaged_cache_is_compiled_again_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setenv('BRANCHYNET_NUMBA_CACHE', str(tmp_path))
    net = _tiny_net()
    x = numpy.random.RandomState(9).randn(10, 1, 4, 4).astype(numpy.float32)
    expected = net.predict(x, 0.5)
    name = numbapath.Program(net, load=False, kernels='loop').module_name
    try:
        _reload(net)
        cached = glob.glob(str(tmp_path / '__pycache__' / (name + '.*.nb[ic]')))
        assert any(f.endswith('.nbi') for f in cached) and any(f.endswith('.nbc') for f in cached)
        for f in cached:  # cut short, as by a full disk or a killed writer
            with open(f, 'r+b') as fh:
                fh.truncate(os.path.getsize(f) // 2)
        with pytest.warns(RuntimeWarning, match='could not be read.*compiled again'):
            engine = _reload(net)
        for got, want in zip(engine.predict(x, 0.5), expected):
            numpy.testing.assert_array_equal(got, want)

        source = tmp_path / (name + '.py')
        source.write_text(source.read_text()[:100])  # a generated module cut short
        with pytest.warns(RuntimeWarning, match='did not hold the generated source'):
            engine = _reload(net)
        for got, want in zip(engine.predict(x, 0.5), expected):
            numpy.testing.assert_array_equal(got, want)

        with warnings.catch_warnings():  # the rewritten cache now loads as it is
            warnings.simplefilter('error')
            engine = _reload(net)
        assert not glob.glob(str(tmp_path / '*.part')) and \
            not glob.glob(str(tmp_path / '__pycache__' / '*.tmp.*'))
    finally:
        sys.modules.pop(name, None)


def test_convolutions_reading_rows_longer_than_their_padding_read_a_narrowed_copy():
    """A padded convolution reading a value another convolution pads wider,
    and an unpadded one reading a wide convolution output (junk columns),
    read a copy with their own margin (``Program._narrow``): the answers
    stay those of ``predict``, call after call (the copy's margin stays zero)."""
    numpy.random.seed(4)
    net = BranchyNet([L.Convolution2D(1, 4, 3, pad=1), FL(F.relu), FL(F.max_pooling_2d, 2, 2),
                      Branch([L.Convolution2D(4, 6, 3, pad=1), FL(F.relu),
                              L.Convolution2D(6, 6, 3), FL(F.relu), L.Linear(6 * 4 * 4, 5)]),
                      L.Convolution2D(4, 8, 5, pad=3), FL(F.relu), FL(F.max_pooling_2d, 2, 2),
                      Branch([L.Linear(8 * 4 * 4, 5)])], input_shape=(1, 12, 12))
    engine = numbapath.NumbaBranchyNet(net, threads=2, kernels='loop')
    narrowed = [op for op in engine.program.ops if op.params.get('narrow')]
    assert [(op.inputs[0].c, op.output.c) for op in narrowed] == [(4, 6), (6, 6)]
    x = numpy.random.RandomState(5).randn(40, 1, 12, 12).astype(numpy.float32)
    assert_engine_matches_predict(engine, net, x)
    assert_engine_matches_predict(engine, net, x[::-1].copy(), seed=3)


def test_fast_path_chunks_big_batches_with_the_same_answers():
    net = _trained(lenet_mnist, (1, 28, 28), steps=2)
    fast = FastBranchyNet(net)
    assert fast.chunk >= 1
    fast.chunk = 7  # several chunks and a ragged last one
    x = numpy.random.RandomState(6).rand(30, 1, 28, 28).astype(numpy.float32)
    t = float(numpy.median(entropy(net.get_SM(x)[0])))
    for got, expected in zip(fast.predict(x, t), net.predict(x, t)):
        numpy.testing.assert_array_equal(got, expected)
    numpy.testing.assert_array_equal(fast.predict_main(x), net.predict_main(x))


@pytest.mark.parametrize('pad,side', [(1, 4), (0, 2)])
def test_linear_head_and_padded_convolution_reading_one_pooled_value(pad, side):
    """Issue 21's minimal network: the exit head's Linear and the next trunk
    convolution (with padding) read the same pooled value. Before the layout
    contract, the convolution gave that value a zero margin after the Linear
    had been generated to read it packed: 11 of 64 labels differed (pad=1)."""
    numpy.random.seed(3)
    net = BranchyNet([L.Convolution2D(1, 4, 3, pad=1), FL(F.relu), FL(F.max_pooling_2d, 2, 2),
                      Branch([L.Linear(4 * 4 * 4, 10)]),
                      L.Convolution2D(4, 4, 3, pad=pad), FL(F.relu),
                      Branch([L.Linear(4 * side * side, 10)])], input_shape=(1, 8, 8))
    x = numpy.random.RandomState(0).randn(64, 1, 8, 8).astype(numpy.float32) * 5
    for ts in ([float('inf')], [0.0]):  # every sample at exit 1, then at exit 2
        labels, exits = numbapath.NumbaBranchyNet(net).predict(x, thresholds=ts)
        ref_labels, ref_exits = net.predict(x, thresholds=ts)
        numpy.testing.assert_array_equal(exits, ref_exits)
        numpy.testing.assert_array_equal(labels, ref_labels)


# ------------------------------------------------------------ kernel choice
def _strided_net():
    """A strided and a wide (stride-1, padded) convolution and two Linear heads."""
    numpy.random.seed(4)
    return BranchyNet([L.Convolution2D(2, 3, 3, stride=2, pad=1), FL(F.relu),
                       Branch([L.Linear(3 * 5 * 5, 4)]),
                       L.Convolution2D(3, 4, 3, pad=1), FL(F.relu),
                       Branch([L.Linear(4 * 5 * 5, 4)])], input_shape=(2, 9, 9))


def _kernels(engine):
    return {op.params['kernel'] for op in engine.program.ops if op.kind in ('conv', 'linear')}


@pytest.mark.parametrize('kernels', ['fast', None, 1])
def test_unknown_kernel_setting_refused(kernels):
    with pytest.raises(InvalidValue, match="kernels must be one of 'auto', 'loop', "
                                                     "'gemm', 'tile', got"):
        numbapath.NumbaBranchyNet(_tiny_net(), kernels=kernels)


def _timer(**times):
    """A stand-in for ``time_kernels`` giving ``times`` (µs) for the kernels asked."""
    def time_kernels(op, weights, kernels):
        return {k: times[k] for k in kernels}
    return time_kernels


def test_kernel_choice_follows_the_measured_times_and_is_cached(tmp_path, monkeypatch):
    """'auto' takes the kernel measured fastest for each layer shape, keeps the
    times in the cache folder (the next compile measures nothing), and every
    choice gives predict's answers; the tile kernel is a choice for
    convolutions only."""
    monkeypatch.setenv('BRANCHYNET_NUMBA_CACHE', str(tmp_path))
    net = _strided_net()
    x = numpy.random.RandomState(5).randn(20, 2, 9, 9).astype(numpy.float32)
    expected = net.predict(x, 0.5)
    measured = []

    def gemm_faster(op, weights, kernels):
        measured.append((op.kind, tuple(kernels)))
        return _timer(loop=2.0, gemm=1.0, tile=3.0)(op, weights, kernels)

    monkeypatch.setattr(numba_program, 'time_kernels', gemm_faster)
    engine = numbapath.NumbaBranchyNet(net, threads=2)
    assert _kernels(engine) == {'gemm'} and engine.program.uses_gemm
    assert sorted(measured) == [('conv', ('loop', 'gemm', 'tile'))] * 2 + \
        [('linear', ('loop', 'gemm'))] * 2  # each shape once
    for got, want in zip(engine.predict(x, 0.5), expected):
        numpy.testing.assert_array_equal(got, want)
    assert os.path.exists(str(tmp_path / 'kernel_choices.json'))

    monkeypatch.setattr(numba_program, 'time_kernels', lambda *a: pytest.fail('measured again'))
    assert _kernels(numbapath.NumbaBranchyNet(net, threads=2)) == {'gemm'}

    for sub, times, chosen in (('loop', dict(loop=1.0, gemm=3.0, tile=2.0), {'loop'}),
                               ('tile', dict(loop=2.0, gemm=3.0, tile=1.0), {'tile', 'loop'})):
        monkeypatch.setenv('BRANCHYNET_NUMBA_CACHE', str(tmp_path / sub))
        monkeypatch.setattr(numba_program, 'time_kernels', _timer(**times))
        engine = numbapath.NumbaBranchyNet(net, threads=2)
        assert _kernels(engine) == chosen and not engine.program.uses_gemm
        assert {op.params['kernel'] for op in engine.program.ops if op.kind == 'linear'} \
            == {'loop'}
        for got, want in zip(engine.predict(x, 0.5), expected):
            numpy.testing.assert_array_equal(got, want)


def test_forced_tile_kernel_tiles_convolutions_and_loops_linear_layers():
    engine = numbapath.NumbaBranchyNet(_strided_net(), threads=1, kernels='tile')
    kinds = {(op.kind, op.params['kernel']) for op in engine.program.ops
             if op.kind in ('conv', 'linear')}
    assert kinds == {('conv', 'tile'), ('linear', 'loop')}
    assert 'def ' in engine.program.source and 'sums[' in engine.program.source


def test_explain_names_every_layer_its_kernel_and_times(tmp_path, monkeypatch):
    monkeypatch.setenv('BRANCHYNET_NUMBA_CACHE', str(tmp_path))
    engine = numbapath.NumbaBranchyNet(_strided_net(), threads=1)
    rows = engine.program.explain()
    assert [r['kind'] for r in rows] == [op.kind for op in engine.program.ops]
    for r in rows:
        if r['kind'] in ('conv', 'linear'):  # every kernel measured, the fastest chosen
            assert set(r['us']) == {'loop', 'gemm'} | ({'tile'} if r['kind'] == 'conv' else set())
            assert all(t > 0 for t in r['us'].values())
            assert r['kernel'] == min(r['us'], key=r['us'].get)
    assert rows[0]['input'] == '2x9x9' and rows[0]['output'] == '3x5x5'
    text = engine.explain(measure=True)  # every layer timed now, summed by kind
    lines = text.splitlines()
    assert len(lines) == len(rows) + 2 and 'kernel' in lines[0]
    assert re.search(r'conv \d+.*copy \d+.*linear \d+', lines[-1])


def test_processor_named_with_its_vector_extensions():
    model, vector = numbapath.processor()
    assert model and model != 'unknown'
    if os.path.exists('/proc/cpuinfo') and 'avx' in open('/proc/cpuinfo').read():
        assert any(v.startswith('avx') for v in vector)
