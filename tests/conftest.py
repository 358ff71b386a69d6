import os
import sys

import numpy
import pytest

# The repository root first on sys.path: `tests.helpers`, `networks`, `datasets`.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.helpers import make_three_exit_net  # noqa: E402


@pytest.fixture
def three_exit_net():
    return make_three_exit_net()


@pytest.fixture
def small_batch():
    rng = numpy.random.RandomState(1)
    x = rng.randn(60, 1, 8, 8).astype(numpy.float32)
    t = rng.randint(0, 5, 60).astype(numpy.int32)
    return x, t


@pytest.fixture(scope='session')
def mnist_data():
    """Full MNIST; downloaded into datasets/data on first use (tests using it are
    marked ``network``)."""
    from datasets import mnist
    return mnist.get_data()


def pytest_configure(config):
    # The allocator setting the driver uses (branchynet.training.runtime): faster training steps.
    from branchynet.training import runtime
    runtime.tune_allocator()


def pytest_collection_modifyitems(config, items):
    # Every test that needs full MNIST may download it: marked `network`.
    # `fuzz` tests run only when the -m expression names them (./run_tests.sh -m fuzz).
    fuzz = 'fuzz' in (config.getoption('markexpr') or '')
    skip_fuzz = pytest.mark.skip(reason='long randomized run: select it with -m fuzz')
    for item in items:
        if not fuzz and 'fuzz' in item.keywords:
            item.add_marker(skip_fuzz)
        if 'mnist_data' in getattr(item, 'fixturenames', ()):
            item.add_marker(pytest.mark.network)
