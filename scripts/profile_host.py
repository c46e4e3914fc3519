"""Where the host time of a warm eager call goes: cProfile over many calls of a tiny
problem (a few microseconds of GPU work), torch tensors or CuPy arrays with ``out=``, on a
GPU.

    python scripts/profile_host.py [--calls N] [--framework torch|cupy] [--steps]

Prints the wall time per call, then the functions by own time and by cumulative time.
``--steps`` times each step of a warm call on its own instead (no profiler, whose cost
per function call distorts these microsecond steps), beside a trivial eager torch
operation on the same host: hosts differ by 2x, so the ratio is what compares.
"""

import argparse
import cProfile
import pstats
import time

from cugroupgemm import batch_deepgemm_fp8_nt_groupwise as gemm
from cugroupgemm import dispatch, env, frameworks, warm_calls
from cugroupgemm.device import device_info
from cugroupgemm.bench_peers import torch_gemm_inputs
from cugroupgemm.testing import make_gemm_inputs


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--framework", choices=("torch", "cupy"), default="torch")
    parser.add_argument("--steps", action="store_true",
                        help="time each step of a warm call instead of profiling")
    args = parser.parse_args()
    import cupy

    inputs = make_gemm_inputs(4, 64, 256, 512, [32] * 4, seed=0)
    if args.framework == "torch":
        import torch

        arrays = torch_gemm_inputs(inputs)
        out = torch.empty((4, 64, 256), dtype=torch.bfloat16, device="cuda")
    else:
        arrays = dict(inputs)
        out = cupy.empty((4, 64, 256), dtype=cupy.float32)

    def calls(n):
        for _ in range(n):
            gemm(**arrays, expected_m=32, out=out)
        cupy.cuda.runtime.deviceSynchronize()

    calls(50)
    if args.steps:
        time_steps(arrays, out, args.framework, min(args.calls, 500))
        return
    start, cpu_start = time.perf_counter(), time.process_time()
    calls(args.calls)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    print(f"{args.framework}: {wall / args.calls * 1e6:.1f} us per call (wall), "
          f"{cpu / args.calls * 1e6:.1f} us of CPU time, no profiler")
    profiler = cProfile.Profile()
    profiler.enable()
    calls(args.calls)
    profiler.disable()
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(30)


def time_steps(arrays, out, framework, calls):
    """Microseconds per repetition of each step of a warm call (the median of five runs
    of ``calls`` repetitions; few enough that the launch queue never fills)."""
    import cupy

    arrays["masked_m"][:] = 0  # every tile skipped: the GPU never holds the host back

    ordered = (arrays["a"], arrays["b"], arrays["a_scale"], arrays["b_scale"],
               arrays["masked_m"], out)
    key = warm_calls.key_of(ordered, 32, (1, 128, 128), None)
    entry = warm_calls._entries[key]
    stream = frameworks.current_stream(framework, 0)
    steps = {
        "whole warm call": lambda: gemm(**arrays, expected_m=32, out=out),
        "environment reads (2)": lambda: (env.check_masked_m(), env.print_config()),
        "key_of": lambda: warm_calls.key_of(ordered, 32, (1, 128, 128), None),
        "  reading the six arrays": lambda: warm_calls._READERS[framework](ordered),
        "  choose_family": lambda: dispatch.choose_family(device_info(0)),
        "lookup of the key": lambda: warm_calls._entries.get(key),
        "current_stream": lambda: frameworks.current_stream(framework, 0),
        "launch (KernelLaunch.run)": lambda: entry.launch.run(stream),
        "  cudaGetDevice": cupy.cuda.runtime.getDevice,
        "  cudaStreamIsCapturing": lambda: cupy.cuda.runtime.streamIsCapturing(stream),
        "  cuLaunchKernel alone": bare_launch(entry.launch, stream),
    }
    if framework == "torch":
        import torch

        x = torch.zeros(1, device="cuda")
        steps["reference: torch.neg(x, out=x), one element"] = lambda: torch.neg(x, out=x)
    for name, step in steps.items():
        runs = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(calls):
                step()
            runs.append((time.perf_counter() - start) / calls * 1e6)
            cupy.cuda.runtime.deviceSynchronize()
        print(f"{name:48s} {sorted(runs)[2]:7.2f} us")


def bare_launch(launch, stream):
    """The driver's launch of ``launch``'s kernel, its argument array made once."""
    import ctypes

    import cupy

    from cugroupgemm import tile_counters

    held = [launch.arguments[0]]  # the objects whose addresses the array holds
    if launch.plan.tile_counter:
        held.append(ctypes.c_uint64(tile_counters.counter_for(launch.device_id, stream)))
    pointers = launch._pointer_array(ctypes.addressof(held[0]), *launch._fixed_addresses,
                                     *map(ctypes.addressof, held[1:]))
    plan = launch.plan

    def run(held=held):
        cupy.cuda.driver.launchKernel(launch.kernel.handle, *plan.grid, *plan.block,
                                      plan.smem_bytes, stream, ctypes.addressof(pointers), 0)

    return run


if __name__ == "__main__":
    main()
