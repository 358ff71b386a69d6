"""The original's two array helpers for mean subtraction."""
import numpy


def compute_mean(train_data):
    """Mean over the samples (axis 0)."""
    return numpy.mean(train_data, 0)


def subtract_mean(train_data, mean):
    """``train_data - mean`` (a new array)."""
    return train_data - mean
