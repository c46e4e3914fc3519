"""``python -m cugroupgemm bench``: GPU time of the GEMM against ceilings measured in the same run.

Each figure is a median of CUDA-event-timed calls, queued behind a spin kernel so the
host's launch cost stays out of the numbers, with inputs rotated so b is not served from
L2. Bytes are those that must move (b of non-empty groups, valid a rows, scales, valid
output rows); FLOPs count valid rows only.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from dataclasses import asdict, dataclass

# (label, groups, max m, expected_m, n, k): the Hopper issue's shapes.
SHAPES = ([("prefill", g, 4096, em, n, k) for g, em in ((1, 1024), (2, 512), (4, 256))
           for n, k in ((4096, 7168), (7168, 2048))]
          + [("decode", 32, 1024, em, n, k) for em in (8, 32, 64, 128, 256)
             for n, k in ((4096, 7168), (7168, 2048))])
QUICK = [SHAPES[0], SHAPES[6], SHAPES[10], SHAPES[14]]
L2_ROTATION_BYTES = 256 << 20  # rotate input sets until this many bytes separate reuses


@dataclass
class Row:
    label: str
    groups: int
    m: int
    expected_m: int
    n: int
    k: int
    family: str
    microseconds: float
    tflops: float
    gbps: float
    copy_ratio: float


_SPIN = r"""
extern "C" __global__ void spin(long long cycles) {
  long long start = clock64();
  while (clock64() - start < cycles) {}
}
"""


def _spin(cycles: int):
    import cupy as cp

    cp.RawKernel(_SPIN, "spin")((1,), (1,), (cp.int64(cycles),))


def time_calls(call, count: int, repeats: int) -> float:
    """Median microseconds of ``call(i)`` (i cycles through ``count`` input sets)."""
    import cupy as cp

    for i in range(count):  # warm-up: compile, load, first touch
        call(i)
    cp.cuda.runtime.deviceSynchronize()
    events = [cp.cuda.Event() for _ in range(repeats + 1)]
    _spin(200_000_000)  # ~0.1 s of GPU time to hide the host while queueing
    events[0].record()
    for i in range(repeats):
        call(i % count)
        events[i + 1].record()
    events[-1].synchronize()
    times = [cp.cuda.get_elapsed_time(events[i], events[i + 1]) * 1e3 for i in range(repeats)]
    return statistics.median(times)


def copy_bandwidth_gbps() -> float:
    """Device-to-device copy, counting bytes read plus bytes written."""
    import cupy as cp

    source = cp.ones(1 << 30, dtype=cp.uint8)
    target = cp.empty_like(source)
    microseconds = time_calls(lambda _: target.__setitem__(Ellipsis, source), 1, 20)
    return 2 * source.nbytes / microseconds / 1e3


def bench_shape(label, groups, m, expected_m, n, k, repeats) -> Row:
    import cupy as cp
    import numpy as np

    from . import batch_deepgemm_fp8_nt_groupwise
    from .device import device_info
    from .dispatch import choose_family
    from .testing import make_gemm_inputs

    rng = np.random.default_rng(0)
    masked = np.clip(np.round(expected_m * rng.uniform(0.7, 1.3, groups)), 0, m).astype(np.int32)
    active = int((masked > 0).sum())
    must_move = (active * n * k + int(masked.sum()) * k + int(masked.sum()) * (k // 128) * 4
                 + active * math.ceil(n / 128) * (k // 128) * 4 + int(masked.sum()) * n * 2)
    sets = max(1, min(8, math.ceil(L2_ROTATION_BYTES / (groups * (m + n) * k))))
    inputs = [make_gemm_inputs(groups, m, n, k, masked, seed=s) for s in range(sets)]
    outputs = [cp.empty((groups, m, n), dtype=cp.float16) for _ in range(sets)]

    def call(i):
        batch_deepgemm_fp8_nt_groupwise(**inputs[i], expected_m=expected_m, out=outputs[i])

    microseconds = time_calls(call, sets, repeats)
    flops = 2 * int(masked.sum()) * n * k
    family = choose_family(device_info(cp.cuda.Device().id)).name
    return Row(label, groups, m, expected_m, n, k, family, microseconds,
               flops / microseconds / 1e6, must_move / microseconds / 1e3, 0.0)


def run_benchmark(quick: bool = False, json_path: str | None = None) -> int:
    from .device import device_info, gpu_count

    if gpu_count() == 0:
        print("bench needs a GPU; none is visible", file=sys.stderr)
        return 2
    import cupy as cp

    info = device_info(cp.cuda.Device().id)
    copy = copy_bandwidth_gbps()
    print(f"{info.name}, {info.sm_count} SMs; copy ceiling {copy:.0f} GB/s (read + write)")
    print(f"{'shape':8s} {'G':>3s} {'m':>5s} {'em':>5s} {'n':>5s} {'k':>5s} {'family':9s} "
          f"{'us':>8s} {'TFLOP/s':>8s} {'GB/s':>7s} {'bw/copy':>7s}")
    rows = []
    shapes = QUICK if quick else SHAPES
    for index, shape in enumerate(shapes, 1):
        row = bench_shape(*shape, repeats=20 if quick else 50)
        row.copy_ratio = row.gbps / copy
        rows.append(row)
        print(f"{row.label:8s} {row.groups:3d} {row.m:5d} {row.expected_m:5d} {row.n:5d} "
              f"{row.k:5d} {row.family:9s} {row.microseconds:8.1f} {row.tflops:8.1f} "
              f"{row.gbps:7.0f} {row.copy_ratio:7.2f}   [{index}/{len(shapes)}]", flush=True)
    if json_path:
        with open(json_path, "w") as handle:
            json.dump({"device": info.name, "copy_gbps": copy,
                       "rows": [asdict(r) for r in rows]}, handle, indent=1)
    return 0
