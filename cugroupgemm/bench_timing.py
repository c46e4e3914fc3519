"""The benchmark's one timer: CUDA events around calls queued behind a spin kernel.

Every contender (ours and each peer) is timed by ``time_calls`` on the same stream, the
legacy default stream that CuPy and PyTorch both use unless told otherwise. The spin
kernel holds the GPU while the host queues all the timed calls, so the events measure GPU
time only, not the host's launch cost; the median over the calls is reported.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

# NOTE: %globaltimer counts nanoseconds, so the spin needs no clock-rate calibration.
_SPIN = r"""
extern "C" __global__ void spin(unsigned long long nanoseconds) {
  unsigned long long start, now;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
  do { asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now)); } while (now - start < nanoseconds);
}
"""
MIN_SPIN_SECONDS = 0.02
HEADROOM = 2.0  # spin this many times the measured time to queue the calls


@dataclass(frozen=True)
class Timing:
    microseconds: float  # median GPU time of one call
    host_bound: bool  # the spin ended before the host had queued every call


def _spin(seconds: float):
    import cupy as cp

    cp.RawKernel(_SPIN, "spin")((1,), (1,), (cp.uint64(int(seconds * 1e9)),))


def time_calls(call, count: int, repeats: int) -> Timing:
    """Median GPU microseconds of ``call(i)``, with ``i`` cycling through ``count`` input sets.

    One pass over the sets warms up (compile, load, first touch) and a second measures how
    long queueing takes, so the spin can cover ``repeats`` calls with room to spare.
    """
    import cupy as cp

    for i in range(count):
        call(i)
    cp.cuda.runtime.deviceSynchronize()
    start = time.perf_counter()
    for i in range(count):
        call(i)
    cp.cuda.runtime.deviceSynchronize()
    per_call = (time.perf_counter() - start) / count  # host and GPU time, an upper bound
    events = [cp.cuda.Event() for _ in range(repeats + 1)]
    _spin(max(MIN_SPIN_SECONDS, HEADROOM * per_call * repeats))
    events[0].record()
    for i in range(repeats):
        call(i % count)
        events[i + 1].record()
    host_bound = events[0].done  # the GPU reached the calls before all were queued
    events[-1].synchronize()
    times = [cp.cuda.get_elapsed_time(events[i], events[i + 1]) * 1e3 for i in range(repeats)]
    return Timing(statistics.median(times), host_bound)


def copy_bandwidth_gbps(nbytes: int = 1 << 30, repeats: int = 20) -> float:
    """Device-to-device copy bandwidth, counting bytes read plus bytes written."""
    import cupy as cp

    source = cp.ones(nbytes, dtype=cp.uint8)
    target = cp.empty_like(source)
    timing = time_calls(lambda _: target.__setitem__(Ellipsis, source), 1, repeats)
    return 2 * nbytes / timing.microseconds / 1e3


ROTATION_BYTES = 256 << 20  # input sets rotate until this many bytes separate reuses
MAX_SETS = 8


def rotation_sets(bytes_per_set: int) -> int:
    """How many input sets to cycle through so no call finds its inputs in L2 (H100: 50 MB)."""
    return max(1, min(MAX_SETS, -(-ROTATION_BYTES // max(1, bytes_per_set))))
