"""Dataset loaders. Every get_data() returns x_train, y_train, x_test, y_test."""
import os

_HERE = os.path.dirname(os.path.abspath(__file__))


def data_dir(*parts):
    """Cache folder for downloaded data: $BRANCHYNET_DATA_DIR or datasets/data."""
    root = os.environ.get('BRANCHYNET_DATA_DIR') or os.path.join(_HERE, 'data')
    return os.path.join(root, *parts)


class DataUnavailableError(RuntimeError):
    """No source could provide a dataset; the message lists what was tried and
    how to provide the files by hand."""
