"""Driver work that must also succeed while this thread captures a CUDA stream.

CUDA graphs (torch.cuda.graph) and XLA command buffers are recorded by stream capture.
In the global and thread-local capture modes the driver refuses "potentially unsafe"
calls from a capturing thread, module loading among them; relaxed mode allows them.
Nothing here touches the GPU on import.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools

from . import driver

CU_STREAM_CAPTURE_MODE_RELAXED = 2  # CUstreamCaptureMode in cuda.h


@functools.cache
def _exchange_mode():
    exchange = driver.libcuda().cuThreadExchangeStreamCaptureMode
    exchange.restype = ctypes.c_int
    exchange.argtypes = [ctypes.POINTER(ctypes.c_int)]
    return exchange


@contextlib.contextmanager
def relaxed_capture_mode():
    """Run the body in relaxed capture mode on this thread, then restore its mode.

    Outside any capture this changes nothing; it costs two driver calls.
    """
    exchange = _exchange_mode()
    mode = ctypes.c_int(CU_STREAM_CAPTURE_MODE_RELAXED)
    status = exchange(ctypes.byref(mode))
    if status:
        raise RuntimeError(f"cuThreadExchangeStreamCaptureMode failed: CUresult {status}")
    try:
        yield
    finally:
        exchange(ctypes.byref(mode))  # mode now holds the previous one
