"""Triton kernels for attention on the GPU; ``ops_triton`` exposes the same four functions as ``ops_torch``."""
