"""``cupy.cuda`` of the double: one device of configurable size, streams, pools, errors.

The device's memory is the bytes of live device arrays (each NumPy buffer charged once);
an allocation beyond ``total_bytes`` raises ``cupy.cuda.memory.OutOfMemoryError``, so
``memGetInfo``, the engine's chunked retry and the scanpy fallback run for real.
"""

from __future__ import annotations

import types

from ._core import DEVICE, DEVICE_NAME, OutOfMemoryError, register_cuda_device

_MODULES: dict[str, types.ModuleType] = {}


def module(name: str) -> types.ModuleType:
    return _MODULES[name]


class CUDARuntimeError(RuntimeError):
    pass


CUDARuntimeError.__module__ = "cupy_backends.cuda.api.runtime"


class Device:
    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)
        if self.id != 0:
            raise CUDARuntimeError("cudaErrorInvalidDevice: invalid device ordinal")

    compute_capability = "90"
    mem_info = property(lambda self: _mem_get_info())

    def synchronize(self):
        DEVICE.counters.sync()

    def use(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __repr__(self):
        return f"<CUDA Device {self.id} ({DEVICE_NAME})>"


register_cuda_device(Device)


class Stream:
    null = None

    def __init__(self, null=False, non_blocking=False, ptds=False):
        self.ptr = 0

    def synchronize(self):
        DEVICE.counters.sync()

    def use(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


Stream.null = Stream(null=True)


class MemoryPointer:
    def __init__(self, size: int):
        self.size = size


class MemoryPool:
    def malloc(self, size: int) -> MemoryPointer:
        DEVICE.allocate(int(size))
        return MemoryPointer(int(size))

    def used_bytes(self) -> int:
        return DEVICE.used_bytes

    def total_bytes(self) -> int:
        return DEVICE.used_bytes

    def free_bytes(self) -> int:
        return 0  # no cached blocks: freed arrays return to the device at once

    def free_all_blocks(self, stream=None) -> None:
        pass

    def set_limit(self, size=None, fraction=None) -> None:
        pass

    def get_limit(self) -> int:
        return DEVICE.total_bytes


class PinnedMemoryPool:
    def free_all_blocks(self) -> None:
        pass

    def n_free_blocks(self) -> int:
        return 0


_POOL = MemoryPool()
_PINNED = PinnedMemoryPool()


def get_default_memory_pool() -> MemoryPool:
    return _POOL


def get_default_pinned_memory_pool() -> PinnedMemoryPool:
    return _PINNED


def _set_allocator(allocator=None) -> None:
    """``cupy.cuda.set_allocator``: every device allocation goes through ``allocator(nbytes)``
    (``None`` restores the default pool)."""
    DEVICE.allocator = None if allocator is None or allocator == _POOL.malloc else allocator


def _mem_get_info() -> tuple[int, int]:
    return DEVICE.total_bytes - DEVICE.used_bytes, DEVICE.total_bytes


def _device_properties(device: int) -> dict:
    return {
        "name": DEVICE_NAME.encode(),
        "totalGlobalMem": DEVICE.total_bytes,
        "major": 0,
        "minor": 0,
        "multiProcessorCount": 0,
    }


def build_modules() -> dict[str, types.ModuleType]:
    """``cupy.cuda``, ``cupy.cuda.runtime``, ``cupy.cuda.memory`` and ``cupy.cuda.device``."""
    runtime = types.ModuleType("cupy.cuda.runtime")
    runtime.getDeviceCount = lambda: 1
    runtime.getDevice = lambda: 0
    runtime.getDeviceProperties = _device_properties
    runtime.memGetInfo = _mem_get_info
    runtime.deviceSynchronize = DEVICE.counters.sync
    runtime.runtimeGetVersion = lambda: 12080
    runtime.driverGetVersion = lambda: 12080
    runtime.CUDARuntimeError = CUDARuntimeError
    memory = types.ModuleType("cupy.cuda.memory")
    memory.OutOfMemoryError = OutOfMemoryError
    memory.MemoryPool = MemoryPool
    memory.PinnedMemoryPool = PinnedMemoryPool
    cuda = types.ModuleType("cupy.cuda")
    cuda.runtime = runtime
    cuda.memory = memory
    cuda.Device = Device
    cuda.Stream = Stream
    cuda.MemoryPool = MemoryPool
    cuda.PinnedMemoryPool = PinnedMemoryPool
    cuda.OutOfMemoryError = OutOfMemoryError
    cuda.set_allocator = _set_allocator
    cuda.get_allocator = lambda: DEVICE.allocator or _POOL.malloc
    cuda.MemoryPointer = MemoryPointer
    cuda.get_current_stream = lambda device_id=-1: Stream.null
    cuda.get_device_id = lambda: 0
    cuda.is_available = lambda: True
    cuda.CUDARuntimeError = CUDARuntimeError
    _MODULES.update({"cupy.cuda": cuda, "cupy.cuda.runtime": runtime, "cupy.cuda.memory": memory})
    return dict(_MODULES)
