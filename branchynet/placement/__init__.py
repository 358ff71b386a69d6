"""Exits where they pay: exits added to a trained network (its trunk frozen)
and automatic exit placement (docs/placement.md).

* ``attach_exits(network, points, x, y)``: heads trained on a frozen trunk's
  activations at chosen layer boundaries; an ordinary ``BranchyNet`` back.
* ``place_exits(network, x_train, y_train, x_val, y_val)``: candidates,
  probe heads, per-segment timing on an engine, and the exit set and
  thresholds with the least expected time at a target accuracy.
"""
from branchynet.placement.attach import attach_exits  # noqa: F401
from branchynet.placement.trunk import Trunk  # noqa: F401
from branchynet.placement.place import place_exits  # noqa: F401
from branchynet.placement.search import SDN_FRACTIONS, fixed_fraction_points  # noqa: F401
