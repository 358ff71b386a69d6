"""BranchyNet on Chainer 7: early-exit networks, trained jointly, timed honestly."""
from branchynet import compat  # noqa: F401  (must run before chainer is imported)
from branchynet import bundled

bundled.alias_checkout()  # branchynet.datasets/.networks: the checkout's folders

from branchynet.measures.confidence import entropy  # noqa: E402,F401
from branchynet.links import FL, SL, Branch, Net  # noqa: E402,F401
from branchynet.net import BranchyNet  # noqa: E402,F401

__version__ = '0.1.0'
