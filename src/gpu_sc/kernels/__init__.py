"""Array-generic numerical kernels: each takes an :class:`~gpu_sc.dispatch.ArrayModule` (or
infers it from its arrays) and runs unchanged on NumPy/SciPy and on CuPy/cupyx."""
