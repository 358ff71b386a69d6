"""The numba path's value layout: where each activation lives in the scratch slab.

Float32 throughout, as Chainer computes. Activations are planar per sample,
(C, H, W), in one scratch slab; a value read by a convolution carries a zero
margin as wide as that convolution's padding, so no padding is ever copied.
A stride-1 convolution's output is wide (its rows run over the full padded
width of the input, the extra columns ignored) and its plane stride is a
multiple of ``VECTOR`` floats. ``Value`` holds one activation's geometry and
offset; ``NotCompilable`` names a layer or setting the path cannot compile.
"""


from branchynet.validation import InvalidValue


#: Measures decided natively (``confidence.MEASURES`` names).
MEASURE_CODES = {'entropy': 0, 'maxprob': 1, 'margin': 2}

#: Largest number of kernel taps times output channels summed in one loop
#: body of a convolution: each term's weight stays in a vector register, and
#: more spills them (B-LeNet's 5x5 convolutions: one output channel at a time
#: measured 25 % faster than two).
MAX_TERMS = 25

#: Output channel blocks tried, largest first.
OBS = (4, 2, 1)

#: Independent partial sums the taps of one output are split into (shorter
#: chains of dependent multiply-adds).
CHAINS = 4

#: A wide convolution output's plane stride is a multiple of this many floats
#: (one AVX-512 vector), so its loop has no scalar remainder.
VECTOR = 16


class NotCompilable(InvalidValue):
    """The network holds a layer (or a setting) this path cannot compile."""


def require_numba():
    """The numba module, or ImportError saying how to install it."""
    try:
        import numba
    except ImportError as e:
        raise ImportError('the numba inference path needs numba: pip install -r '
                          'requirements/numba.txt ({})'.format(e)) from None
    return numba


class Value:
    """One activation of one sample in the scratch slab.

    Element (c, y, x) lives at ``off + c * ps + (y + m) * ws + (x + m)``:
    ``m`` zero margin around every plane, row stride ``ws``, plane stride
    ``ps``. Wide values (stride-1 convolution outputs) have no margin and
    rows as long as their input's, junk past column ``w``.

    The layout contract between the op that writes a value and the ops that
    read it: code is generated only after every op is built, so a value's
    margin may still grow while ops are added (a later padded convolution
    reading it), and every writer and reader indexes it through ``at`` or
    its final ``margin``/``ws``/``ps``. Two kinds of op cannot follow a
    margin and ``pin`` the layout instead: a writer that writes packed rows
    (convolution, linear) and a reader that reads the value as one packed
    vector (linear, the exit decision). Once ``pinned``, the margin never
    changes: an op needing another layout reads a copy (``Builder.padded``,
    ``Builder.packed``).
    """

    def __init__(self, c, h, w, wide_of=None, pinned=False):
        self.c, self.h, self.w = c, h, w
        self.margin = 0
        self.wide_of = wide_of  # a wide value's rows are as long as this value's
        self.pinned = pinned  # layout final (see the class docstring)
        self.off = None
        self.consumers = 0

    @property
    def ws(self):
        return self.wide_of.ws if self.wide_of is not None else self.w + 2 * self.margin

    @property
    def ps(self):
        ps = (self.h + 2 * self.margin) * self.ws
        if self.wide_of is not None:  # whole vectors: no scalar remainder loop
            ps = -(-ps // VECTOR) * VECTOR
        return ps

    @property
    def size(self):
        # + one row and a little: a wide convolution reads that far past the last plane
        return self.c * self.ps + self.ws + 8 + VECTOR

    def at(self, c='c', y='y', x='x'):
        """Index expression of element (c, y, x) (names or ints)."""
        m = self.margin
        return '{} + ({}) * {} + (({}) + {}) * {} + ({}) + {}'.format(
            self.off, c, self.ps, y, m, self.ws, x, m)

    @property
    def compact(self):
        return self.margin == 0 and self.wide_of is None

    def shape(self):
        return self.c, self.h, self.w
