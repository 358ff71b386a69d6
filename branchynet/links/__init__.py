"""Building blocks of a BranchyNet link tree."""
from branchynet.links.links import Branch, FL, Net, SL, is_function, pair  # noqa: F401
