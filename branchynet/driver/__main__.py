"""``python -m branchynet.driver``: the same command line as ``python -m branchynet.experiment``."""
import sys

from branchynet.driver.cli import main

if __name__ == '__main__':
    sys.exit(main())
