"""``python -m branchynet.report [--results _results]``: Table I across
networks from a results folder (``branchynet.reporting.report``)."""
import sys

from branchynet.reporting.report import main

if __name__ == '__main__':
    sys.exit(main())
