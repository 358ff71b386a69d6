"""numba settings shared by the CPU training kernels (``links``) and the
inference engine (``engines.numba``): the widest float32 vectors the
processor runs, LLVM asked for them per function, numba's SLP vectoriser,
and the folder of generated modules and numba's cache."""
import contextlib
import functools
import os
import re
import threading

# held with numba's compiler lock while a process-wide compile setting is changed
_slp_lock = threading.RLock()


def vector_bits():
    """Width in bits of the widest float32 vectors the host runs (512 with
    AVX-512F, else 256 with AVX, else 128), unless ``$NUMBA_CPU_FEATURES``
    names the features numba compiles for; ``$BRANCHYNET_VECTOR_BITS``
    (128, 256 or 512) overrides both."""
    forced = os.environ.get('BRANCHYNET_VECTOR_BITS')
    if forced:
        if forced not in ('128', '256', '512'):
            raise ValueError('BRANCHYNET_VECTOR_BITS is {!r}; expected 128, 256 or 512'.format(
                forced))
        return int(forced)
    return _target_vector_bits()


@functools.lru_cache(maxsize=None)
def _target_vector_bits():
    """``vector_bits`` from the processor numba compiles for, asked once per
    process (the query takes about 0.3 ms, and ``kernel`` runs per layer call)."""
    from numba.core import config
    features = config.CPU_FEATURES
    if not features:
        import llvmlite.binding as ll
        features = ll.get_host_cpu_features().flatten()
    flags = set(features.split(','))
    return 512 if '+avx512f' in flags else 256 if '+avx' in flags else 128


@contextlib.contextmanager
def prefer_vector_bits(bits):
    """Functions compiled in the body ask LLVM for vectors of ``bits`` bits
    (the function attribute ``prefer-vector-width``). LLVM's tuning for Intel
    processors with AVX-512 prefers 256-bit vectors; a kernel whose sums fill
    32 registers of 512 bits runs about twice as fast with them (see
    docs/training.md). numba has no per-function setting for it: the attribute
    is added to the LLVM IR of each function defined while the body runs.
    numba's compiler lock is held throughout, so no other thread's compile
    sees the replaced method."""
    import numba.core.codegen as codegen
    from numba.core.compiler_lock import global_compiler_lock
    with global_compiler_lock, _slp_lock:
        original = codegen.CPUCodeLibrary.add_ir_module
        attribute = ' "prefer-vector-width"="{}"'.format(int(bits))

        def mark(match):
            # function attributes go before a section and metadata (!dbg)
            line = match.group(0)
            cut = min([i for i in (line.find(' section "'), line.find(' !')) if i >= 0],
                      default=len(line))
            return line[:cut] + attribute + line[cut:]

        def add_ir_module(library, ir_module):  # numba's own, plus the attribute
            import llvmlite.binding as ll
            from numba.core import cgutils
            library._raise_if_finalized()
            text = cgutils.normalize_ir_text(str(ir_module))
            text = re.sub(r'^define .*$', mark, text, flags=re.M)
            module = ll.parse_assembly(text)
            module.name = ir_module.name
            module.verify()
            library.add_llvm_module(module)
        codegen.CPUCodeLibrary.add_ir_module = add_ir_module
        try:
            yield
        finally:
            codegen.CPUCodeLibrary.add_ir_module = original


@contextlib.contextmanager
def slp_vectorize():
    """numba's SLP vectoriser on while the body compiles (numba reads the
    setting each time it builds LLVM's passes; off by default)."""
    from numba.core import config
    from numba.core.compiler_lock import global_compiler_lock
    # a process-wide setting: no other compile runs while it is changed
    with global_compiler_lock, _slp_lock:
        saved = config.SLP_VECTORIZE
        config.SLP_VECTORIZE = 1
        try:
            yield
        finally:
            config.SLP_VECTORIZE = saved



def cache_root():
    """Where generated numba modules and numba's cache of them live (the
    inference engine's ``engines.numba.cache.cache_dir`` is the same folder):
    ``$BRANCHYNET_NUMBA_CACHE``, else ``~/.cache/branchynet/numba``."""
    return os.environ.get('BRANCHYNET_NUMBA_CACHE') or os.path.join(
        os.path.expanduser('~'), '.cache', 'branchynet', 'numba')


def private_folder(path):
    """``path`` made (mode 0700) if missing; OSError unless it is a real folder
    owned by this user that nobody else can write (the code in it is run)."""
    import stat
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or \
            st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise OSError('{} is not a private folder of this user'.format(path))
