"""What the library needs to know of one GPU, read once per device and cached."""

from __future__ import annotations

import functools
from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceInfo:
    device_id: int
    name: str
    cc: tuple[int, int]  # compute capability
    sm_count: int
    smem_per_block_optin: int  # bytes of shared memory a block may opt in to
    l2_bytes: int

    @property
    def arch(self) -> int:
        """The SM number, e.g. 90 for compute capability 9.0."""
        return self.cc[0] * 10 + self.cc[1]


@functools.cache
def device_info(device_id: int) -> DeviceInfo:
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(device_id)
    name = props["name"]
    return DeviceInfo(device_id=device_id,
                      name=name.decode() if isinstance(name, bytes) else str(name),
                      cc=(int(props["major"]), int(props["minor"])),
                      sm_count=int(props["multiProcessorCount"]),
                      smem_per_block_optin=int(props["sharedMemPerBlockOptin"]),
                      l2_bytes=int(props["l2CacheSize"]))


def gpu_count() -> int:
    """How many CUDA devices this process sees (0 without a driver or GPU)."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount()
    except Exception:  # noqa: BLE001 - no driver, no runtime: no GPU
        return 0
