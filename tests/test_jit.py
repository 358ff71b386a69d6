"""numba settings shared by the training kernels and the inference engine."""
import pytest

import branchynet  # noqa: F401
from branchynet import jit


def test_a_wrong_vector_width_setting_is_named(monkeypatch):
    monkeypatch.setenv('BRANCHYNET_VECTOR_BITS', '384')
    with pytest.raises(ValueError,
                       match='BRANCHYNET_VECTOR_BITS is .384.; expected 128, 256 or 512'):
        jit.vector_bits()


def test_wider_vectors_compile_functions_with_debug_info():
    import numba

    def add(a):
        return a + 1.0
    with jit.prefer_vector_bits(512):  # the attribute goes before !dbg
        fn = numba.njit(debug=True)(add)
        assert fn(1.0) == 2.0
