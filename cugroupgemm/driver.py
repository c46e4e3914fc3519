"""The CUDA driver library through ctypes, loaded once, for the few calls CuPy does not
wrap (tensor-map encoding, the thread's stream-capture mode). Nothing here runs on import.
"""

from __future__ import annotations

import ctypes
import functools

from .errors import UnsupportedDeviceError


@functools.cache
def libcuda() -> ctypes.CDLL:
    try:
        return ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        raise UnsupportedDeviceError(f"the CUDA driver (libcuda.so.1) could not be loaded: "
                                     f"{exc}") from None
