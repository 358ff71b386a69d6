"""Choosing the device: CPU (numpy) or a CUDA GPU through CuPy."""
import sys

import chainer
import numpy

from branchynet.validation import InvalidValue

DEVICE_CHOICES = ('cpu', 'gpu', 'auto')


def gpu_usable():
    """True only if CuPy imports *and* a CUDA device answers.

    ``chainer.backends.cuda.available`` can be True on a machine with CuPy
    installed but no usable GPU, so the device itself is probed.
    """
    if not chainer.backends.cuda.available:
        return False
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def resolve_device(name):
    """Map ``cpu``/``gpu``/``auto`` (or a Chainer device spec) to a chainer Device.

    ``gpu`` raises a clear error where no GPU is usable; ``auto`` falls back
    to the CPU with a notice.
    """
    if name == 'cpu':
        return chainer.get_device('@numpy')
    if name in ('gpu', 'auto'):
        if gpu_usable():
            return chainer.get_device('@cupy:0')
        if name == 'gpu':
            raise InvalidValue('--device gpu: no CUDA GPU is usable through CuPy here '
                             '(install cupy matching your CUDA, or use --device cpu/auto)')
        print('notice: no usable GPU; --device auto runs on the CPU', file=sys.stderr)
        return chainer.get_device('@numpy')
    if isinstance(name, str) and name.startswith('@'):
        if name.startswith('@cupy') and not gpu_usable():
            raise InvalidValue('device {}: no CUDA GPU is usable through CuPy here'.format(name))
        return chainer.get_device(name)
    raise InvalidValue('unknown device {!r}; expected one of {} or a Chainer device '
                     'spec such as @cupy:0'.format(name, ', '.join(DEVICE_CHOICES)))


def device_label(device):
    """'CPU' or 'GPU', as Table I labels its blocks."""
    return 'CPU' if device.xp is numpy else 'GPU'
