"""Branchy versions of LeNet, AlexNet and ResNet-110, each with get_network()."""
import importlib

from branchynet.validation import InvalidValue

NETWORKS = ('lenet_mnist', 'alex_cifar10', 'resnet_cifar10')


def load(name):
    """Import ``<this package>.<name>`` (``networks`` in a checkout,
    ``branchynet.networks`` installed); unknown names get a clear error."""
    if name not in NETWORKS:
        raise InvalidValue('unknown network {!r}; expected one of: {} (or a function of '
                           'your own: PATH.py:FUNCTION or package.module:FUNCTION)'.format(
                               name, ', '.join(NETWORKS)))
    return importlib.import_module(__name__ + '.' + name)
