"""Training: the joint loop (``loop``), snapshots (``checkpoint``), CPU
kernels (``cpukernels``), allocator settings (``runtime``) and data-parallel
training over MPI (``distributed``)."""
