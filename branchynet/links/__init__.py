"""Building blocks of a BranchyNet link tree."""
from branchynet.links.links import Branch, FL, Net, SL, pair  # noqa: F401
