"""Early-exit inference compiled to native code with numba (optional): the
engine (``engine``), the program it runs (``program``), made from a layout
(``layout``), ops (``builder``), generated source (``codegen``) and measured
kernel choices (``kernels``), cached on disk (``cache``)."""
from branchynet.engines.numba.cache import cache_dir, untrusted_cache  # noqa: F401
from branchynet.engines.numba.engine import NumbaBranchyNet, compile_engine  # noqa: F401
from branchynet.engines.numba.kernels import processor  # noqa: F401
from branchynet.engines.numba.layout import NotCompilable, require_numba  # noqa: F401
from branchynet.engines.numba.program import Program  # noqa: F401
