"""What a newcomer's own network and data meet first: a head whose input
size is wrong named with the size that fits."""
import chainer.functions as F
import chainer.links as L
import numpy
import pytest

from branchynet import FL, Branch, BranchyNet
from branchynet.validation import InvalidValue


def _net(head_in=392, final_in=512):
    return BranchyNet([L.Convolution2D(1, 8, 3, pad=1), FL(F.relu), FL(F.max_pooling_2d, 2),
                       Branch([L.Linear(head_in, 10)]),
                       L.Convolution2D(8, 8, 3, pad=1), FL(F.relu),
                       Branch([L.Linear(final_in, 10)])], input_shape=(1, 16, 16))


def _batch(n=4):
    rng = numpy.random.RandomState(0)
    return rng.rand(n, 1, 16, 16).astype(numpy.float32), rng.randint(0, 10, n).astype(numpy.int32)


def test_a_wrong_head_input_size_names_the_exit_and_the_size_that_fits():
    net = _net()
    x, t = _batch()
    with pytest.raises(InvalidValue) as e:
        net.train(x, t)
    assert str(e.value) == (
        "exit 1's head, layer 1: L.Linear(392, 10) gets 512 input features per sample "
        '(8 x 8 x 8): write L.Linear(512, 10), or L.Linear(None, 10), which takes the size '
        'from its first input')
    with pytest.raises(InvalidValue, match="exit 1's head, layer 1: L.Linear"):
        net.predict(x, [0.1])


def test_the_final_head_and_the_trunk_are_named_too():
    x, t = _batch()
    with pytest.raises(InvalidValue, match=r"exit 2's head, layer 1: L\.Linear\(500, 10\) gets "
                                           r'512 input features'):
        _net(head_in=512, final_in=500).train_main(x, t)
    net = BranchyNet([L.Convolution2D(3, 4, 3), Branch([L.Linear(None, 2)])],
                     input_shape=(1, 8, 8))
    with pytest.raises(InvalidValue, match=r'the trunk \(Branch entries not counted\), layer 1: '
                                           r'L\.Convolution2D\(3, 4, \.\.\.\) gets 1 input '
                                           r'channels'):
        net.predict_main(numpy.zeros((2, 1, 8, 8), numpy.float32))
    ok = _net(head_in=None)
    ok.train(x, t)  # L.Linear(None, n) sizes itself


def _arrays(x_dtype=numpy.float32, n=6):
    rng = numpy.random.RandomState(0)
    x = rng.randint(0, 256, (n + 3, 1, 8, 8))
    x = x.astype(numpy.uint8) if x_dtype == numpy.uint8 else (x / 255.).astype(x_dtype)
    y = rng.randint(0, 10, n + 3).astype(numpy.int64)
    return x[:n], y[:n], x[n:], y[n:]


def test_npz_reads_both_key_spellings(tmp_path):
    from datasets import npz
    x_train, y_train, x_test, y_test = _arrays()
    numpy.savez(tmp_path / 'keras.npz', x_train=x_train, y_train=y_train, x_test=x_test,
                y_test=y_test)
    loaded = npz.load(str(tmp_path / 'keras.npz'), num_classes=10)
    for got, want in zip(loaded, (x_train, y_train, x_test, y_test)):
        numpy.testing.assert_array_equal(got, want)


def test_npz_without_the_keys_lists_the_keys_it_has(tmp_path):
    from datasets import npz
    x_train, y_train, x_test, _ = _arrays()
    numpy.savez(tmp_path / 'd.npz', x_train=x_train, y_train=y_train, x_test=x_test,
                labels=y_train)
    with pytest.raises(InvalidValue) as e:
        npz.load(str(tmp_path / 'd.npz'))
    assert str(e.value) == (
        '{} lacks key(s) y_test: expected train_x, train_y, test_x, test_y (or x_train, '
        'y_train, x_test, y_test); the file has: labels, x_test, x_train, y_train'.format(
            tmp_path / 'd.npz'))


def test_npz_scales_uint8_images_to_the_unit_range_and_says_so(tmp_path):
    from datasets import npz
    x_train, y_train, x_test, y_test = _arrays(numpy.uint8)
    numpy.savez(tmp_path / 'u8.npz', train_x=x_train, train_y=y_train, test_x=x_test,
                test_y=y_test)
    notes = []
    got = npz.load(str(tmp_path / 'u8.npz'), note=notes.append)
    assert got[0].dtype == got[2].dtype == numpy.float32
    numpy.testing.assert_allclose(got[0], x_train / 255., rtol=1e-6)
    numpy.testing.assert_allclose(got[2], x_test / 255., rtol=1e-6)
    assert notes == ['{}: train_x and test_x held uint8 images; scaled to float32 in [0, 1] '
                     '(divided by 255)'.format(tmp_path / 'u8.npz')]
