"""Training: the joint loop (``loop``), snapshots (``checkpoint``), allocator
settings (``runtime``) and data-parallel training over MPI (``distributed``)."""
