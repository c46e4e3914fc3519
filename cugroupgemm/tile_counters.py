"""Tile counters for kernels that hand out tiles at run time (sm90 ``dynamic``).

A counter is one u64 of device memory that is zero when a launch starts; the launch
leaves it at zero (kernels_cu/common/tickets.cuh). Launches that run one after another
may therefore share a counter, launches that may overlap may not:

- an eager launch takes its stream's counter (a stream runs its launches in order; the
  per-thread default stream, handle 2, is one stream per thread);
- a launch recorded into a CUDA graph or an XLA command buffer takes a counter of its
  own, since the graph may later be replayed on any stream (a graph's launches never
  overlap each other). Such a counter lives as long as the process: 8 bytes per
  recorded launch.

Counters are carved from slabs of device memory allocated and zeroed once (in relaxed
capture mode, on a private stream, so this also works while the caller's stream is
being captured) and never freed.
NOTE: a stream destroyed while its launches still run, whose handle CUDA then gives to
a new stream, would share their counter (so would a thread's per-thread default stream
with a finished thread's whose identifier Python reuses, while that thread's launches
run); and a graph instantiated twice, its two instances replayed at the same time,
shares its launches' counters. None of these is detected.
"""

from __future__ import annotations

import threading

COUNTER_BYTES = 8
SLAB_COUNTERS = 4096

PER_THREAD_STREAM = 2  # cudaStreamPerThread
_per_stream: dict[tuple, int] = {}  # (device, stream handle[, thread]) -> address
_slabs: dict[int, tuple[int, int]] = {}  # device -> (next free address, end of its slab)
_lock = threading.Lock()


def counter_for(device_id: int, stream: int) -> int:
    """The device address of a zeroed counter for a launch on ``stream`` (a default
    stream handle: ``device_id``'s, which must be current)."""
    import cupy

    if cupy.cuda.runtime.streamIsCapturing(stream):
        with _lock:
            return _new_counter(device_id)
    key = ((device_id, stream, threading.get_ident()) if stream == PER_THREAD_STREAM
           else (device_id, stream))
    address = _per_stream.get(key)
    if address is None:
        with _lock:
            address = _per_stream.get(key)
            if address is None:
                address = _per_stream[key] = _new_counter(device_id)
    return address


def _new_counter(device_id: int) -> int:
    """The next counter of the device's slab (a new slab when it is used up); under
    _lock."""
    address, end = _slabs.get(device_id, (0, 0))
    if address == end:
        address, end = _zeroed_slab(device_id)
    _slabs[device_id] = (address + COUNTER_BYTES, end)
    return address


def _zeroed_slab(device_id: int) -> tuple[int, int]:
    import cupy
    from cupy.cuda import runtime

    from .capture import relaxed_capture_mode

    nbytes = SLAB_COUNTERS * COUNTER_BYTES
    with cupy.cuda.Device(device_id), relaxed_capture_mode():
        address = runtime.malloc(nbytes)
        try:
            stream = runtime.streamCreateWithFlags(runtime.streamNonBlocking)
            try:
                runtime.memsetAsync(address, 0, nbytes, stream)
                runtime.streamSynchronize(stream)
            finally:
                runtime.streamDestroy(stream)
        except BaseException:
            runtime.free(address)
            raise
    return address, address + nbytes
