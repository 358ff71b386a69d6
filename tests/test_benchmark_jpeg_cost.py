"""benchmarks/jpeg_cost.py: images compressed again, and what the exits make of them."""
import numpy
import pytest

from tests.helpers import benchmark_module, make_three_exit_net


@pytest.fixture(scope='module')
def jpeg_cost():
    with benchmark_module('jpeg_cost') as module:
        yield module


def _images(n=6, seed=0):
    """Smooth 3x32x32 uint8 images with some texture (JPEG keeps such images well)."""
    rng = numpy.random.RandomState(seed)
    ramp = numpy.linspace(0, 1, 32)
    base = 255 * numpy.outer(ramp, ramp)[None, None]
    noise = rng.randint(0, 40, size=(n, 3, 32, 32))
    return numpy.clip(base * 0.8 + noise, 0, 255).astype(numpy.uint8)


def test_recompression_keeps_the_shape_and_loses_more_at_lower_quality(jpeg_cost):
    x = _images()
    high, low = jpeg_cost.recompress(x, 95), jpeg_cost.recompress(x, 20)
    assert high.shape == low.shape == x.shape and high.dtype == numpy.uint8
    assert jpeg_cost.psnr(x, x) == float('inf')
    assert jpeg_cost.psnr(x, high) > jpeg_cost.psnr(x, low) > 15


def test_evaluate_gives_every_exit_and_the_routed_accuracy(jpeg_cost):
    from branchynet.engines.fast import FastBranchyNet
    net = make_three_exit_net()
    net.testing()
    x = numpy.random.RandomState(1).rand(40, 1, 8, 8).astype(numpy.float32)
    labels = net.predict(x, [0., 0.])[0]  # what the last exit says
    engine = FastBranchyNet(net)
    accs, routed, shares = jpeg_cost.evaluate(engine, x, labels, [0., 0.])
    assert len(accs) == 3 and accs[-1] == 100. and routed == 100.
    assert shares == '0.0 / 0.0 / 100.0'
    got, exits = net.predict(x, [10., 10.])  # everyone leaves at exit 1
    accs, routed, shares = jpeg_cost.evaluate(engine, x, labels, [10., 10.])
    assert routed == pytest.approx(100. * (got == labels).mean()) == pytest.approx(accs[0])
    assert shares == '100.0 / 0.0 / 0.0'
    assert numpy.isnan(jpeg_cost.evaluate(engine, x, labels, None)[1])


def test_a_run_on_the_official_files_is_refused_in_one_line(jpeg_cost):
    with pytest.raises(SystemExit, match='trained on the official files'):
        jpeg_cost.copy_pixels({'data': {}}, 'unused.tar.gz')


def test_the_yardstick_compresses_photo_thumbnails_once_then_again(jpeg_cost):
    photos = jpeg_cost.thumbnails()
    assert photos.shape == (14 * len(jpeg_cost.PHOTOS), 3, 32, 32) and photos.dtype == numpy.uint8
    lines = jpeg_cost.yardstick([90, 30])
    assert len(lines) == 3 and 'Q75 against the originals' in lines[0]
    psnrs = [float(line.split(': ')[-1].split()[0]) for line in lines]
    assert psnrs[1] > psnrs[2] > 15  # Q90 again loses less than Q30 again
