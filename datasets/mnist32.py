"""MNIST as a CIFAR-shaped stand-in: 3x32x32, for running the CIFAR networks
end to end where CIFAR-10 itself cannot be had.

Each 28x28 digit is zero-padded by 2 pixels on every side and repeated over
three channels; values stay in [0, 1]. Not a substitute for CIFAR-10's
difficulty: it exercises the networks, training and timing on real images.
"""
import numpy

from . import mnist


def to_cifar_shape(x):
    padded = numpy.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    return numpy.ascontiguousarray(numpy.repeat(padded, 3, axis=1))


def get_data():
    x_train, y_train, x_test, y_test = mnist.get_data()
    return to_cifar_shape(x_train), y_train, to_cifar_shape(x_test), y_test
