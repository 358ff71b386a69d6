"""Inference engines: one trained BranchyNet run by Chainer (``base``), by
numpy arrays (``fast``), by ONNX Runtime (``onnx_runtime``) or by numba
(``numba``), with the exit routing they share (``routing``) and the
deployable bundle (``deploy``, ``bundle_predict``)."""
