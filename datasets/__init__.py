"""Dataset loaders. Every get_data() returns x_train, y_train, x_test, y_test.

Installed (``pip install .``) this package is ``branchynet.datasets``; in a
checkout it is also the top-level ``datasets`` of the original's scripts."""
import os

_HERE = os.path.dirname(os.path.abspath(__file__))


def default_data_root():
    """``datasets/data`` in a checkout (this folder beside ``pyproject.toml``);
    installed, ``$XDG_CACHE_HOME/branchynet/data`` (``~/.cache/branchynet/data``),
    never a folder inside site-packages."""
    if os.path.isfile(os.path.join(os.path.dirname(_HERE), 'pyproject.toml')):
        return os.path.join(_HERE, 'data')
    cache = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(cache, 'branchynet', 'data')


def data_dir(*parts):
    """Cache folder for downloaded data: ``$BRANCHYNET_DATA_DIR``, else
    ``default_data_root()``."""
    root = os.environ.get('BRANCHYNET_DATA_DIR') or default_data_root()
    return os.path.join(root, *parts)


class DataUnavailableError(RuntimeError):
    """No source could provide a dataset; the message lists what was tried and
    how to provide the files by hand."""
