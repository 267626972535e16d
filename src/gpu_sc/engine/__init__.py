"""Engine implementations of steps, registered with :func:`gpu_sc.dispatch.register`.

Each module adapts AnnData to the array-generic kernels of :mod:`gpu_sc.kernels` for the
``numpy`` and ``cupy`` backends. Importing this package registers them all.
"""

from . import clustering, embedding, markers, neighbors, preprocessing  # noqa: F401
