"""Plain-PyTorch twins of the Triton kernels (same signatures): the CPU path and the tests' reference."""
