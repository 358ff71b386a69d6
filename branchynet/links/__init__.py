"""Building blocks of a BranchyNet link tree."""
from branchynet.links.links import Branch, FL, Net, SL  # noqa: F401
