"""``python -m branchynet.experiment``: the experiment driver's command line.

The command line is ``branchynet.driver.cli``; one network's run is
``branchynet.driver.run``.
"""
import sys

from branchynet.driver.cli import build_parser, main  # noqa: F401

if __name__ == '__main__':
    sys.exit(main())
